"""
train.py: train a GPT-2 style model on a file of titles, one per line. Top to bottom: the training step,
run() (data, model, the loop, the end), then the command line: the presets, the flags.

Reads the titles (dataset.py), trains a byte-level BPE on the training split (bpe.py), builds the
model (gpt.py) and an optimizer (optim.py), then runs one visible training loop: batch, lr, step,
log, validate, save. The metric is the study's: summed cross-entropy of every validation token, in nats,
per character of validation text. Every run gets its own folder under runs/ (checkpoint.py); what
depends on the machine (device, processes, bf16, compile) lives in speed.py.

    python train.py --preset step6 --epochs 1 --num_titles 20000   # a first run, minutes on a laptop
    python train.py --opt asam --d_model 384                       # any flag overrides the defaults
    python train.py --resume runs/NAME                             # continue an interrupted run
    python train.py --preset nanorun --teacher runs/BIG            # distill a finished larger run into it
    torchrun --standalone --nproc_per_node 4 train.py --preset step5   # one model, 4 processes (DDP)

The study (README) improved a GPT on 100,000 Hacker News titles one change at a time; its steps 0-6 are
the presets step0..step6. tune.py calls `run(**config)`; bench.py times `train_step`.
"""
import argparse
import math
import signal
import sys
import time
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import optim
import speed
from checkpoint import (RESUME_MAY_CHANGE, RunFiles, catch_stop_signals, check_config, check_resume_data,
                        check_resume_flags, check_writable, checkpoint_path, load_checkpoint, restore, rng_states,
                        save_state, set_rng_state, versions)
from common import ConfigError, Diverged, HelpFormatter, typed_flags
from dataset import (get_tokenizer, read_titles, split_titles, stream_nats, text_chars, title_stream,
                     train_batches, titles_sha256)
from evaluate import load_teacher
from gpt import GPT, GPTConfig, sample_titles, visible

# ----------------------------------------------------------------------------------------------
# The training step: one definition, for run() and for bench.py

def training_loss(model, x, y, p_teacher=None, distill=0.0):
    """Returns (ce, loss): the cross-entropy of the model's predictions with the next tokens y, and the loss to
    minimise, which is ce itself unless there is a teacher. Knowledge distillation (Hinton et al. 2015) mixes
    in, with weight `distill`, the cross-entropy against the teacher's predicted next-token distribution
    `p_teacher` (B, T, vocab), a soft target that also says which other tokens were likely; its gradient is the
    KL divergence's, as the teacher's entropy is a constant."""
    logits, ce = model(x, y)
    if p_teacher is None:
        return ce, ce
    soft_ce = -(p_teacher * F.log_softmax(logits.float(), dim=-1)).sum(-1)         # (B, T)
    return ce, (1 - distill) * ce + distill * soft_ce[y != -1].mean()  # where ce scores: gpt.py skips y = -1


def train_step(model, opt, x, y, *, device, amp, grad_clip, teacher=None, distill=0.0):
    """One update on the batch (x, y), always in this order: the teacher's predictions (when distilling);
    forward; backward; for SAM and ASAM (Foret et al. 2021, Kwon et al. 2021; optim.SAM) a climb to
    w + e(w), e = rho g / ||g|| for SAM, and a second forward and backward there; clip the gradient norm;
    optimizer step; zero the gradients. Returns the cross-entropy at w, a tensor.

    Under DDP every backward pass averages the gradients of all processes, the first pass too, so SAM's
    perturbation e uses the gradient of the whole global batch, as one process would."""
    p_teacher = None
    if teacher is not None:                           # frozen: one forward pass serves w and w + e(w)
        with torch.no_grad(), speed.autocast(device, amp):
            p_teacher = F.softmax(teacher(x)[0].float(), dim=-1)
    with speed.autocast(device, amp):                 # bf16 matrix products when amp, else nothing changes
        ce, loss = training_loss(model, x, y, p_teacher, distill)
    loss.backward()
    sharpness_aware = isinstance(opt, optim.SAM)
    if sharpness_aware:
        opt.first_step(zero_grad=True)                # w -> w + e(w)
        with speed.autocast(device, amp):
            _, loss_at_e = training_loss(model, x, y, p_teacher, distill)
        loss_at_e.backward()                          # the gradient at w + e(w)
    if grad_clip > 0:  # SAM/ASAM: clips the gradient at w + e(w), the one the step uses
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if sharpness_aware:
        opt.second_step()                             # back to w, then the base optimizer steps
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)
    return ce


