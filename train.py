"""
train.py: train a GPT-2 style model on a file of titles, one per line.

Reads the titles, trains a byte-level BPE on the training split (bpe.py), builds the model (gpt.py)
and an optimizer (optim.py), then runs one visible training loop. Every run gets its own folder
under runs/ with a JSON-lines log, a checkpoint and the tokenizer. The metric is the study's: summed
cross-entropy of every validation token, in nats, divided by the characters of the validation text.

    python train.py --preset step6 --epochs 1 --num_titles 20000   # a first run, minutes on a laptop
    python train.py --opt asam --d_model 384                       # any flag overrides the defaults
    python train.py --preset step5                                 # one step of the study
    python train.py --resume runs/NAME/ckpt.pt                     # continue an interrupted run

`run(**config)` is the one entry point (tune.py imports it); `main()` only parses flags.
"""
import argparse
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict

import torch
from tqdm import tqdm

import optim
from bpe import Tokenizer
from gpt import GPT, GPTConfig, autocast, cpu_has_bf16, keep_freed_memory, maybe_compile, sample_titles

# ----------------------------------------------------------------------------------------------
# The study, one preset per step (STUDY.md). Flags given on the command line override a preset.

_BIG = dict(n_layer=6, n_head=8, d_model=512, block_size=128, batch_size=64, vocab_size=16000)
_SMALL = dict(block_size=64, batch_size=64, vocab_size=4000, weight_decay=0.01, min_lr=1e-5,
              warmup_ratio=0.1, schedule="cosine", opt="asam", wd_all=False, rho=None)
PRESETS = {
    "step0": dict(change="baseline: SGD, constant lr", study_val_loss=1.7533, flags=dict(
        _BIG, opt="sgd", dropout=0.1, lr=6e-3, weight_decay=0.0, schedule="constant",
        warmup_ratio=0.0, min_lr=0.0, wd_all=True)),
    "step1": dict(change="AdamW instead of SGD", study_val_loss=1.4893, flags=dict(
        _BIG, opt="adamw", dropout=0.1, lr=6e-3, weight_decay=0.0, schedule="constant",
        warmup_ratio=0.0, min_lr=0.0, wd_all=True)),
    "step2": dict(change="tuned lr, dropout, block size; wd 0.01", study_val_loss=1.3544, flags=dict(
        _BIG, opt="adamw", dropout=0.2012, lr=3e-4, weight_decay=0.01, schedule="constant",
        warmup_ratio=0.0, min_lr=0.0, wd_all=True)),
    "step3": dict(change="SAM (rho 0.05) + warm-up, cosine decay", study_val_loss=1.327, flags=dict(
        _BIG, opt="sam", rho=0.05, dropout=0.153, lr=5e-4, weight_decay=0.01, schedule="cosine",
        warmup_ratio=0.1, min_lr=0.0, wd_all=True)),
    "step4": dict(change="adaptive SAM (ASAM)", study_val_loss=1.311, flags=dict(
        _BIG, opt="asam", rho=None, dropout=0.153, lr=5e-4, weight_decay=0.01, schedule="cosine",
        warmup_ratio=0.1, min_lr=0.0, wd_all=True)),
    "step5": dict(change="smaller model; no wd on bias/norm/emb; lr floor", study_val_loss=1.2935,
                  flags=dict(_SMALL, n_layer=6, n_head=6, d_model=384, dropout=0.051, lr=1.1e-3)),
    "step6": dict(change="smaller still", study_val_loss=1.3206,
                  flags=dict(_SMALL, n_layer=4, n_head=3, d_model=192, dropout=0.0603, lr=2.1e-3)),
}

# On --resume these may differ from the checkpoint's config; everything else must match.
RESUME_MAY_CHANGE = {"resume", "device", "compile", "progress", "sample", "log_every", "max_steps",
                     "data", "out_dir", "name", "preset"}


