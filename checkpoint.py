"""
checkpoint.py: a run's files, off the reading path. Every run owns a folder runs/<name>/ with

    log.jsonl       one JSON object per line, append-only: config, train, eval, resume and end events
    ckpt.pt         the plain model's weights, optimizer state, step, RNG states and the resolved config
    tokenizer.json  the tokenizer the run was trained with

A folder is never reused and files are replaced atomically (common.atomic_file); a missing, corrupt or foreign
checkpoint is one clear sentence (ConfigError). train.py writes through RunFiles; plot_logs.py reads the logs.
"""

import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import asdict

import torch
import torch.distributed as dist

import optim
import speed
from common import ConfigError, atomic_file

VERSION = 1

# ----------------------------------------------------------------------------------------------
# the run folder and its log


def new_run_dir(cfg):
    """A fresh folder under out_dir; an explicit name that exists is an error, never overwritten."""
    if cfg["name"]:
        path = os.path.join(cfg["out_dir"], cfg["name"])
        if os.path.exists(path):
            raise ConfigError(f"run folder {path} already exists; pick another --name, or continue it "
                              f"with --resume {path}")
    else:
        stem = f"{cfg['preset'] or cfg['opt']}-{cfg['n_layer']}L{cfg['d_model']}d-{time.strftime('%Y%m%d-%H%M%S')}"
        path, k = os.path.join(cfg["out_dir"], stem), 1
        while os.path.exists(path):
            k += 1
            path = os.path.join(cfg["out_dir"], f"{stem}-{k}")
    os.makedirs(path)
    return path


def check_writable(folder):
    """Fail early, with one sentence, when run folders cannot be made in `folder`."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write run folders in {folder} ({e.filename}: {e.strerror}); pass --out_dir "
                          "with a folder you can write to") from None


class RunFiles:
    """The files of one run. Only the main process of a run writes (writer=True); in the other processes of
    a data-parallel run every method does nothing, so train.py calls them without asking who it is."""

    def __init__(self, folder, writer=True):
        self.folder = folder
        self.ckpt, self.log_path, self.tokenizer = (os.path.join(folder, f) for f in
                                                    ("ckpt.pt", "log.jsonl", "tokenizer.json"))
        if writer and os.path.exists(self.log_path):
            drop_half_written_line(self.log_path)
        self._log = open(self.log_path, "a", encoding="utf-8") if writer else None

    @classmethod
    def for_run(cls, cfg, resume, writer):
        """A resumed run's own folder, or a new one (made by the writer alone)."""
        if resume:
            return cls(os.path.dirname(os.path.abspath(cfg["resume"])), writer)
        return cls(new_run_dir(cfg) if writer else "", writer)

    def log(self, event, **fields):
        """One line of the append-only JSON-lines log, flushed so a killed run keeps what it wrote."""
        if self._log:
            self._log.write(json.dumps({"event": event, "time": round(time.time(), 3), **fields}) + "\n")
            self._log.flush()

    def add_tokenizer(self, tok_path, resume):
        """A new run keeps a copy of its tokenizer; a resumed one must have the one it was trained with.
        Returns the tokenizer's fingerprint (None in a new run's other processes, which have no folder)."""
        if self._log and not resume:
            shutil.copyfile(tok_path, self.tokenizer)
        if not (self._log or resume):
            return None
        sha = file_sha256(self.tokenizer)
        if resume and resume["tokenizer_sha256"] != sha:
            raise ConfigError(f"{self.tokenizer} is not the tokenizer checkpoint {self.ckpt} was trained with")
        return sha

    def log_start(self, cfg, resume, data, plan, model, step, preset, choices, may_change, say):
        """The log's first event: the config, the preset, the data, and what was chosen for this machine. A
        resumed run logs only the settings it may change (may_change) and this process's choices."""
        if resume:
            self.log("resume", step=step, config={k: cfg[k] for k in sorted(may_change)}, **choices,
                     elapsed_s=resume.get("elapsed_s"))
            say(f"resuming {self.folder} at step {step} of {plan.total}")
        else:
            self.log("config", name=os.path.basename(self.folder), config=cfg, **choices, n_params=model.num_params(),
                     steps_per_epoch=plan.per_epoch, total_steps=plan.total,
                     preset={"name": cfg["preset"], "change": preset.get("change"),
                             "study_val_loss": preset.get("study_val_loss")},
                     data={**data.summary, "sha256": data.sha256, "val_chars": data.val_chars,
                           "tokens_per_char": data.tokens_per_char})
        device, world = choices["device"], choices["processes"]
        say(f"run {self.folder}: {model.num_params():,} parameters on {device}{' bf16' if choices['amp'] else ''}"
            f"{' compiled' if choices['compiled'] else ''}{f' x{world} processes' if world > 1 else ''}; "
            f"{data.summary['train_tokens']:,} train tokens, {plan.per_epoch} steps/epoch x {cfg['epochs']:g} epochs")

    def save(self, state):
        """Write the checkpoint: all of it or, if the process dies mid-write, the previous one."""
        if self._log:
            with atomic_file(self.ckpt) as tmp:
                torch.save(state, tmp)

    def close(self):
        if self._log:
            self._log.close()