# ----------------------------------------------------------------------------------------------
# The pieces of a run, in the order run() calls them, then run() itself

def load_data(cfg, rank, world, say, resume=None):
    """The titles, split; the tokenizer (trained on the training titles, or from the cache); the token streams."""
    titles = read_titles(cfg["data"], limit=cfg["num_titles"] + cfg["test_titles"])
    sha256 = titles_sha256(titles[:cfg["num_titles"]])  # the data's fingerprint: the training and validation titles
    if resume:
        check_resume_data(resume, cfg, len(titles), sha256)  # the very titles the checkpoint was trained on
    train_titles, val_titles, test_titles = split_titles(titles, cfg["num_titles"], cfg["val_frac"], cfg["test_titles"])
    with speed.main_process_first(rank, world):  # the main process trains it into the cache, the others load it
        tok, tok_path = get_tokenizer(train_titles, cfg["vocab_size"], f"{cfg['out_dir']}/.tokenizers", say)
    train_stream, val_stream = title_stream(tok, train_titles), title_stream(tok, val_titles)
    return SimpleNamespace(
        tok=tok, tok_path=tok_path, train_stream=train_stream, val_stream=val_stream,
        sha256=sha256, val_chars=text_chars(val_titles),
        # the training loss is per token; times tokens per character it is in the validation loss's unit
        tokens_per_char=(len(train_stream) - 1) / text_chars(train_titles),
        summary={"path": cfg["data"], "n_train": len(train_titles), "n_val": len(val_titles),
                 "n_test": len(test_titles), "train_tokens": len(train_stream), "val_tokens": len(val_stream)})


def n_evals(cfg):  # evaluations after step 0, at least one (tune.py's pruner counts them too)
    return max(1, round(cfg["epochs"] * cfg["evals_per_epoch"]))


def plan_steps(cfg, train_tokens, start=0):
    """per_epoch; total (the schedule's length: --epochs may be fractional); last (where this run stops:
    --max_steps); evals (the steps followed by a validation); warmup (the steps of linear warm-up); averaged
    (the last epoch's steps, which --ema averages)."""
    T, B = cfg["block_size"], cfg["batch_size"]
    steps_per_epoch = (train_tokens - 1) // T // B
    if steps_per_epoch == 0:
        raise ConfigError(f"the training split gives {(train_tokens - 1) // T} windows of {T} tokens, fewer "
                          f"than one batch of {B}; use more titles or a smaller --batch_size or --block_size")
    total = max(1, round(steps_per_epoch * cfg["epochs"]))
    last = min(total, cfg["max_steps"] or total)
    if start >= last:
        raise ConfigError(f"checkpoint {cfg['resume']} is at step {start} of {total}: "
                          + ("the run is finished, nothing to resume" if start >= total
                             else f"pass a --max_steps above {start} to go on"))
    evals = {0, last} | {round(total * j / n_evals(cfg)) for j in range(1, n_evals(cfg) + 1)}
    return SimpleNamespace(per_epoch=steps_per_epoch, total=total, last=last, evals=evals,
                           warmup=round(cfg["warmup_ratio"] * total), averaged=min(steps_per_epoch, total))


