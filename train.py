"""
train.py: train a GPT-2 style model on a file of titles, one per line.

Reads the titles (dataset.py), trains a byte-level BPE on the training split (bpe.py), builds the
model (gpt.py) and an optimizer (optim.py), then runs one visible training loop. Every run gets its
own folder under runs/ with a JSON-lines log, a checkpoint and the tokenizer. The metric is the
study's: summed cross-entropy of every validation token, in nats, per character of validation text.

    python train.py --preset step6 --epochs 1 --num_titles 20000   # a first run, minutes on a laptop
    python train.py --opt asam --d_model 384                       # any flag overrides the defaults
    python train.py --resume runs/NAME/ckpt.pt                     # continue an interrupted run
    torchrun --nproc_per_node 4 train.py --preset step5            # one model, 4 processes (DDP)

`run(**config)` is the one entry point (tune.py imports it); `main()` only parses flags.
"""
import argparse
import functools
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict

import torch
import torch._inductor.config
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import optim
import speed
from checkpoint import (atomic_torch_save, catch_stop_signals, check_writable, checkpoint_path, file_sha256,
                        load_checkpoint, log_event, new_run_dir, rng_state, set_rng_state, versions)
from dataset import (ConfigError, epoch_order, get_batch, get_tokenizer, read_titles, split_titles, stream_nats,
                     text_chars, title_stream, titles_sha256)
from gpt import GPT, GPTConfig, sample_titles, visible

# ----------------------------------------------------------------------------------------------
# The study, one preset per step (its Table 1). Flags given on the command line override a preset.

_BIG = dict(n_layer=6, n_head=8, d_model=512, block_size=128, batch_size=64, vocab_size=16000)
_SMALL = dict(block_size=64, batch_size=64, vocab_size=4000, weight_decay=0.01, min_lr=1e-5,
              warmup_ratio=0.1, schedule="cosine", opt="asam", wd_all=False, rho=0.05)
# what both nanorun presets change in the study's recipe (NOTES.md); each sets its own shape and dropout
_NANORUN = dict(within_title=True, rope=True, opt="muon", lr=3e-3, weight_decay=0.2, epochs=5, schedule="wsd")
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
        _BIG, opt="asam", rho=0.05, dropout=0.153, lr=5e-4, weight_decay=0.01, schedule="cosine",
        warmup_ratio=0.1, min_lr=0.0, wd_all=True)),
    "step5": dict(change="smaller model; no wd on bias/norm/emb; lr floor", study_val_loss=1.2935,
                  flags=dict(_SMALL, n_layer=6, n_head=6, d_model=384, dropout=0.051, lr=1.1e-3)),
    "step6": dict(change="smaller still", study_val_loss=1.3206,
                  flags=dict(_SMALL, n_layer=4, n_head=3, d_model=192, dropout=0.0603, lr=2.1e-3)),
    # Beyond the study (NOTES.md). Muon overfits after epoch 5 of 7: nanorun trains 5, holding its lr until the
    # last 20% of the steps (WSD), which overfits less than the cosine. Muon takes a larger lr than AdamW did
    # (3e-3, tuned at 12.2M) with wd 0.2. nanorun12m: the same recipe at step 5's shape and dropout.
    "nanorun": dict(change="Muon (lr 3e-3, wd 0.2), 5 epochs, WSD, no dropout, title-local attention, rotary positions",
                    study_val_loss=None, flags=dict(_SMALL, **_NANORUN, n_layer=4, n_head=3, d_model=192, dropout=0.0)),
    "nanorun12m": dict(change="nanorun's recipe at step 5's shape and dropout", study_val_loss=None,
                       flags=dict(_SMALL, **_NANORUN, n_layer=6, n_head=6, d_model=384, dropout=0.051)),
}

# On --resume these may differ from the checkpoint's config; everything else must match.
RESUME_MAY_CHANGE = {"resume", "device", "compile", "progress", "sample", "log_every", "max_steps",
                     "data", "out_dir", "name", "preset"}