class ConfigError(ValueError):
    """Bad input: the message is one sentence saying what was wrong and what to do."""


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--preset", default=None, choices=sorted(PRESETS), help="a step of the study; flags override it")
    g = p.add_argument_group("data")
    g.add_argument("--data", default="data/hn_titles.txt", help="text file, one title per line (UTF-8)")
    g.add_argument("--num_titles", type=int, default=100_000, help="first N titles: train + validation")
    g.add_argument("--val_frac", type=float, default=0.1, help="last fraction of those N is validation")
    g.add_argument("--test_titles", type=int, default=20_000, help="the next titles: held-out test set")
    g.add_argument("--vocab_size", type=int, default=4000, help="BPE vocabulary, bytes and specials included")
    g = p.add_argument_group("model")
    g.add_argument("--n_layer", type=int, default=4, help="transformer blocks")
    g.add_argument("--n_head", type=int, default=3, help="attention heads per block")
    g.add_argument("--d_model", type=int, default=192, help="embedding width")
    g.add_argument("--block_size", type=int, default=64, help="context length in tokens")
    g.add_argument("--dropout", type=float, default=0.0603, help="dropout probability")
    g = p.add_argument_group("optimization")
    g.add_argument("--opt", default="asam", choices=["sgd", "adamw", "sam", "asam", "muon"], help="optimizer")
    g.add_argument("--lr", type=float, default=2.1e-3, help="peak learning rate")
    g.add_argument("--weight_decay", type=float, default=0.01, help="decoupled weight decay")
    g.add_argument("--wd_all", default=False, action=argparse.BooleanOptionalAction,
                   help="decay biases, norms and embeddings too (study steps 0-4)")
    g.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (Muon has its own)")
    g.add_argument("--rho", type=float, default=None, help="SAM/ASAM radius; None: the optimizer's default")
    g.add_argument("--grad_clip", type=float, default=1.0, help="clip the gradient norm; 0 turns it off")
    g.add_argument("--schedule", default="cosine", choices=["constant", "cosine", "linear", "wsd"],
                   help="learning-rate schedule after warm-up")
    g.add_argument("--warmup_ratio", type=float, default=0.1, help="fraction of steps of linear warm-up")
    g.add_argument("--min_lr", type=float, default=1e-5, help="floor the schedule decays to")
    g.add_argument("--batch_size", type=int, default=64, help="sequences per step")
    g.add_argument("--epochs", type=int, default=7, help="passes over the training tokens")
    g.add_argument("--max_steps", type=int, default=0, help="stop after this many steps (0: all); the "
                   "schedule still spans every epoch")
    g = p.add_argument_group("run")
    g.add_argument("--evals_per_epoch", type=int, default=3, help="validations per epoch (plus step 0)")
    g.add_argument("--log_every", type=int, default=20, help="log the training loss every N steps")
    g.add_argument("--seed", type=int, default=1337, help="seed for init, data order and dropout")
    g.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"],
                   help="auto: CUDA, then MPS, then CPU")
    g.add_argument("--compile", default=None, action=argparse.BooleanOptionalAction,
                   help="torch.compile the model (default: on CUDA, and on CPU with a C++ compiler)")
    g.add_argument("--amp", default=None, action=argparse.BooleanOptionalAction,
                   help="bf16 autocast (default: on CUDA and on CPUs with AVX-512 BF16 or AMX)")
    g.add_argument("--out_dir", default="runs", help="folder that holds one folder per run")
    g.add_argument("--name", default=None, help="run name (default: from preset/optimizer, shape, time)")
    g.add_argument("--resume", default=None, help="checkpoint to continue from")
    g.add_argument("--sample", type=int, default=5, help="titles to generate at the end")
    g.add_argument("--progress", default=True, action=argparse.BooleanOptionalAction,
                   help="a progress bar per epoch")
    return p


def defaults():
    return vars(build_parser().parse_args([]))


def resolve_config(explicit, saved=None):
    """Defaults, then the preset, then the keys given; a resumed run starts from its checkpoint's config
    (`saved`), and only the keys in RESUME_MAY_CHANGE may differ from it."""
    known = defaults()
    unknown = sorted(set(explicit) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown}; see `python train.py --help`")
    cfg = dict(known)
    preset = explicit.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        cfg.update(PRESETS[preset]["flags"])
    cfg.update(explicit)
    if saved is not None:
        clash = {k: (saved.get(k), v) for k, v in explicit.items()
                 if k not in RESUME_MAY_CHANGE and saved.get(k) != v}
        if clash:
            k, (was, now) = next(iter(clash.items()))
            raise ConfigError(f"checkpoint {cfg['resume']} was trained with {k}={was!r}, not {now!r}; "
                              f"drop --{k} to resume it, or start a new run")
        cfg = dict(saved, **{k: v for k, v in explicit.items() if k in RESUME_MAY_CHANGE})
    check_config(cfg)
    return cfg