def build_model(cfg, tok, device, amp):
    """The model (gpt.py) with the device's fast modules swapped in, and its optimizer (optim.py)."""
    mconf = GPTConfig(vocab_size=tok.vocab_size, block_size=cfg["block_size"], n_layer=cfg["n_layer"],
                      n_head=cfg["n_head"], d_model=cfg["d_model"], dropout=cfg["dropout"], rope=cfg["rope"],
                      within_title=cfg["within_title"], eos_id=tok.eos_id,
                      attn_gate=cfg["attn_gate"], relu2=cfg["relu2"])
    model = GPT(mconf).to(device)
    fast_modules = speed.use_fast_modules(model, device)
    opt = optim.build_optimizer(cfg["opt"], model, lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                                momentum=cfg["momentum"], decay_all=cfg["wd_all"],
                                rho=cfg["rho"] if cfg["opt"] in ("sam", "asam") else None,
                                ns_dtype=torch.bfloat16 if amp else None)  # Muon: bf16 Newton-Schulz under autocast
    return model, opt, fast_modules


def run(callback=None, **config):
    """Train one model; return its result. callback(step, val_loss) runs after every evaluation; when it
    returns True the run stops there with status "stopped" (tune.py's pruned trials)."""
    # ---- the config: flags over a preset over the defaults; a resumed run's own, from its checkpoint
    resume = None
    if config.get("resume"):  # a checkpoint, or a run folder
        config = dict(config, resume=checkpoint_path(config["resume"]))
        resume = load_checkpoint(config["resume"])
    t_start = time.time() - (resume.get("elapsed_s", 0.0) if resume else 0.0)  # a resumed run's clock goes on
    cfg = resolve_config(config, resume["config"] if resume else None)
    device = speed.pick_device(cfg["device"])
    rank, world = speed.start_processes(device)
    main_process = rank == 0  # the one process that writes files and prints
    say = print if main_process else (lambda *args: None)
    T, B = cfg["block_size"], cfg["batch_size"]
    if B % world:
        raise ConfigError(f"--batch_size {B} is the global batch; it must split evenly over {world} processes")
    if main_process and not resume:
        check_writable(cfg["out_dir"])

    # ---- data and tokenizer
    data = load_data(cfg, rank, world, say, resume)
    plan = plan_steps(cfg, len(data.train_stream), start=resume["step"] if resume else 0)
    if cfg["ema"] and plan.averaged < 1 / (1 - cfg["ema"]):  # --ema averages the last epoch
        say(f"warning: --ema {cfg['ema']} averages over ~{1 / (1 - cfg['ema']):.0f} steps, the last epoch has "
            f"{plan.averaged}: the average keeps much of its first weights (--ema 0: off)")
    files = RunFiles.for_run(cfg, resume, main_process)
    tok_sha = files.add_tokenizer(data.tok_path, resume)

    # ---- this machine (speed.py): process settings, bf16 or fp32 by timing, MFU's yardstick; no change to the math
    use_compile = speed.can_compile(device) if cfg["compile"] is None else cfg["compile"]
    freed_memory_kept = speed.set_up_process(device, use_compile)  # settings of the whole process (why: speed.py)
    amp = resume.get("amp") if resume and cfg["amp"] is None else cfg["amp"]  # None: timed; resumed: its own
    machine = speed.choose(device, amp, cfg["d_model"], cfg["vocab_size"], B // world * T, world,
                           peaks_file=f"{cfg['out_dir']}/.matmul_peaks.json")

    # ---- model and optimizer
    torch.manual_seed(cfg["seed"])  # the same initial weights in every process; also seeds CUDA and MPS
    raw_model, opt, fast_modules = build_model(cfg, data.tok, device, machine.amp)
    # step: updates done; val: the last validation loss (at val_step); best: the lowest so far
    step, best, val, val_step = restore(resume, raw_model, opt) if resume else (0, math.inf, math.nan, None)
    ema = optim.WeightAverage(raw_model.parameters(), cfg["ema"]) if cfg["ema"] else None
    if ema and resume:
        ema.load_state_dict(resume["ema"])
    # three views of one set of weights: raw_model is saved and sampled, net (compiled where it pays) is
    # evaluated, model (net, wrapped by DDP on N processes) is trained. Compiled or eager is timed unless
    # --compile was typed; under torchrun each process would time alone, so there it compiles wherever it can.
    net, compiled, compile_times = raw_model, False, None
    if use_compile:
        net, compiled, compile_times = speed.compile_if_faster(raw_model, device, B // world, T, machine.amp,
                                                               measure=cfg["compile"] is None and world == 1)
    model = net
    if world > 1:  # one model on N processes: DDP averages the gradients in every backward pass
        torch.manual_seed(cfg["seed"] + rank)  # each process its own dropout masks
        model = DDP(net, device_ids=[torch.cuda.current_device()] if device == "cuda" else None)
    if resume:  # after the seeding above: a resumed run draws on from where its checkpoint left off
        set_rng_state(resume["rng"], rank)
    teacher = load_teacher(cfg, data, device, machine.amp, compiled, B // world) if cfg["teacher"] else None
    flops_per_token = speed.step_flops_per_token(raw_model, cfg["opt"], teacher)
    peak = machine.peak  # MFU's yardstick: all devices' fastest matmul, FLOP/s

    files.log_start(cfg, resume, data, plan, raw_model, step, PRESETS.get(cfg["preset"], {}), dict(
        device=device, processes=world, **machine.log, compiled=compiled, compile_times_s=compile_times,
        fast_modules=fast_modules, freed_memory_kept=freed_memory_kept, versions=versions()), RESUME_MAY_CHANGE, say)

    def validate():
        """Validation loss in nats/char, without autocast whatever --amp (fp32; TF32 matmuls on CUDA);
        under DDP each process scores a share of the batches. Returns True when `callback` asks to stop."""
        nonlocal best, val, val_step
        nats = speed.all_sum(stream_nats(net, data.val_stream, T, B, device, shard=(rank, world),
                                         progress=cfg["progress"] and main_process), device, world)
        val, val_step, best = nats / data.val_chars, step, min(best, nats / data.val_chars)
        files.log("eval", step=step, epoch=step / plan.per_epoch, val_loss=val,
                  elapsed_s=round(time.time() - t_start, 1))
        if main_process and step > 0:  # tqdm.write: printed above the progress bar
            tqdm.write(f"step {step} (epoch {step / plan.per_epoch:.2f}): val loss {val:.4f} nats/char, "
                       f"{tokens_per_s:,.0f} tokens/s")
        return callback is not None and callback(step, val)  # True: the caller wants the run to stop

    def save():  # called by every process: rng_states gathers each one's generators; only the main one writes
        files.save(save_state(raw_model, cfg, opt, step, plan.total, rngs=rng_states(world), tok_sha=tok_sha,
                              data_sha=data.sha256, amp=machine.amp, evals=(best, val, val_step),
                              elapsed_s=time.time() - t_start, ema=ema))

    # ---- the loop: batch, lr, step, log, validate, save
    # Ctrl-C or SIGTERM only sets a flag; at the next step (never mid SAM step) all processes stop and save.
    stop_signal, restore_signal_handlers = catch_stop_signals()
    batches = train_batches(data.train_stream, T, B, cfg["seed"], start_step=step, offsets=cfg["window_offsets"])
    rows = slice(rank * B // world, (rank + 1) * B // world)  # this process's share of every global batch
    bar = tqdm(total=plan.last, initial=step, disable=not (cfg["progress"] and main_process), leave=False)
    status, start_step, tokens_per_s, train_time = "running", step, 0.0, 0.0
    try:
        if step == 0 and validate():
            status = "stopped"
        while status == "running" and step < plan.last:
            x, y = (t[rows].to(device) for t in next(batches))  # (B / world, T) each: this process's rows
            lr = optim.lr_at(step, plan.total, cfg["lr"], cfg["schedule"], plan.warmup, cfg["min_lr"],
                             cfg["decay_frac"])
            for group in opt.param_groups:
                group["lr"] = lr
            t0 = time.time()
            loss = train_step(model, opt, x, y, device=device, amp=machine.amp, grad_clip=cfg["grad_clip"],
                              teacher=teacher, distill=cfg["distill"]).item()
            if not math.isfinite(loss):
                raise Diverged(f"training loss became {loss} at step {step} (lr {lr:.3g}); lower --lr "
                               "or set a smaller --grad_clip")
            step += 1
            if ema and step > plan.total - plan.averaged:  # the last epoch: average the weights (--ema)
                ema.update()
                if step == plan.total:  # the run ends with the average: the last evaluation and checkpoint
                    ema.copy_to_params()
            train_time += time.time() - t0
            tokens_per_s = (step - start_step) * B * T / train_time
            bar.update(1)
            bar.set_postfix(epoch=f"{step / plan.per_epoch:.2f}", train=f"{loss * data.tokens_per_char:.3f} nats/char",
                            lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}")
            if step % cfg["log_every"] == 0 or step == plan.last:  # under DDP: this process's share of the batch
                files.log("train", step=step, epoch=step / plan.per_epoch, loss=loss,
                          loss_per_char=loss * data.tokens_per_char, lr=lr, tokens_per_s=tokens_per_s,
                          gflop_per_s=tokens_per_s * flops_per_token / 1e9, mfu=tokens_per_s * flops_per_token / peak)
            if step in plan.evals:
                status = "stopped" if validate() else status
                save()
            if step < plan.last and speed.all_sum(float(bool(stop_signal)), device, world) > 0:  # one Ctrl-C stops all
                save()
                status = "interrupted"
                say(f"\ninterrupted: saved step {step}; continue with --resume {files.folder}")
        status = "done" if status == "running" else status
    except BaseException as e:  # the log's end says how the run ended; the last checkpoint stays as it was
        status = {Diverged: "diverged", KeyboardInterrupt: "interrupted"}.get(type(e), "failed")
        raise
    finally:
        bar.close()
        restore_signal_handlers()
        # final_val_loss is the last step's; a run that stopped early has only its last evaluation
        end = dict(status=status, final_val_loss=val if status == "done" else None, last_val_loss=val,
                   last_eval_step=val_step, best_val_loss=best, steps=step, total_steps=plan.total,
                   tokens_per_s=tokens_per_s, time_s=time.time() - t_start)
        files.log("end", **end)
        files.close()

    # ---- the end
    if cfg["sample"] and status == "done" and main_process:
        say("samples:")
        for title in sample_titles(raw_model, data.tok, cfg["sample"], device):
            say("  " + visible(title))
    return dict(end, gflop_per_s=tokens_per_s * flops_per_token / 1e9, mfu=tokens_per_s * flops_per_token / peak,
                peak_gflop_per_s=peak / 1e9, n_params=raw_model.num_params(), run_dir=files.folder,
                log=files.log_path, ckpt=files.ckpt, signal=stop_signal[0] if stop_signal else None,
                main_process=main_process)


# ----------------------------------------------------------------------------------------------
# The command line: the presets, train.py's flags, and a run's config from the defaults, a preset, the flags
# given and (on --resume) its checkpoint
#
# The study, one preset per step (the study's Table 1, README; study_val_loss: its number, logged beside the
# run's). Each key of a preset's flags is a flag of train.py (build_parser, below, says what each does); any
# flag typed on the command line overrides the preset.

# the study's 27M model, steps 0-4
_BIG = dict(n_layer=6, n_head=8, d_model=512, block_size=128, batch_size=64, vocab_size=16000, weight_decay=0.0,
            schedule="constant", warmup_ratio=0.0, min_lr=0.0, wd_all=True)
# steps 3-4: the 27M model with warm-up and cosine decay
_COSINE = dict(weight_decay=0.01, schedule="cosine", warmup_ratio=0.1, dropout=0.153, lr=5e-4, rho=0.05)
# steps 5-6: smaller models, ASAM with warm-up and cosine decay
_SMALL = dict(block_size=64, batch_size=64, vocab_size=4000, weight_decay=0.01, min_lr=1e-5,
              warmup_ratio=0.1, schedule="cosine", opt="asam", wd_all=False, rho=0.05)
# what both nanorun presets change in the study's recipe (NOTES.md); each sets its own shape and dropout
_NANORUN = dict(within_title=True, rope=True, opt="muon", lr=3e-3, weight_decay=0.2, schedule="wsd",
                window_offsets=True, attn_gate=True, relu2=True)
PRESETS = {
    "step0": dict(change="baseline: SGD, constant lr", study_val_loss=1.7533,
                  flags=dict(_BIG, opt="sgd", dropout=0.1, lr=6e-3)),
    "step1": dict(change="AdamW instead of SGD", study_val_loss=1.4893,
                  flags=dict(_BIG, opt="adamw", dropout=0.1, lr=6e-3)),
    "step2": dict(change="tuned lr, dropout, block size; wd 0.01", study_val_loss=1.3544,
                  flags=dict(_BIG, opt="adamw", dropout=0.2012, lr=3e-4, weight_decay=0.01)),
    "step3": dict(change="SAM (rho 0.05) + warm-up, cosine decay", study_val_loss=1.327,
                  flags=dict(_BIG, **_COSINE, opt="sam")),
    "step4": dict(change="adaptive SAM (ASAM)", study_val_loss=1.311, flags=dict(_BIG, **_COSINE, opt="asam")),
    "step5": dict(change="smaller model; no wd on bias/norm/emb; lr floor", study_val_loss=1.2935,
                  flags=dict(_SMALL, n_layer=6, n_head=6, d_model=384, dropout=0.051, lr=1.1e-3)),
    "step6": dict(change="smaller still", study_val_loss=1.3206,
                  flags=dict(_SMALL, n_layer=4, n_head=3, d_model=192, dropout=0.0603, lr=2.1e-3)),
    # Beyond the study: nanorun's recipe (README; each change measured with three seeds in NOTES.md).
    # nanorun12m: the same at step 5's shape and dropout, 5 epochs (a sixth: 0.0011 lower on one seed, NOTES.md).
    "nanorun": dict(change="Muon (lr 3e-3, wd 0.2), 6 epochs, WSD, no dropout, title-local attention, rotary "
                    "positions, window offsets, gated attention, squared-ReLU MLP, the last epoch's weights averaged",
                    study_val_loss=None, flags=dict(_SMALL, **_NANORUN, n_layer=4, n_head=3, d_model=192, dropout=0.0,
                                                    epochs=6, ema=0.995)),
    "nanorun12m": dict(change="nanorun's recipe, 5 epochs, at step 5's shape and dropout", study_val_loss=None,
                       flags=dict(_SMALL, **_NANORUN, n_layer=6, n_head=6, d_model=384, dropout=0.051, epochs=5)),
}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=HelpFormatter,
                                epilog="The defaults are the study's step-6 recipe (`--preset step6`): 4 layers, "
                                       "3 heads, width 192, ASAM with rho 0.05, 7 epochs of 90,000 titles.")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="a step of the study, or nanorun's recipe; any flag typed overrides it (default: none)")
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
                   help="attend only within a title, not across <eos>; positions restart at each title")
    g.add_argument("--attn_gate", default=False, action=argparse.BooleanOptionalAction,
                   help="scale each attention head's output by a sigmoid gate read from the attention's input")
    g.add_argument("--relu2", default=False, action=argparse.BooleanOptionalAction,
                   help="squared ReLU in the MLP instead of GELU (So et al. 2021, Primer)")
    g = p.add_argument_group("optimization")
    g.add_argument("--opt", default="asam", choices=optim.OPTIMIZERS, help="optimizer")
    g.add_argument("--lr", type=float, default=2.1e-3, help="peak learning rate")
    g.add_argument("--weight_decay", type=float, default=0.01,
                   help="weight decay: decoupled (AdamW, Muon); L2, in the gradient (SGD)")
    g.add_argument("--wd_all", default=False, action=argparse.BooleanOptionalAction,
                   help="decay biases, norms and embeddings too (study steps 0-4)")
    g.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (Muon has its own)")
    g.add_argument("--rho", type=float, default=0.05, help="SAM/ASAM radius (Kwon et al. use 0.5 for ASAM)")
    g.add_argument("--grad_clip", type=float, default=1.0, help="clip the gradient norm; 0 turns it off")
    g.add_argument("--schedule", default="cosine", choices=optim.SCHEDULES,
                   help="learning-rate schedule after warm-up")
    g.add_argument("--decay_frac", type=float, default=0.2, help="with --schedule wsd: the last fraction of "
                   "the steps, in which the lr falls to --min_lr (Hagele et al. 2024)")
    g.add_argument("--warmup_ratio", type=float, default=0.1, help="fraction of steps of linear warm-up")
    g.add_argument("--min_lr", type=float, default=1e-5, help="floor the schedule decays to")
    g.add_argument("--batch_size", type=int, default=64, help="sequences per step, all processes together")
    g.add_argument("--window_offsets", default=False, action=argparse.BooleanOptionalAction,
                   help="from the second epoch on, the training windows start 0..block_size-1 tokens later")
    g.add_argument("--teacher", default=None, help="a run (folder or ckpt) trained on these titles to distill from")
    g.add_argument("--distill", type=float, default=0.5, help="with --teacher: the weight of its target in the loss")
    g.add_argument("--ema", type=float, default=0.0, help="with a decay d in (0, 1): over the last epoch average "
                   "the weights, avg = d avg + (1 - d) w after each step, and end the run with the average (0: off)")
    g.add_argument("--epochs", type=float, default=7, help="passes over the training tokens (1.5: one and a half)")
    g.add_argument("--max_steps", type=int, default=0, help="stop after this many steps (0: all); the "
                   "schedule still spans every epoch, and --resume goes on to the end unless given again")
    g = p.add_argument_group("run")
    g.add_argument("--evals_per_epoch", type=int, default=3, help="validations per epoch (plus step 0)")
    g.add_argument("--log_every", type=int, default=20, help="log the training loss every N steps")
    g.add_argument("--seed", type=int, default=1337, help="seed for init, data order and dropout")
    g.add_argument("--device", default="auto", choices=speed.DEVICES, help="auto: CUDA, then MPS, then CPU")
    g.add_argument("--compile", default=None, action=argparse.BooleanOptionalAction,
                   help="torch.compile the model (default: where it works and times faster; log: compile_times_s)")
    g.add_argument("--amp", default=None, action=argparse.BooleanOptionalAction, help="bf16 autocast (default: "
                   "where timing the model's matrix products at start-up finds it faster; log: amp_times_s)")
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
    preset = explicit.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    if saved is None:
        cfg = {**known, **(PRESETS[preset]["flags"] if preset else {}), **explicit}
    else:  # settings newer than the checkpoint take their defaults, which are what older versions did
        check_resume_flags(explicit, saved, explicit["resume"])
        cfg = {**known, **saved, "max_steps": 0, **{k: v for k, v in explicit.items() if k in RESUME_MAY_CHANGE}}
    check_config(cfg)
    return cfg