DEVICES = ("auto", "cuda", "mps", "cpu")


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help adds "(default: X)" to a flag's text, unless the text already says what happens by default."""

    def _get_help_string(self, action):
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=HelpFormatter,
                                epilog="The defaults are the study's step-6 recipe (`--preset step6`): 4 layers, "
                                       "3 heads, width 192, ASAM with rho 0.05, 7 epochs of 90,000 titles.")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="a step of the study, or nanorun's recipe; flags typed after it override it (default: none)")
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
    g.add_argument("--rope", default=False, action=argparse.BooleanOptionalAction,
                   help="rotary position embeddings (Su et al. 2021) instead of a learned position table")
    g.add_argument("--within_title", default=False, action=argparse.BooleanOptionalAction,
                   help="attend only within a title, not across <eos> into the previous one; positions "
                        "restart at each title")
    g = p.add_argument_group("optimization")
    g.add_argument("--opt", default="asam", choices=optim.OPTIMIZERS, help="optimizer")
    g.add_argument("--lr", type=float, default=2.1e-3, help="peak learning rate")
    g.add_argument("--weight_decay", type=float, default=0.01, help="decoupled weight decay")
    g.add_argument("--wd_all", default=False, action=argparse.BooleanOptionalAction,
                   help="decay biases, norms and embeddings too (study steps 0-4)")
    g.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (Muon has its own)")
    g.add_argument("--rho", type=float, default=0.05, help="SAM/ASAM radius (Kwon et al. use 0.5 for ASAM)")
    g.add_argument("--grad_clip", type=float, default=1.0, help="clip the gradient norm; 0 turns it off")
    g.add_argument("--schedule", default="cosine", choices=optim.SCHEDULES,
                   help="learning-rate schedule after warm-up")
    g.add_argument("--decay_frac", type=float, default=0.2, help="with --schedule wsd: the last fraction of "
                   "the steps, over which the lr falls to --min_lr (Hagele et al. 2024: ~0.2 matches cosine)")
    g.add_argument("--warmup_ratio", type=float, default=0.1, help="fraction of steps of linear warm-up")
    g.add_argument("--min_lr", type=float, default=1e-5, help="floor the schedule decays to")
    g.add_argument("--batch_size", type=int, default=64, help="sequences per step")
    g.add_argument("--epochs", type=float, default=7, help="passes over the training tokens (1.5: one and a half)")
    g.add_argument("--max_steps", type=int, default=0, help="stop after this many steps (0: all); the "
                   "schedule still spans every epoch, and --resume goes on to the end unless given again")
    g = p.add_argument_group("run")
    g.add_argument("--evals_per_epoch", type=int, default=3, help="validations per epoch (plus step 0)")
    g.add_argument("--log_every", type=int, default=20, help="log the training loss every N steps")
    g.add_argument("--seed", type=int, default=1337, help="seed for init, data order and dropout")
    g.add_argument("--device", default="auto", choices=DEVICES, help="auto: CUDA, then MPS, then CPU")
    g.add_argument("--compile", default=None, action=argparse.BooleanOptionalAction,
                   help="torch.compile the model (default: on CUDA, and on CPU with a C++ compiler)")
    g.add_argument("--amp", default=None, action=argparse.BooleanOptionalAction,
                   help="bf16 autocast (default: on CUDA and on CPUs with AVX-512 BF16 or AMX)")
    g.add_argument("--out_dir", default="runs", help="folder that holds one folder per run")
    g.add_argument("--name", default=None, help="run name (default: from preset/optimizer, shape, time)")
    g.add_argument("--resume", default=None, help="checkpoint (or run folder) to continue from (default: none)")
    g.add_argument("--sample", type=int, default=5, help="titles to generate at the end")
    g.add_argument("--progress", default=True, action=argparse.BooleanOptionalAction, help="progress bars")
    return p


def defaults():
    return vars(build_parser().parse_args([]))


def resolve_config(explicit, saved=None):
    """Defaults, then the preset, then the keys given; a resumed run starts from its checkpoint's config
    (`saved`), and only the keys in RESUME_MAY_CHANGE may differ from it. A resume runs to the end of the
    run unless --max_steps is given again."""
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
        # settings newer than the checkpoint take their defaults, which are what older versions did
        cfg = {**known, **saved, "max_steps": 0}
        cfg.update({k: v for k, v in explicit.items() if k in RESUME_MAY_CHANGE})
    check_config(cfg)
    return cfg


def check_config(c):
    """Every impossible setting, found before any expensive work starts."""
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
    need(c["rho"] is None or c["rho"] > 0, f"--rho must be positive, got {c['rho']}")
    need(c["test_titles"] >= 0 and c["max_steps"] >= 0 and c["grad_clip"] >= 0,
         "--test_titles, --max_steps and --grad_clip must not be negative")
    for k, choices in (("opt", optim.OPTIMIZERS), ("schedule", optim.SCHEDULES), ("device", DEVICES)):
        need(c[k] in choices, f"unknown --{k} {c[k]!r}; choose one of {', '.join(choices)}")