def drop_half_written_line(path):
    """A run killed while writing its log leaves a last line without its newline: cut it off before a resumed
    run appends, so that every line of the log is a whole JSON object (the resumed run logs those steps again)."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def versions():
    """What a run was made with, for its log; a package that is not installed is None (train.py needs no optuna)."""
    def v(package):
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": v("numpy"),
            "optuna": v("optuna"), "platform": platform.platform(), "cpus": os.cpu_count(), "cpu": cpu_model(),
            "cpu_kind": cpu_kind(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def cpu_model():
    """The CPU's name, e.g. "AMD EPYC" or "Intel(R) Xeon(R) Platinum 8480C" (Linux), else what platform knows."""
    return cpu_kind().get("name") or platform.processor() or platform.machine() or None


def cpu_kind(path="/proc/cpuinfo"):
    """The CPU's name, family and model and the bf16 matrix instructions it lists, from Linux's /proc/cpuinfo
    ({} elsewhere): CPUs that share a name ("AMD EPYC") differ in kind, and in speed (NOTES.md)."""
    try:
        with open(path) as f:
            first_cpu = f.read().split("\n\n")[0]
    except OSError:
        return {}
    pairs = (line.split(":", 1) for line in first_cpu.splitlines() if ":" in line)
    info = {k.strip(): v.strip() for k, v in pairs}
    return {"name": info.get("model name"), "family": info.get("cpu family"), "model": info.get("model"),
            "bf16": [f for f in ("avx512_bf16", "amx_bf16") if f in info.get("flags", "").split()]}


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ----------------------------------------------------------------------------------------------
# the checkpoint: save, load, and the checks before a resume

def rng_state():
    """torch's generators are the only randomness in a run (dropout, sampling); data order is seeded apart."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if speed.has_mps():
        state["mps"] = torch.mps.get_rng_state()
    return state


def rng_states(world):
    """Every process's generator states, gathered (each process its own dropout masks)."""
    if world == 1:
        return [rng_state()]
    states = [None] * world
    dist.all_gather_object(states, rng_state())
    return states


def set_rng_state(states, rank=0):
    """Put back a process's generators; a resume on more processes than were saved reuses states."""
    state = states[rank % len(states)] if isinstance(states, list) else states  # older checkpoints: one state
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and speed.has_mps():
        torch.mps.set_rng_state(state["mps"])


def save_state(model, cfg, opt, step, total_steps, rngs, tok_sha, data_sha, amp, evals, elapsed_s, ema=None):
    """Everything a resume needs, and what evaluate.py checks: the plain module's weights (no compile
    prefixes), the optimizer, the step, every process's generators and the fingerprints of tokenizer and data.
    evals = (best, last val loss, its step); ema: the weight average (optim.WeightAverage), if any."""
    best, val, val_step = evals
    return {"version": VERSION, "model": model.state_dict(), "model_config": asdict(model.config), "config": cfg,
            "optimizer": opt.state_dict(), "step": step, "total_steps": total_steps, "rng": rngs,
            "tokenizer": "tokenizer.json", "tokenizer_sha256": tok_sha, "data_sha256": data_sha, "amp": amp,
            "best_val_loss": best, "val_loss": val, "val_step": val_step, "elapsed_s": elapsed_s,
            "ema": ema.state_dict() if ema else None}


def restore(ckpt, model, opt):
    """Load a checkpoint's weights and optimizer state; return (step, best, last val loss, its step)."""
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    return ckpt["step"], ckpt["best_val_loss"], ckpt["val_loss"], ckpt.get("val_step")


def checkpoint_path(path):
    """A checkpoint file, or a run folder standing for the checkpoint inside it."""
    return os.path.join(path, "ckpt.pt") if os.path.isdir(path) else path


def load_checkpoint(path, map_location="cpu"):
    path = checkpoint_path(path)
    if not os.path.isfile(path):
        raise ConfigError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - truncated zip, pickle error, not a torch file...
        raise ConfigError(f"checkpoint {path} cannot be read ({type(e).__name__}); it is corrupt or "
                          "not a nanorun checkpoint") from None
    if not isinstance(ckpt, dict) or ckpt.get("version") != VERSION or "config" not in ckpt:
        raise ConfigError(f"checkpoint {path} is not a version-1 nanorun checkpoint")
    return ckpt


# ----------------------------------------------------------------------------------------------
# checks before a run starts: its settings, a resumed run's data, a distillation teacher

