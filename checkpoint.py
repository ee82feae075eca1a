"""
checkpoint.py: a run's files. Every run owns a folder runs/<name>/ with

    log.jsonl       one JSON object per line, append-only: config, train, eval, resume and end events
    ckpt.pt         the plain model's weights, optimizer state, step, RNG states and the resolved config
    tokenizer.json  the tokenizer the run was trained with

A folder is never reused, files are replaced atomically (write a temporary file, then rename it), and a
checkpoint from another run, a corrupt one or a missing one is one clear sentence (dataset.ConfigError).
"""

import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
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
    v = importlib.metadata.version
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": v("numpy"),
            "optuna": v("optuna"), "platform": platform.platform(), "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