def check_config(c):
    """Every impossible setting, found before any expensive work starts."""
    def need(ok, msg):
        if not ok:
            raise ConfigError(msg)
    for k in ("n_layer", "n_head", "d_model", "block_size", "batch_size", "epochs", "evals_per_epoch",
              "num_titles", "log_every"):
        need(isinstance(c[k], int) and c[k] >= 1, f"--{k} must be a positive whole number, got {c[k]!r}")
    need(c["d_model"] % c["n_head"] == 0,
         f"--d_model {c['d_model']} is not divisible by --n_head {c['n_head']}; pick sizes that divide")
    need(c["vocab_size"] >= 257, f"--vocab_size {c['vocab_size']} is too small: 256 bytes and <eos> need 257")
    need(0 < c["val_frac"] < 1, f"--val_frac must be between 0 and 1, got {c['val_frac']}")
    need(0 <= c["dropout"] < 1, f"--dropout must be in [0, 1), got {c['dropout']}")
    need(c["lr"] > 0 and math.isfinite(c["lr"]), f"--lr must be a positive number, got {c['lr']}")
    need(0 <= c["min_lr"] <= c["lr"], f"--min_lr {c['min_lr']} must be between 0 and --lr {c['lr']}")
    need(c["weight_decay"] >= 0, f"--weight_decay must be >= 0, got {c['weight_decay']}")
    need(0 <= c["warmup_ratio"] < 1, f"--warmup_ratio must be in [0, 1), got {c['warmup_ratio']}")
    need(c["rho"] is None or c["rho"] > 0, f"--rho must be positive, got {c['rho']}")
    need(c["test_titles"] >= 0 and c["max_steps"] >= 0 and c["grad_clip"] >= 0,
         "--test_titles, --max_steps and --grad_clip must not be negative")
    for k, choices in (("opt", ["sgd", "adamw", "sam", "asam", "muon"]),
                       ("schedule", ["constant", "cosine", "linear", "wsd"]),
                       ("device", ["auto", "cuda", "mps", "cpu"])):
        need(c[k] in choices, f"unknown --{k} {c[k]!r}; choose one of {choices}")


# ----------------------------------------------------------------------------------------------
# Data: titles -> train/val/test split -> token streams

def read_titles(path, limit=None):
    """Non-blank lines of a UTF-8 file, each stripped; reads only the first `limit` titles."""
    if not os.path.isfile(path):
        hint = " run `make data` to download the study's corpus, or" if path == "data/hn_titles.txt" else ""
        raise ConfigError(f"data file {path} not found:{hint} pass --data FILE with one title per line")
    titles = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                raise ConfigError(f"{path} line {lineno} is not UTF-8 ({e.reason} at byte {e.start}); "
                                  "re-save the file as UTF-8") from None
            if line:
                titles.append(line)
                if limit is not None and len(titles) >= limit:
                    break
    if not titles:
        raise ConfigError(f"data file {path} has no titles: it is empty or blank")
    return titles


def split_titles(titles, num_titles, val_frac, test_titles):
    """First num_titles: train then validation, in file order; the next test_titles are the test set.

    split_titles(list("abcdefghijkl"), 10, 0.2, 5) -> (list("abcdefgh"), ["i", "j"], ["k", "l"])
    """
    if len(titles) < num_titles:
        raise ConfigError(f"the data has {len(titles):,} titles but --num_titles {num_titles:,} were asked; "
                          f"pass --num_titles {len(titles):,} or fewer")
    n_val = max(1, round(num_titles * val_frac))
    if n_val >= num_titles:
        raise ConfigError(f"--num_titles {num_titles} leaves no training titles after the validation split")
    n_train = num_titles - n_val
    return titles[:n_train], titles[n_train:num_titles], titles[num_titles:num_titles + test_titles]


def text_chars(titles):
    """Characters of "<eos>".join(titles) + "<eos>", the metric's denominator (<eos> counts as 5).

    text_chars(["ab", "c"]) -> 13
    """
    return sum(len(t) for t in titles) + 5 * len(titles)


def titles_sha256(titles):
    """The data's fingerprint, kept in the log and the checkpoint: resume and evaluate check it."""
    return hashlib.sha256("\n".join(titles).encode()).hexdigest()


def title_stream(tokenizer, titles):
    """[<eos>] + each title's ids followed by <eos>: every title token has an <eos>-led context."""
    return torch.tensor([tokenizer.eos_id] + tokenizer.encode_titles(titles), dtype=torch.long)