# ----------------------------------------------------------------------------------------------
# Device, processes, and the settings this program makes for its whole process

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


def start_processes(device):
    """(rank, world size). Under torchrun (which sets RANK, WORLD_SIZE, LOCAL_RANK) join the process group:
    NCCL between GPUs, gloo between CPU processes; each process gets its own GPU. A plain `python
    train.py` is rank 0 of a world of 1 and starts nothing."""
    if "RANK" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        if device == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # "cuda" now means this process's GPU
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def all_sum(x, device, world):
    """The sum of the number x over all processes (x itself in a plain run)."""
    if world == 1:
        return x
    total = torch.tensor(x, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item()


def set_process_wide(device, compile):
    """The settings that change this whole process, made here, once, by the program that wants them
    (with speed.keep_freed_memory(), called beside this)."""
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # TF32 matmuls
    if device == "cpu" and compile:
        # By default the compiler makes its own random numbers, on CPU one Philox hash per element,
        # unvectorised (~97 ms of a 330 ms step of the 2.56M model); from PyTorch's generator instead the
        # compiled model draws the very same dropout masks as the eager one.
        torch._inductor.config.fallback_random = True
        # Compiled, the embeddings' backward adds gradient rows from all threads with atomic adds, so the last
        # bits of a gradient change from run to run (two runs of one command ended 0.006 nats apart). In
        # deterministic mode the compiler calls the sorted index_put instead (~0.5 ms a step).
        torch.use_deterministic_algorithms(True, warn_only=True)


# ----------------------------------------------------------------------------------------------
# The training step: one definition, for run() and for bench.py

def train_step(model, opt, x, y, *, device, amp, grad_clip):
    """One update on the batch (x, y), in a fixed order: forward, backward, (SAM/ASAM: climb to w + e(w)
    and take the gradient there), clip the gradient norm, optimizer step, zero the gradients.
    Returns the loss at w, a tensor.

    Under DDP every backward pass averages the gradients of all processes, the first pass too, so SAM's
    perturbation e = rho g / ||g|| uses the gradient of the whole global batch, as one process would."""
    with speed.autocast(device, amp):
        _, loss = model(x, y)
    loss.backward()
    sharpness_aware = isinstance(opt, optim.SAM)
    if sharpness_aware:
        opt.first_step(zero_grad=True)                # w -> w + e(w)
        with speed.autocast(device, amp):
            _, loss_at_e = model(x, y)
        loss_at_e.backward()                          # the gradient at w + e(w)
    if grad_clip > 0:                                 # after first_step: it normalises the first gradient anyway
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if sharpness_aware:
        opt.second_step()                             # back to w, then the base optimizer steps
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


# ----------------------------------------------------------------------------------------------
# Training

def run(callback=None, **config):
    """Train one model; return its result. callback(step, val_loss) runs after every evaluation; when it
    returns True the run stops there with status "stopped" (tune.py's pruned trials)."""
    t_start, resume = time.time(), None
    if config.get("resume"):  # a checkpoint, or a run folder
        config = dict(config, resume=checkpoint_path(config["resume"]))
        resume = load_checkpoint(config["resume"])
        t_start -= resume.get("elapsed_s", 0.0)  # the clock goes on: times are the whole run's, all processes'
    cfg = resolve_config(config, resume["config"] if resume else None)
    device = pick_device(cfg["device"])
    rank, world = start_processes(device)
    main_process = rank == 0  # the one process that writes files and prints
    say = print if main_process else (lambda *args: None)
    T, B = cfg["block_size"], cfg["batch_size"]
    if B % world:
        raise ConfigError(f"--batch_size {B} is the global batch; it must split evenly over {world} processes")
    amp = cfg["amp"] if cfg["amp"] is not None else speed.default_amp(device)
    want_compile = cfg["compile"] if cfg["compile"] is not None else speed.can_compile(device)
    if not resume and main_process:
        check_writable(cfg["out_dir"])

    # ---- data and tokenizer
    titles = read_titles(cfg["data"], limit=cfg["num_titles"] + cfg["test_titles"])
    if resume and len(titles) < cfg["num_titles"]:
        raise ConfigError(f"checkpoint {cfg['resume']} was trained on the first {cfg['num_titles']:,} titles of "
                          f"{resume['config']['data']}, but --data {cfg['data']} has only {len(titles):,}; "
                          "resume with that run's data file")
    train_titles, val_titles, test_titles = split_titles(titles, cfg["num_titles"], cfg["val_frac"],
                                                         cfg["test_titles"])
    data_sha = titles_sha256(train_titles + val_titles)
    if resume and resume["data_sha256"] != data_sha:
        raise ConfigError(f"--data {cfg['data']} does not hold the titles checkpoint {cfg['resume']} "
                          "was trained on; pass the same file")
    cache_dir = os.path.join(cfg["out_dir"], ".tokenizers")
    if not main_process:  # the others wait while the main process trains the tokenizer, then load it from the cache
        dist.barrier()
    tok, tok_path = get_tokenizer(train_titles, cfg["vocab_size"], cache_dir)
    if main_process and world > 1:
        dist.barrier()
    train_stream, val_stream = title_stream(tok, train_titles), title_stream(tok, val_titles)
    n_windows = (len(train_stream) - 1) // T
    steps_per_epoch = n_windows // B
    if steps_per_epoch == 0:
        raise ConfigError(f"the training split gives {n_windows} windows of {T} tokens, fewer than one "
                          f"batch of {B}; use more titles or a smaller --batch_size or --block_size")
    total_steps = max(1, round(steps_per_epoch * cfg["epochs"]))  # --epochs may be fractional
    last_step = min(total_steps, cfg["max_steps"] or total_steps)
    if resume and resume["step"] >= last_step:
        raise ConfigError(f"checkpoint {cfg['resume']} is at step {resume['step']} of {total_steps}: "
                          + ("the run is finished, nothing to resume" if resume["step"] >= total_steps
                             else f"pass a --max_steps above {resume['step']} to go on"))
    n_evals = max(1, round(cfg["epochs"] * cfg["evals_per_epoch"]))
    eval_steps = {0} | {round(total_steps * j / n_evals) for j in range(1, n_evals + 1)} | {last_step}
    val_chars = text_chars(val_titles)
    # the training loss is per token; times tokens per character it is in the validation loss's unit
    tokens_per_char = (len(train_stream) - 1) / text_chars(train_titles)

    # ---- run folder, tokenizer copy (the main process alone writes files)
    run_dir = os.path.dirname(os.path.abspath(cfg["resume"])) if resume else new_run_dir(cfg) if main_process else ""
    ckpt_path, log_path, run_tok = (os.path.join(run_dir, f) for f in ("ckpt.pt", "log.jsonl", "tokenizer.json"))
    if main_process and not resume:
        shutil.copyfile(tok_path, run_tok)
    tok_sha = file_sha256(run_tok) if main_process or resume else None
    if resume and resume["tokenizer_sha256"] != tok_sha:
        raise ConfigError(f"{run_tok} is not the tokenizer checkpoint {cfg['resume']} was trained with")

    # ---- model and optimizer
    torch.manual_seed(cfg["seed"])  # the same initial weights in every process; also seeds CUDA and MPS
    set_process_wide(device, want_compile)
    memory_kept = device == "cpu" and speed.keep_freed_memory()  # no page faults for a step's activations
    mconf = GPTConfig(vocab_size=tok.vocab_size, block_size=T, n_layer=cfg["n_layer"], n_head=cfg["n_head"],
                      d_model=cfg["d_model"], dropout=cfg["dropout"], rope=cfg["rope"],
                      within_title=cfg["within_title"], eos_id=tok.eos_id)
    raw_model = GPT(mconf).to(device)
    # the work of a step per token: SAM/ASAM pass forward and backward twice
    flops_per_token = raw_model.flops_per_token() * (2 if cfg["opt"] in ("sam", "asam") else 1)
    fast_modules = speed.use_fast_modules(raw_model, device)
    opt = optim.build_optimizer(cfg["opt"], raw_model, lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                                momentum=cfg["momentum"], decay_all=cfg["wd_all"],
                                rho=cfg["rho"] if cfg["opt"] in ("sam", "asam") else None,
                                ns_dtype=torch.bfloat16 if amp else None)  # Muon: bf16 where the matmuls are
    step, best, val, val_step = 0, math.inf, math.nan, None
    if resume:
        raw_model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        step, best, val, val_step = resume["step"], resume["best_val_loss"], resume["val_loss"], resume.get("val_step")
    net, compiled = raw_model, False
    if want_compile:
        net, compiled = speed.compile_with_warm_up(raw_model, device, B // world, T, amp)
    model = net
    peak = all_sum(speed.matmul_peak(device, amp), device, world)  # MFU's yardstick: all devices' matmul FLOP/s
    if world > 1:
        torch.manual_seed(cfg["seed"] + rank)  # each process its own dropout masks
        model = DDP(net, device_ids=[torch.cuda.current_device()] if device == "cuda" else None)
    if resume:  # an older checkpoint holds one state; a resume on more processes than saved reuses states
        saved = resume["rng"] if isinstance(resume["rng"], list) else [resume["rng"]]
        set_rng_state(saved[rank % len(saved)])

    log_file = open(log_path, "a", encoding="utf-8") if main_process else None
    log = functools.partial(log_event, log_file) if main_process else (lambda event, **fields: None)

    choices = dict(device=device, amp=amp, compiled=compiled, fast_modules=fast_modules,
                   freed_memory_kept=memory_kept, processes=world, matmul_peak_gflop_per_s=peak / 1e9,
                   versions=versions())
    if resume:  # the settings a resumed run may change, and the choices made for this process
        log("resume", step=step, config={k: cfg[k] for k in sorted(RESUME_MAY_CHANGE)}, **choices,
            elapsed_s=resume.get("elapsed_s"))  # None: an older checkpoint, whose clock this process restarts
        say(f"resuming {run_dir} at step {step} of {total_steps}")
    else:
        log("config", name=os.path.basename(run_dir), config=cfg, **choices, n_params=raw_model.num_params(),
            steps_per_epoch=steps_per_epoch, total_steps=total_steps,
            data={"path": cfg["data"], "sha256": data_sha, "n_train": len(train_titles), "n_val": len(val_titles),
                  "n_test": len(test_titles), "train_tokens": len(train_stream), "val_tokens": len(val_stream),
                  "val_chars": val_chars, "tokens_per_char": tokens_per_char})
    say(f"run {run_dir}: {raw_model.num_params():,} parameters on {device}{' bf16' if amp else ''}"
        f"{' compiled' if compiled else ''}{f' x{world} processes' if world > 1 else ''}; "
        f"{len(train_stream):,} train tokens, {steps_per_epoch} steps/epoch x {cfg['epochs']:g} epochs")

    def evaluate():
        """Validation loss in nats/char, always in fp32; under DDP each process scores a share of the batches."""
        nonlocal best, val, val_step
        nats = all_sum(stream_nats(net, val_stream, T, B, device, shard=(rank, world),
                                   progress=cfg["progress"] and main_process), device, world)
        val, val_step, best = nats / val_chars, step, min(best, nats / val_chars)
        log("eval", step=step, epoch=step / steps_per_epoch, val_loss=val, elapsed_s=round(time.time() - t_start, 1))

    def save():
        rngs = [rng_state()]
        if world > 1:
            rngs = [None] * world
            dist.all_gather_object(rngs, rng_state())
        if main_process:
            atomic_torch_save({"version": 1, "model": raw_model.state_dict(), "model_config": asdict(mconf),
                               "config": cfg, "optimizer": opt.state_dict(), "step": step, "rng": rngs,
                               "tokenizer": "tokenizer.json", "tokenizer_sha256": tok_sha, "data_sha256": data_sha,
                               "best_val_loss": best, "val_loss": val, "val_step": val_step,
                               "elapsed_s": time.time() - t_start}, ckpt_path)

    # Ctrl-C or a polite kill only sets a flag; at the next step (never mid SAM step) all processes stop and save.
    stop_signal, restore_signal_handlers = catch_stop_signals()

    def stop_requested():  # one Ctrl-C stops every process at the same step
        return all_sum(float(bool(stop_signal)), device, world) > 0

    status, first_step, tokens_per_s, train_time, bar, order = "running", step, 0.0, 0.0, None, None
    try:
        if step == 0:
            evaluate()
            say(f"step 0: val loss {val:.4f} nats/char")
            if callback and callback(0, val):
                status = "stopped"
        while status == "running" and step < last_step:
            epoch, i = divmod(step, steps_per_epoch)
            if order is None or i == 0:
                order = epoch_order(n_windows, cfg["seed"], epoch)
                if bar is not None:
                    bar.close()
                bar = tqdm(total=steps_per_epoch, initial=i, desc=f"epoch {epoch + 1}/{cfg['epochs']:g}",
                           disable=not (cfg["progress"] and main_process), leave=False)
            x, y = get_batch(train_stream, order, i, B, T)               # the global batch, (B, T)
            rows = slice(rank * B // world, (rank + 1) * B // world)    # this process's share of it
            x, y = x[rows].to(device, non_blocking=True), y[rows].to(device, non_blocking=True)
            lr = optim.lr_at(step, total_steps, cfg["lr"], cfg["schedule"],
                             round(cfg["warmup_ratio"] * total_steps), cfg["min_lr"], cfg["decay_frac"])
            for group in opt.param_groups:
                group["lr"] = lr
            t0 = time.time()
            loss = train_step(model, opt, x, y, device=device, amp=amp, grad_clip=cfg["grad_clip"]).item()
            if not math.isfinite(loss):
                raise Diverged(f"training loss became {loss} at step {step} (lr {lr:.3g}); lower --lr "
                               "or turn on --grad_clip")
            step += 1
            train_time += time.time() - t0
            tokens_per_s = (step - first_step) * B * T / train_time
            loss_per_char = loss * tokens_per_char  # under DDP: this process's share of the batch
            bar.update(1)
            bar.set_postfix(train=f"{loss_per_char:.3f} nats/char", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}")
            if step % cfg["log_every"] == 0 or step == last_step:
                log("train", step=step, epoch=step / steps_per_epoch, loss=loss, loss_per_char=loss_per_char,
                    lr=lr, tokens_per_s=tokens_per_s, gflop_per_s=tokens_per_s * flops_per_token / 1e9,
                    mfu=tokens_per_s * flops_per_token / peak)
            if step in eval_steps:
                evaluate()
                save()
                if main_process:
                    tqdm.write(f"step {step} (epoch {step / steps_per_epoch:.2f}): val loss {val:.4f} nats/char, "
                               f"{tokens_per_s:,.0f} tokens/s")
                if callback and callback(step, val):
                    status = "stopped"
            if stop_requested():
                save()
                status = "interrupted"
                say(f"\ninterrupted: saved step {step}; continue with --resume {ckpt_path}")
        if status == "running":
            status = "done"
    except Diverged:
        status = "diverged"
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: the last checkpoint stays as it was
        status = "interrupted"
        raise
    except BaseException:
        status = "failed"
        raise
    finally:
        if bar is not None:
            bar.close()
        restore_signal_handlers()
        # final_val_loss is the last step's; a run that stopped early has only its last evaluation
        log("end", status=status, final_val_loss=val if status == "done" else None, last_val_loss=val,
            last_eval_step=val_step, best_val_loss=best, steps=step, tokens_per_s=tokens_per_s,
            time_s=time.time() - t_start)
        if log_file:
            log_file.close()

    if cfg["sample"] and status == "done" and main_process:
        say("samples:")
        for title in sample_titles(raw_model, tok, cfg["sample"], device):
            say("  " + visible(title))
    return {"status": status, "final_val_loss": val if status == "done" else None, "last_val_loss": val,
            "last_eval_step": val_step, "best_val_loss": best, "steps": step, "tokens_per_s": tokens_per_s,
            "gflop_per_s": tokens_per_s * flops_per_token / 1e9, "mfu": tokens_per_s * flops_per_token / peak,
            "time_s": time.time() - t_start, "n_params": raw_model.num_params(), "run_dir": run_dir, "log": log_path,
            "ckpt": ckpt_path, "signal": stop_signal[0] if stop_signal else None, "main_process": main_process}


# ----------------------------------------------------------------------------------------------

def main(argv=None):
    parser, unset = build_parser(), object()
    # Pre-filling the namespace with a sentinel tells which flags were typed: argparse only sets
    # defaults for attributes that are missing. Only typed flags override a preset or a checkpoint.
    ns = argparse.Namespace(**{a.dest: unset for a in parser._actions if a.dest != "help"})
    explicit = {k: v for k, v in vars(parser.parse_args(argv, ns)).items() if v is not unset}
    try:
        result = run(**explicit)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    except Diverged as e:
        sys.exit(f"diverged: {e}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if result["status"] == "interrupted":  # the shell's code for a program stopped by a signal: 130 for Ctrl-C
        sys.exit(128 + (result["signal"] or signal.SIGINT))
    if result["main_process"]:  # the only process, or torchrun's first
        print(f"final val loss {result['final_val_loss']:.4f} nats/char (best {result['best_val_loss']:.4f}), "
              f"{result['steps']} steps, {result['tokens_per_s']:,.0f} tokens/s ({result['gflop_per_s']:,.0f} GFLOP/s, "
              f"MFU {result['mfu']:.0%}), {result['time_s']:.0f} s; run folder {result['run_dir']}")


if __name__ == "__main__":
    main()