def check_config(c):
    """Every impossible setting of train.py's config `c`, found before any expensive work starts (run() is
    called without argparse too: tune.py, tests, so the choices are checked here again)."""
    def need(ok, msg):
        if not ok:
            raise ConfigError(msg)
    for k in ("n_layer", "n_head", "d_model", "block_size", "batch_size", "evals_per_epoch", "num_titles", "log_every"):
        need(isinstance(c[k], int) and c[k] >= 1, f"--{k} must be a positive whole number, got {c[k]!r}")
    need(c["d_model"] % c["n_head"] == 0,
         f"--d_model {c['d_model']} is not divisible by --n_head {c['n_head']}; pick sizes that divide")
    need(c["vocab_size"] >= 257, f"--vocab_size {c['vocab_size']} is too small: 256 bytes and <eos> need 257")
    need(0 < c["val_frac"] < 1, f"--val_frac must be between 0 and 1, got {c['val_frac']}")
    need(0 <= c["dropout"] < 1, f"--dropout must be in [0, 1), got {c['dropout']}")
    for k in ("lr", "epochs"):
        need(c[k] > 0 and math.isfinite(c[k]), f"--{k} must be a positive number, got {c[k]}")
    need(0 <= c["min_lr"] <= c["lr"], f"--min_lr {c['min_lr']} must be between 0 and --lr {c['lr']}")
    need(c["weight_decay"] >= 0, f"--weight_decay must be >= 0, got {c['weight_decay']}")
    need(0 <= c["warmup_ratio"] < 1, f"--warmup_ratio must be in [0, 1), got {c['warmup_ratio']}")
    need(0 < c["decay_frac"] <= 1, f"--decay_frac must be in (0, 1], got {c['decay_frac']}")
    need(0 <= c["distill"] <= 1, f"--distill must be in [0, 1], got {c['distill']}")
    need(0 <= c["ema"] < 1, f"--ema must be in [0, 1) (0: off), got {c['ema']}")
    need(c["rho"] is None or c["rho"] > 0, f"--rho must be positive, got {c['rho']}")
    need(c["test_titles"] >= 0 and c["max_steps"] >= 0 and c["grad_clip"] >= 0,
         "--test_titles, --max_steps and --grad_clip must not be negative")
    for k, choices in (("opt", optim.OPTIMIZERS), ("schedule", optim.SCHEDULES), ("device", speed.DEVICES)):
        need(c[k] in choices, f"unknown --{k} {c[k]!r}; choose one of {', '.join(choices)}")


# On --resume these may differ from the checkpoint's config; everything else must match.
RESUME_MAY_CHANGE = {"resume", "device", "compile", "progress", "sample", "log_every", "max_steps",
                     "data", "out_dir", "name", "preset"}


def check_resume_flags(explicit, saved, resume):
    """The flags typed for a resumed run change nothing that the checkpoint `resume` (config `saved`) fixed."""
    for k, now in explicit.items():
        if k not in RESUME_MAY_CHANGE and saved.get(k) != now:
            raise ConfigError(f"checkpoint {resume} was trained with {k}={saved.get(k)!r}, not {now!r}; "
                              f"drop --{k} to resume it, or start a new run")


def check_resume_data(ckpt, cfg, n_titles, data_sha256):
    """The data file of a resumed run begins with the titles its checkpoint was trained on."""
    if n_titles < cfg["num_titles"]:
        raise ConfigError(f"checkpoint {cfg['resume']} was trained on the first {cfg['num_titles']:,} titles of "
                          f"{ckpt['config']['data']}, but --data {cfg['data']} has only {n_titles:,}; "
                          "resume with that run's data file")
    if data_sha256 != ckpt["data_sha256"]:
        raise ConfigError(f"--data {cfg['data']} does not hold the titles checkpoint {cfg['resume']} was "
                          "trained on; pass the same file")


def check_teacher(ckpt, cfg, data_sha256, tok_sha256):
    """A distillation teacher (train.py --teacher) is a finished run on this run's titles, validation split
    and tokenizer, and sees at least a whole block of context."""
    name = cfg["teacher"]
    if ckpt["data_sha256"] != data_sha256 or ckpt["config"]["val_frac"] != cfg["val_frac"]:
        raise ConfigError(f"teacher {name} was trained on other titles or another validation split than this "
                          "run; train the teacher with this run's --data, --num_titles and --val_frac")
    if ckpt["step"] < ckpt["total_steps"]:
        raise ConfigError(f"teacher {name} stopped at step {ckpt['step']} of {ckpt['total_steps']}; "
                          f"finish it first with --resume {name}")
    if ckpt["tokenizer_sha256"] != tok_sha256:
        raise ConfigError(f"teacher {name} has another tokenizer than this run; give both the same --vocab_size "
                          "and titles")
    if ckpt["model_config"]["block_size"] < cfg["block_size"]:
        raise ConfigError(f"teacher {name} reads {ckpt['model_config']['block_size']} tokens, fewer than "
                          f"--block_size {cfg['block_size']}")


# ----------------------------------------------------------------------------------------------
# stopping politely

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
