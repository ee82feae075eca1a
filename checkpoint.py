"""
checkpoint.py: a run's files. Every run owns a folder runs/<name>/ with

    log.jsonl       one JSON object per line, append-only: config, train, eval, resume and end events
    ckpt.pt         the plain model's weights, optimizer state, step, RNG states and the resolved config
    tokenizer.json  the tokenizer the run was trained with

A folder is never reused, files are replaced atomically (write a temporary file, then rename it), and a
checkpoint from another run, a corrupt one or a missing one is one clear sentence (dataset.ConfigError).
The log is written here (log_event) and read back here (read_log), for plot_logs.py's figure and tables.
"""

import hashlib
import importlib.metadata
import json
import os
import platform
import signal
import tempfile
import threading
import time

import torch

from dataset import ConfigError


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def atomic_torch_save(obj, path):
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def checkpoint_path(path):
    """A checkpoint file, or a run folder standing for the checkpoint inside it."""
    return os.path.join(path, "ckpt.pt") if os.path.isdir(path) else path


def load_checkpoint(path, map_location="cpu"):
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - truncated zip, pickle error, not a torch file...
        raise ConfigError(f"checkpoint {path} cannot be read ({type(e).__name__}); it is corrupt or "
                          "not a nanorun checkpoint") from None
    if not isinstance(ckpt, dict) or ckpt.get("version") != 1 or "config" not in ckpt:
        raise ConfigError(f"checkpoint {path} is not a version-1 nanorun checkpoint")
    return ckpt


def check_writable(folder):
    """Fail early, with one sentence, when run folders cannot be made in `folder`."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write run folders in {folder} ({e.filename}: {e.strerror}); pass --out_dir "
                          "with a folder you can write to") from None


def rng_state():
    """torch's generators are the only randomness in a run (dropout, sampling); data order is seeded apart."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def catch_stop_signals():
    """Ctrl-C (SIGINT) and a polite kill (SIGTERM) no longer end the process: each appends its number to the
    list returned, so the run can save at its next step and then stop. Returns (that list, a function that
    puts the old handlers back). Only the main thread may set handlers: elsewhere nothing is caught."""
    caught, old = [], {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, lambda signum, _: caught.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore():
        for s, handler in old.items():
            signal.signal(s, handler)
    return caught, restore


def new_run_dir(cfg):
    """A fresh folder under out_dir; an explicit name that exists is an error, never overwritten."""
    if cfg["name"]:
        path = os.path.join(cfg["out_dir"], cfg["name"])
        if os.path.exists(path):
            raise ConfigError(f"run folder {path} already exists; pick another --name, or continue it "
                              f"with --resume {os.path.join(path, 'ckpt.pt')}")
    else:
        stem = f"{cfg['preset'] or cfg['opt']}-{cfg['n_layer']}L{cfg['d_model']}d-{time.strftime('%Y%m%d-%H%M%S')}"
        path, k = os.path.join(cfg["out_dir"], stem), 1
        while os.path.exists(path):
            k += 1
            path = os.path.join(cfg["out_dir"], f"{stem}-{k}")
    os.makedirs(path)
    return path


def log_event(f, event, **fields):
    """One line of the append-only JSON-lines log, flushed so a killed run keeps what it wrote."""
    f.write(json.dumps({"event": event, "time": round(time.time(), 3), **fields}) + "\n")
    f.flush()


def versions():
    """What a run was made with, for its log; a package that is not installed is None (train.py needs no optuna)."""
    def v(package):
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": v("numpy"),
            "optuna": v("optuna"), "platform": platform.platform(), "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


# ----------------------------------------------------------------------------------------------
# Reading a run's log back (plot_logs.py draws and tabulates what these return)

def read_log(path):
    """Read one run's log.jsonl into a dict of plain lists.

    Returns {"name", "path", "config" (the config event), "train": [(epoch, loss in nats per token)],
    "train_per_char": [(epoch, loss in nats per character)] or None, "evals": [(epoch, val_loss)],
    "eval_s": [seconds from the run's start to each evaluation, or None],
    "elapsed_s" (seconds from start to the last evaluation, or None), "end" (the end event or None)}.
    "train_per_char" is in the unit of the validation loss; logs written before train.py logged it
    have None there, and so does a log where only some train events carry it (a resumed old run).
    A resumed run logs again the steps between its last checkpoint and the moment it was killed;
    a "resume" event at step s therefore drops what was logged before it for steps after s, so
    every step appears once. A resume whose checkpoint kept no clock (older versions) restarted it:
    the times logged after it are not the run's, so they read None. A half-written last line (a run
    killed mid-write) is skipped.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    config, end, train, evals, clock_restarted = None, None, [], [], False
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue  # the run was killed while writing this line
            raise ValueError(f"{path} line {i + 1} is not JSON; is this a nanorun log.jsonl?")
        kind = event.get("event")
        if kind == "config":
            config = event
        elif kind == "train":
            train.append((event["step"], event["epoch"], event["loss"], event.get("loss_per_char")))
        elif kind == "eval":
            evals.append((event["step"], event["epoch"], event["val_loss"],
                          None if clock_restarted else event.get("elapsed_s")))
        elif kind == "resume":
            train = [t for t in train if t[0] <= event["step"]]
            evals = [e for e in evals if e[0] <= event["step"]]
            end = None
            clock_restarted = clock_restarted or event.get("elapsed_s") is None
        elif kind == "end":
            end = dict(event, time_s=None) if clock_restarted else event
    if config is None:
        raise ValueError(f"{path} has no config event; is this a nanorun log.jsonl?")
    name = config.get("name") or os.path.basename(os.path.dirname(path))
    per_char = None if any(t[3] is None for t in train) else [(epoch, lpc) for _, epoch, _, lpc in train]
    return {"name": name, "path": path, "config": config,
            "train": [(epoch, loss) for _, epoch, loss, _ in train], "train_per_char": per_char,
            "evals": [(epoch, loss) for _, epoch, loss, _ in evals], "eval_s": [e[3] for e in evals],
            "elapsed_s": evals[-1][3] if evals else None, "end": end}


def final_val_loss(run):
    """The run's final val loss: from its end event, else its last evaluation, else None."""
    if run["end"] is not None and run["end"].get("final_val_loss") is not None:
        return run["end"]["final_val_loss"]
    return run["evals"][-1][1] if run["evals"] else None


def run_time(run):
    """Seconds the run took: from its end event, else up to its last evaluation, else None (not known).
    A resumed run's clock goes on from its checkpoint, so this counts all of its processes."""
    if run["end"] is not None and run["end"].get("time_s") is not None:
        return run["end"]["time_s"]
    return run["elapsed_s"]


def finished(run):
    """Whether the run ended by reaching its last step (not interrupted, stopped or diverged)."""
    return (run["end"] or {}).get("status") == "done"


def time_to_loss(run, target):
    """Seconds from the start of the run to its first evaluation at or below `target`, or None."""
    return next((s for (_, loss), s in zip(run["evals"], run["eval_s"]) if loss <= target), None)