# ----------------------------------------------------------------------------------------------
# The entry point: python train.py [flags]

def main(argv=None):
    explicit = typed_flags(build_parser(), argv)  # only typed flags override a preset or a checkpoint
    try:
        r = run(**explicit)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    except Diverged as e:
        sys.exit(f"diverged: {e}")
    except KeyboardInterrupt:  # Ctrl-C outside the loop's handler: reading, tokenizer, compile, or sampling
        print("\ninterrupted; nothing more was saved", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if r["status"] == "interrupted":  # the shell's code for a program stopped by a signal: 130 for Ctrl-C
        sys.exit(128 + (r["signal"] or signal.SIGINT))
    if r["main_process"]:  # the only process, or torchrun's first; --max_steps may end a run unfinished
        unfinished = f" (unfinished: step {r['steps']} of {r['total_steps']})" if r["steps"] < r["total_steps"] else ""
        print(f"final val loss {r['final_val_loss']:.4f} nats/char{unfinished} (best {r['best_val_loss']:.4f}), "
              f"{r['steps']} steps, {r['tokens_per_s']:,.0f} tokens/s ({r['gflop_per_s']:,.0f} GFLOP/s, MFU "
              f"{r['mfu']:.0%} of this machine's fastest matmul, {r['peak_gflop_per_s']:,.0f} GFLOP/s), "
              f"{r['time_s']:.0f} s; run folder {r['run_dir']}")


if __name__ == "__main__":
    main()