def get_tokenizer(train_titles, vocab_size, cache_dir):
    """Train a BPE on the training titles, or load it from a cache keyed by (titles, vocab size)."""
    h = hashlib.sha256(f"bpe v1 vocab={vocab_size}\n".encode())
    for t in train_titles:
        h.update(t.encode() + b"\n")
    path = os.path.join(cache_dir, f"bpe-{vocab_size}-{h.hexdigest()[:16]}.json")
    if os.path.exists(path):
        return Tokenizer.load(path), path
    tok = Tokenizer.train(train_titles, vocab_size)
    os.makedirs(cache_dir, exist_ok=True)
    tok.save(path)
    return tok, path


def epoch_order(n_windows, seed, epoch):
    """A shuffled order of the training windows that depends only on (seed, epoch): exact resume."""
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    return torch.randperm(n_windows, generator=g)


def get_batch(stream, order, i, batch_size, block_size):
    """Batch i of an epoch: non-overlapping windows; y is x shifted by one token."""
    starts = order[i * batch_size:(i + 1) * batch_size] * block_size         # (B,)
    idx = starts[:, None] + torch.arange(block_size + 1)                      # (B, T+1)
    w = stream[idx]                                                           # (B, T+1)
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()                      # (B, T), (B, T)


# ----------------------------------------------------------------------------------------------
# Evaluation: every token of a stream scored exactly once

@torch.no_grad()
def stream_nats(model, stream, block_size, batch_size, device, amp=False):
    """Summed cross-entropy (nats) of stream[1:] given what precedes each token within its window.

    Windows of block_size targets tile the stream; the last one is padded with target -1 (not
    scored) and the last batch with all-padding rows, so every batch has one shape (no recompiles).
    """
    was_training = model.training
    model.eval()
    n_pred = len(stream) - 1
    n_win = math.ceil(n_pred / block_size)
    n_batches = math.ceil(n_win / batch_size)
    x = torch.zeros(n_batches * batch_size * block_size, dtype=torch.long)
    y = torch.full_like(x, -1)
    x[:n_pred], y[:n_pred] = stream[:-1], stream[1:]
    x, y = x.view(-1, batch_size, block_size), y.view(-1, batch_size, block_size)  # (nb, B, T)
    total = 0.0
    for xb, yb in zip(x, y):
        with autocast(device, amp):
            _, loss = model(xb.to(device), yb.to(device))
        total += loss.float().item() * (yb != -1).sum().item()                # mean -> sum
    model.train(was_training)
    return total


# ----------------------------------------------------------------------------------------------
# Device

def pick_device(name):
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device cuda was asked but this torch {torch.__version__} sees no CUDA GPU; "
                          "use --device auto or cpu")
    if name == "mps" and not has_mps:
        raise ConfigError("--device mps was asked but MPS is not available here; use --device auto or cpu")
    return name


# ----------------------------------------------------------------------------------------------
# Checkpoints and logs

def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def atomic_torch_save(obj, path):
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


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


# ----------------------------------------------------------------------------------------------
# Training

def run(callback=None, **config):
    """Train one model; return its result. callback(step, val_loss) after each eval may raise to stop."""
    resume = load_checkpoint(config["resume"]) if config.get("resume") else None
    cfg = resolve_config(config, resume["config"] if resume else None)
    device = pick_device(cfg["device"])
    amp = cfg["amp"] if cfg["amp"] is not None else (device == "cuda" and torch.cuda.is_bf16_supported()
                                                      or device == "cpu" and cpu_has_bf16())

    # ---- data and tokenizer
    need = cfg["num_titles"] + cfg["test_titles"]
    titles = read_titles(cfg["data"], limit=need)
    train_titles, val_titles, test_titles = split_titles(titles, cfg["num_titles"], cfg["val_frac"],
                                                         cfg["test_titles"])
    data_sha = titles_sha256(train_titles + val_titles)
    if resume and resume["data_sha256"] != data_sha:
        raise ConfigError(f"--data {cfg['data']} does not hold the titles checkpoint {cfg['resume']} "
                          "was trained on; pass the same file")
    tok, tok_path = get_tokenizer(train_titles, cfg["vocab_size"], os.path.join(cfg["out_dir"], ".tokenizers"))
    train_stream, val_stream = title_stream(tok, train_titles), title_stream(tok, val_titles)
    T, B = cfg["block_size"], cfg["batch_size"]
    n_windows = (len(train_stream) - 1) // T
    steps_per_epoch = n_windows // B
    if steps_per_epoch == 0:
        raise ConfigError(f"the training split gives {n_windows} windows of {T} tokens, fewer than one "
                          f"batch of {B}; use more titles or a smaller --batch_size or --block_size")
    total_steps = steps_per_epoch * cfg["epochs"]
    last_step = min(total_steps, cfg["max_steps"] or total_steps)
    n_evals = cfg["epochs"] * cfg["evals_per_epoch"]
    eval_steps = {0} | {round(total_steps * j / n_evals) for j in range(1, n_evals + 1)} | {last_step}
    val_chars = text_chars(val_titles)

    # ---- run folder and log
    run_dir = os.path.dirname(os.path.abspath(cfg["resume"])) if resume else new_run_dir(cfg)
    ckpt_path, log_path = os.path.join(run_dir, "ckpt.pt"), os.path.join(run_dir, "log.jsonl")
    run_tok = os.path.join(run_dir, "tokenizer.json")
    if not resume:
        shutil.copyfile(tok_path, run_tok)
    tok_sha = file_sha256(run_tok)
    if resume and resume["tokenizer_sha256"] != tok_sha:
        raise ConfigError(f"{run_tok} is not the tokenizer checkpoint {cfg['resume']} was trained with")

    # ---- model and optimizer
    torch.manual_seed(cfg["seed"])  # also seeds CUDA and MPS
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    memory_kept = device == "cpu" and keep_freed_memory()
    mconf = GPTConfig(vocab_size=tok.vocab_size, block_size=T, n_layer=cfg["n_layer"], n_head=cfg["n_head"],
                      d_model=cfg["d_model"], dropout=cfg["dropout"])
    raw_model = GPT(mconf).to(device)
    opt = optim.build_optimizer(cfg["opt"], raw_model, lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                                momentum=cfg["momentum"], decay_all=cfg["wd_all"],
                                rho=cfg["rho"] if cfg["opt"] in ("sam", "asam") else None)
    sharpness_aware = cfg["opt"] in ("sam", "asam")
    step, best, val = 0, math.inf, math.nan
    if resume:
        raw_model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        step, best, val = resume["step"], resume["best_val_loss"], resume["val_loss"]
    model, compiled = maybe_compile(raw_model, cfg["compile"], device, B, T, amp)
    if resume:
        set_rng_state(resume["rng"])  # after compile's warm-up, which leaves the RNG alone anyway

    log_file = open(log_path, "a", encoding="utf-8")
    log = functools.partial(log_event, log_file)
    choices = dict(device=device, amp=amp, compiled=compiled, freed_memory_kept=memory_kept, versions=versions())
    if resume:  # the settings a resumed run may change, and the choices made for this process
        log("resume", step=step, config={k: cfg[k] for k in sorted(RESUME_MAY_CHANGE)}, **choices)
    else:
        log("config", name=os.path.basename(run_dir), config=cfg, **choices, n_params=raw_model.num_params(),
            steps_per_epoch=steps_per_epoch, total_steps=total_steps,
            data={"path": cfg["data"], "sha256": data_sha, "n_train": len(train_titles), "n_val": len(val_titles),
                  "n_test": len(test_titles), "train_tokens": len(train_stream), "val_tokens": len(val_stream),
                  "val_chars": val_chars})
    print(f"run {run_dir}: {raw_model.num_params():,} parameters on {device}"
          f"{' bf16' if amp else ''}{' compiled' if compiled else ''}; {len(train_stream):,} train tokens, "
          f"{steps_per_epoch} steps/epoch x {cfg['epochs']} epochs")

    def save(val_loss):
        atomic_torch_save({"version": 1, "model": raw_model.state_dict(), "model_config": asdict(mconf),
                           "config": cfg, "optimizer": opt.state_dict(), "step": step, "rng": rng_state(),
                           "tokenizer": "tokenizer.json", "tokenizer_sha256": tok_sha, "data_sha256": data_sha,
                           "best_val_loss": best, "val_loss": val_loss}, ckpt_path)

    def evaluate():
        nonlocal best
        val = stream_nats(model, val_stream, T, B, device, amp=False) / val_chars  # fp32 metric
        best = min(best, val)
        log("eval", step=step, epoch=step / steps_per_epoch, val_loss=val)
        return val

    # Ctrl-C sets a flag; the loop saves at the next step boundary (never mid SAM step) and stops.
    stop = {"sigint": False}
    old_handler = None
    if threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGINT, lambda *_: stop.update(sigint=True))

    status, t_start, tokens_per_s = "done", time.time(), 0.0
    train_time, bar, order = 0.0, None, None
    try:
        if step == 0:
            val = evaluate()
            tqdm.write(f"step 0: val loss {val:.4f}")
            if callback:
                status = "stopped"
                callback(0, val)
                status = "done"
        while step < last_step:
            epoch, i = divmod(step, steps_per_epoch)
            if order is None or i == 0:
                order = epoch_order(n_windows, cfg["seed"], epoch)
                if bar is not None:
                    bar.close()
                bar = tqdm(total=steps_per_epoch, initial=i, desc=f"epoch {epoch + 1}/{cfg['epochs']}",
                           disable=not cfg["progress"], leave=False)
            x, y = get_batch(train_stream, order, i, B, T)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            t0 = time.time()

            # the step, in a fixed order: lr, forward, backward, clip, optimizer step, zero grads
            lr = optim.lr_at(step, total_steps, cfg["lr"], cfg["schedule"],
                             round(cfg["warmup_ratio"] * total_steps), cfg["min_lr"])
            for group in opt.param_groups:
                group["lr"] = lr
            with autocast(device, amp):
                _, loss = model(x, y)
            loss.backward()
            if sharpness_aware:  # climb to w + e(w), take the gradient there, step from w
                opt.first_step(zero_grad=True)
                with autocast(device, amp):
                    _, loss_at_e = model(x, y)
                loss_at_e.backward()
            if cfg["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg["grad_clip"])
            if sharpness_aware:
                opt.second_step()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)

            lossf = loss.item()
            if not math.isfinite(lossf):
                raise Diverged(f"training loss became {lossf} at step {step} (lr {lr:.3g}); lower --lr "
                               "or turn on --grad_clip")
            step += 1
            train_time += time.time() - t0
            tokens_per_s = (step - (resume["step"] if resume else 0)) * B * T / train_time
            bar.update(1)
            bar.set_postfix(loss=f"{lossf:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}")
            if step % cfg["log_every"] == 0:
                log("train", step=step, epoch=step / steps_per_epoch, loss=lossf, lr=lr, tokens_per_s=tokens_per_s)
            if step in eval_steps:
                val = evaluate()
                save(val)
                tqdm.write(f"step {step} (epoch {step / steps_per_epoch:.2f}): val loss {val:.4f}, "
                           f"{tokens_per_s:,.0f} tokens/s")
                if callback:  # it may raise (a pruned trial): the checkpoint above is already saved
                    status = "stopped"
                    callback(step, val)
                    status = "done"
            if stop["sigint"]:
                save(val)
                status = "interrupted"
                print(f"\ninterrupted: saved step {step}; continue with --resume {ckpt_path}")
                break
    except Diverged:
        status = "diverged"
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: the last checkpoint stays as it was
        status = "interrupted"
        raise
    except BaseException:  # a callback's exception keeps status "stopped"; anything else is a crash
        status = status if status == "stopped" else "failed"
        raise
    finally:
        if bar is not None:
            bar.close()
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
        log("end", status=status, final_val_loss=val, best_val_loss=best, steps=step,
            tokens_per_s=tokens_per_s, time_s=time.time() - t_start)
        log_file.close()

    if cfg["sample"] and status == "done":
        print("samples:")
        for title in sample_titles(raw_model, tok, cfg["sample"], device):
            print("  " + title)
    return {"status": status, "final_val_loss": val, "best_val_loss": best, "steps": step,
            "tokens_per_s": tokens_per_s, "time_s": time.time() - t_start, "n_params": raw_model.num_params(),
            "run_dir": run_dir, "log": log_path, "ckpt": ckpt_path}


# ----------------------------------------------------------------------------------------------

_UNSET = object()


def main(argv=None):
    parser = build_parser()
    # Pre-filling the namespace with a sentinel tells which flags were typed: argparse only sets
    # defaults for attributes that are missing. Only typed flags override a preset or a checkpoint.
    ns = argparse.Namespace(**{a.dest: _UNSET for a in parser._actions if a.dest != "help"})
    explicit = {k: v for k, v in vars(parser.parse_args(argv, ns)).items() if v is not _UNSET}
    try:
        result = run(**explicit)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    except Diverged as e:
        sys.exit(f"diverged: {e}")
    if result["status"] == "done":
        print(f"final val loss {result['final_val_loss']:.4f} nats/char (best {result['best_val_loss']:.4f}), "
              f"{result['steps']} steps, {result['tokens_per_s']:,.0f} tokens/s, {result['time_s']:.0f} s; "
              f"run folder {result['run_dir']}")


if __name__ == "__main__":
    main()
