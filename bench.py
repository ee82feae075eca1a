"""
bench.py: every speed number of nanorun, measured one way, in one place.

    python bench.py step --opt asam             # whole training steps (train.train_step) of the 2.56M model
    python bench.py model                       # forward+backward tokens/s: eager/compiled x fp32/bf16, two shapes
    python bench.py adamw                       # AdamW per tensor (optim.py) vs torch's multi-tensor foreach
    python bench.py tokenizer --data titles.txt # BPE training and encoding time on real titles
    python bench.py profile --no-amp            # a step's operators by their own time, under torch.profiler
    python bench.py profile --only "original adamw" --original ../mainrun/mainrun/train.py   # the original's
    python bench.py versus --original ../mainrun/mainrun/train.py --nanogpt ../nanoGPT/model.py
                                                # nanorun's step beside the original's and nanoGPT's, interleaved

`step` and `model` time the model as train.py builds it, on random tokens, and print the median step and the
fastest (the one least disturbed by other work on the machine).
"""

import __future__
import argparse
import ast
import dataclasses
import inspect
import math
import subprocess
import sys
import time

import torch

import checkpoint
import optim
import speed
import train
from bpe import Tokenizer
from common import HelpFormatter
from dataset import read_titles, split_titles, text_chars
from gpt import GPT, GPTConfig

SHAPES = {  # the study's two small shapes (steps 6 and 5), vocab 4000, block 64
    "2.56M": GPTConfig(vocab_size=4000, block_size=64, n_layer=4, n_head=3, d_model=192),
    "12M": GPTConfig(vocab_size=4000, block_size=64, n_layer=6, n_head=6, d_model=384),
}


def build(config, device, compile, amp, batch_size, measure=False):
    """The model as train.run() builds it: fast modules swapped in, compiled with a warm-up when asked (with
    `measure`: kept compiled only where that times faster, as train.py does unless --compile is typed)."""
    torch.manual_seed(1337)
    model = GPT(config).to(device)
    speed.use_fast_modules(model, device)
    runner, compiled = model, False
    if compile:
        runner, compiled, _ = speed.compile_if_faster(model, device, batch_size, config.block_size, amp, measure)
    return model, runner, compiled


def training_step(args, device, shape, opt_name):
    """train.train_step on random tokens, set up as train.run() sets it up: the same process-wide settings,
    compile and bf16 where they are measured faster, the optimizer as train.py builds it.
    Returns (config, the choices of speed.choose, the model, compiled or not, step: one step, its loss)."""
    config = dataclasses.replace(SHAPES[shape], dropout=args.dropout)
    compile = speed.can_compile(device) if args.compile is None else args.compile
    speed.set_up_process(device, compile)
    chosen = speed.choose(device, args.amp, config.d_model, config.vocab_size, args.batch_size * config.block_size)
    model, runner, compiled = build(config, device, compile, chosen.amp, args.batch_size, measure=args.compile is None)
    opt = optim.build_optimizer(opt_name, model, lr=1e-4, weight_decay=0.01,
                                rho=0.05 if opt_name in ("sam", "asam") else None,
                                ns_dtype=torch.bfloat16 if chosen.amp else None)  # as train.py
    x = torch.randint(config.vocab_size, (args.batch_size, config.block_size), device=device)
    y = torch.randint(config.vocab_size, (args.batch_size, config.block_size), device=device)

    def step():
        return train.train_step(runner, opt, x, y, device=device, amp=chosen.amp, grad_clip=1.0).item()

    return config, chosen, model, compiled, step


def bench_step(args, device):
    """Whole training steps, train.train_step: forward, backward (twice for SAM/ASAM), clip, optimizer step.
    Returns tokens/s (median)."""
    config, chosen, model, compiled, step = training_step(args, device, args.shape, args.opt)
    amp = chosen.amp
    # Each step is followed by one product of the peak's kind (speed.matmul_peak), so that every step's MFU
    # is taken against the matmul speed of the same moment: a CPU's speed drifts within seconds.
    n, peak_dtype = speed.peak_size(device), getattr(torch, chosen.peak_dtype)
    warm_up, step_s, peak_s = speed.seconds(step, device), [], []
    for _ in range(args.steps):
        step_s.append(speed.seconds(step, device))
        peak_s.append(speed.time_matmuls([(n, n, n)], peak_dtype, device))
    median, best = sorted(step_s)[len(step_s) // 2], min(step_s)
    tokens = args.batch_size * config.block_size
    print(f"{args.shape} {args.opt} {'compiled' if compiled else 'eager'} {'bf16' if amp else 'fp32'} "
          f"dropout {args.dropout}: {tokens / median:,.0f} tokens/s median ({median * 1e3:.0f} ms a step), "
          f"{tokens / best:,.0f} best; first step {warm_up:.1f} s")
    # MFU as nanoGPT defines it, over the machine's fastest matmul measured here instead of a datasheet's
    flops = tokens * speed.step_flops_per_token(model, args.opt)
    mfus = sorted((flops / s) / (2 * n**3 / p) for s, p in zip(step_s, peak_s))
    quantile = lambda f: mfus[round(f * (len(mfus) - 1))]
    print(f"  {flops / median / 1e9:,.0f} GFLOP/s of model work; the fastest matmul here: {chosen.peak / 1e9:,.0f} "
          f"GFLOP/s ({chosen.peak_dtype}, best of 10 at start-up; {2 * n**3 / max(peak_s) / 1e9:,.0f}-"
          f"{2 * n**3 / min(peak_s) / 1e9:,.0f} between the steps); MFU {quantile(0.5):.0%} (median of each step "
          f"against the product after it; quartiles {quantile(0.25):.0%}-{quantile(0.75):.0%})"
          + (f"; {'bf16' if amp else 'fp32'} chosen by timing matmuls (best fp32 "
             f"{min(chosen.amp_times['fp32']) * 1e3:.1f} ms, bf16 {min(chosen.amp_times['bf16'] or [math.nan]) * 1e3:.1f}"
             f" ms; products: {chosen.amp_times['of']})"
             if chosen.amp_times else ""))
    return tokens / median


def bench_model(args, device):
    """Forward+backward alone, for every (shape, compiled or not, fp32 or bf16)."""
    shapes = list(SHAPES) if args.shape == "all" else [args.shape]
    compiles = [False, True] if args.compile is None else [args.compile]
    amps = [False, True] if args.amp is None else [args.amp]
    speed.set_up_process(device, True in compiles)
    for name in shapes:
        config = dataclasses.replace(SHAPES[name], dropout=args.dropout)
        for compile in compiles:
            for amp in amps:
                model, runner, compiled = build(config, device, compile, amp, args.batch_size)
                x = torch.randint(config.vocab_size, (args.batch_size, config.block_size), device=device)
                y = torch.randint(config.vocab_size, (args.batch_size, config.block_size), device=device)

                def step():
                    with speed.autocast(device, amp):
                        _, loss = runner(x, y)
                    loss.backward()
                    model.zero_grad(set_to_none=True)

                median, best, warm_up = speed.time_steps(step, args.steps, device)
                tokens = args.batch_size * config.block_size
                print(f"{name:>6} ({model.num_params():,} params)  {'compiled' if compiled else 'eager':>8}  "
                      f"{'bf16' if amp else 'fp32'}  {tokens / median:9,.0f} tokens/s median, "
                      f"{tokens / best:9,.0f} best  (first step {warm_up:.1f} s)", flush=True)


def bench_adamw(args, device):
    """Is a multi-tensor AdamW worth its code? optim.AdamW (one tensor at a time) against
    torch.optim.AdamW(foreach=True) (each operation on all tensors in one call), steps alternating between
    the two; then whole training steps (as `step` times them) to give the difference as a share of one.
    --shape all: both shapes."""
    for name in list(SHAPES) if args.shape == "all" else [args.shape]:
        # compiled or not, bf16 or not: as train.py chooses them (--compile, --amp: as given)
        config, chosen, model, compiled, train_step = training_step(args, device, name, "adamw")
        amp = chosen.amp
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        opts = {"per tensor": optim.AdamW(optim.param_groups(model, 0.01), lr=1e-3, betas=(0.9, 0.95)),
                "foreach": torch.optim.AdamW(optim.param_groups(model, 0.01), lr=1e-3, betas=(0.9, 0.95),
                                             foreach=True)}
        times = {label: [] for label in opts}
        for _ in range(3):  # warm-up: allocate state
            for opt in opts.values():
                opt.step()
        for _ in range(args.steps):  # alternate, so both see the same machine load
            for label, opt in opts.items():
                times[label].append(speed.seconds(opt.step, device))
        med = {label: sorted(t)[len(t) // 2] for label, t in times.items()}
        step, _, _ = speed.time_steps(train_step, args.steps, device)
        print(f"{name} ({model.num_params():,} params, {len(list(model.parameters()))} tensors), "
              f"{'compiled' if compiled else 'eager'} {'bf16' if amp else 'fp32'}: training step {step * 1e3:.0f} ms median")
        for label, t in times.items():
            print(f"  AdamW.step() {label:>10}: median {med[label] * 1e3:6.2f} ms, best {min(t) * 1e3:6.2f} ms")
        saved = med["per tensor"] - med["foreach"]
        print(f"  foreach saves {saved * 1e3:.2f} ms a step (medians): {saved / step:.1%} of a training step")


def bench_tokenizer(args, device):
    """Train a BPE on the training split of the first --num_titles titles, then encode them with a cold cache."""
    if not args.data:
        raise SystemExit("error: bench.py tokenizer needs --data FILE (one title per line)")
    titles, _, _ = split_titles(read_titles(args.data, limit=args.num_titles), args.num_titles, 0.1, 0)
    t0 = time.perf_counter()
    tok = Tokenizer.train(titles, args.vocab_size)
    train_s = time.perf_counter() - t0
    tok = Tokenizer(tok.merges, tok.specials)  # a fresh chunk cache: every distinct chunk is encoded once
    t0 = time.perf_counter()
    ids = tok.encode_titles(titles)
    encode_s = time.perf_counter() - t0
    chars = text_chars(titles)
    print(f"BPE, vocab {tok.vocab_size}, {len(titles):,} training titles ({chars:,} characters with <eos>): "
          f"train {train_s:.2f} s, encode {encode_s:.2f} s ({chars / encode_s / 1e6:.2f} M chars/s), "
          f"{chars / len(ids):.4f} characters per token")


def bench_profile(args, device):
    """Where a training step's time goes: `args.steps` steps of train.train_step under torch.profiler, its
    operators by their own time (self time, children excluded), and the share of the matrix products. With
    --only "original adamw" (and --original PATH) or another of versus's candidates: that one's step instead."""
    if args.only and not args.only.startswith("nanorun"):
        step, label = other_step(args, device), f"{args.only}, fp32, dropout {STEP6['dropout']}"
    else:
        _, chosen, _, compiled, step = training_step(args, device, args.shape, args.opt)
        label = (f"{args.opt} {'compiled' if compiled else 'eager'} {'bf16' if chosen.amp else 'fp32'} "
                 f"dropout {args.dropout}")
    for _ in range(3):  # warm up outside the profile
        step()
    with torch.profiler.profile() as prof:
        for _ in range(args.steps):
            step()
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    share = {kind: sum(e.self_cpu_time_total for e in ops if kind_of(e.key) == kind) / total
             for kind in ("matrix products", "compiled kernels", "other")}
    print(f"{args.shape} {label}: {total / args.steps / 1e3:.0f} ms of operator time a step: "
          + ", ".join(f"{kind} {s:.0%}" for kind, s in share.items()))
    for e in ops[:args.top]:
        print(f"  {e.self_cpu_time_total / total:6.1%}  {e.self_cpu_time_total / args.steps / 1e3:7.2f} ms  "
              f"x{e.count // args.steps:<4} {e.key[:90]}")


def kind_of(op):
    """Matrix products; the compiler's fused kernels (everything else of a compiled forward or backward pass:
    norms, GELU, softmax, dropout, cross-entropy); other operators (the optimizer's, copies)."""
    if op in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise"):
        return "matrix products"
    return "compiled kernels" if "CompiledFxGraph" in op else "other"


# ---- versus: nanorun's training step beside two other codebases' at the same shape --------------------------
# The study's code (the original) and nanoGPT are not part of nanorun: pass the path of their files. Only their
# class definitions are run (the original's train.py also imports packages nanorun does not install and sets up
# logging at import), with torch, nn, F, math, inspect and dataclass in scope, as their own imports provide.
VERSUS = ["original adamw", "original asam", "nanogpt adamw", "nanorun adamw", "nanorun asam"]
STEP6 = dict(lr=2.1e-3, weight_decay=0.01, dropout=0.0603, betas=(0.9, 0.95), rho=0.05)  # STUDY.md, step 6


def classes_from(path):
    """The classes defined at the top level of the Python file `path`, without running anything else in it."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    tree.body = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    scope = dict(torch=torch, nn=torch.nn, F=torch.nn.functional, math=math, inspect=inspect,
                 dataclass=dataclasses.dataclass)
    # annotations stay unevaluated: they may name what the file imports from elsewhere (its tokenizer's types)
    exec(compile(tree, path, "exec", flags=__future__.annotations.compiler_flag), scope)
    return scope


def asam_step(model, opt, x, y, rho):
    """ASAM around torch's AdamW as STUDY.md describes the original's (written here; its SAM code is not
    public): climb by rho * w^2 g / ||w g||, take the gradient there, come back, let AdamW step."""
    _, loss = model(x, y)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    with torch.no_grad():
        norm = torch.stack([(p.abs() * p.grad).norm() for p in params]).norm()
        climbs = [rho * p * p * p.grad / (norm + 1e-12) for p in params]
        for p, e in zip(params, climbs):
            p.add_(e)
    opt.zero_grad(set_to_none=True)
    _, loss_at_e = model(x, y)
    loss_at_e.backward()
    with torch.no_grad():
        for p, e in zip(params, climbs):
            p.sub_(e)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def other_step(args, device):
    """One step of the original (its GPT, torch's AdamW, its loop: fp32, eager) or of nanoGPT (its GPT and
    configure_optimizers, compiled, fp32: its train.py autocasts on CUDA only), as a function of no arguments."""
    code, opt_name = args.only.split()
    shape = SHAPES[args.shape]
    torch.manual_seed(1337)
    path = args.original if code == "original" else args.nanogpt
    if not path:
        raise SystemExit(f"error: `{args.only}` needs --{code} PATH ({code}'s file)")
    scope = classes_from(path)
    width = {"d_model" if code == "original" else "n_embd": shape.d_model}  # the one name they spell apart
    model = scope["GPT"](scope["GPTConfig"](vocab_size=shape.vocab_size, block_size=shape.block_size,
                                            n_layer=shape.n_layer, n_head=shape.n_head, dropout=STEP6["dropout"],
                                            **width)).to(device)
    if code == "original":
        opt = torch.optim.AdamW(model.parameters(), lr=STEP6["lr"], weight_decay=STEP6["weight_decay"],
                                betas=STEP6["betas"])
        runner = model
    else:
        opt = model.configure_optimizers(STEP6["weight_decay"], STEP6["lr"], STEP6["betas"], torch.device(device).type)
        runner = torch.compile(model)
    x = torch.randint(shape.vocab_size, (args.batch_size, shape.block_size), device=device)
    y = torch.randint(shape.vocab_size, (args.batch_size, shape.block_size), device=device)

    def adamw_step():  # the original's loop body; nanoGPT's is the same but for the order of zero_grad
        _, loss = runner(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return adamw_step if opt_name == "adamw" else lambda: asam_step(runner, opt, x, y, STEP6["rho"])


def time_other(args, device):
    """Tokens/s (median) of other_step."""
    step = other_step(args, device)
    speed.time_steps(step, 2, device)  # warm-up beyond the first step: compile, allocate
    median, _, _ = speed.time_steps(step, args.steps, device)
    return args.batch_size * SHAPES[args.shape].block_size / median


def bench_versus(args, device):
    """Each candidate in a process of its own, in turn, --rounds times (A, B, C, A, B, C, ...), so that all
    see the same drift of the machine; then tokens/s per round and each one's ratio to the original's step
    with the same optimizer in the same round."""
    if args.only:  # one candidate, in this process: print its tokens/s on the last line
        if args.only.startswith("nanorun"):
            print(f"tokens/s {bench_step(args, device):.1f}")
        else:
            print(f"tokens/s {time_other(args, device):.1f}")
        return
    if not (args.original and args.nanogpt):
        raise SystemExit("error: bench.py versus needs --original PATH (the study's train.py) and --nanogpt PATH "
                         "(nanoGPT's model.py)")
    kind = checkpoint.cpu_kind()
    family = f" (family {kind['family']}, model {kind['model']})" if kind.get("family") else ""
    print(f"CPU: {checkpoint.cpu_model()}{family}, "
          f"{', '.join(kind.get('bf16', [])) or 'no bf16 instructions listed'}; the original: {args.original}; "
          f"nanoGPT: {args.nanogpt}")
    rows = {name: [] for name in VERSUS}
    for _ in range(args.rounds):
        for name in VERSUS:
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", name], text=True,
                                 capture_output=True)
            if out.returncode != 0:
                raise SystemExit(f"error: `{name}` failed:\n{out.stderr[-2000:]}")
            rows[name].append(float(out.stdout.split()[-1]))
            print(f"  {name}: {rows[name][-1]:,.0f} tokens/s", flush=True)
    print(f"\n{args.shape}, batch {args.batch_size} x {SHAPES[args.shape].block_size}, dropout {STEP6['dropout']}, "
          f"{args.steps} timed steps a round; tokens/s, and in brackets the ratio to the original's step with the "
          f"same optimizer in the same round")
    print("| | " + " | ".join(f"round {r + 1}" for r in range(args.rounds)) + " |")
    print("|---|" + "---|" * args.rounds)
    for name, values in rows.items():
        base = rows["original " + name.split()[1]]
        print(f"| {name} | " + " | ".join(f"{v:,.0f} ({v / b:.2f}x)" for v, b in zip(values, base)) + " |")
    print("nanorun adamw / nanogpt adamw: " + ", ".join(
        f"{a / b:.2f}x" for a, b in zip(rows["nanorun adamw"], rows["nanogpt adamw"])))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=HelpFormatter)
    p.add_argument("what", choices=["step", "model", "adamw", "tokenizer", "versus", "profile"],
                   help="what to time")
    p.add_argument("--shape", choices=["all", *SHAPES], default="2.56M", help="model shape ('all': both, for model and adamw)")
    p.add_argument("--opt", choices=optim.OPTIMIZERS, default="adamw", help="optimizer of `step`")
    p.add_argument("--dropout", type=float, default=0.0, help="the model's dropout")
    p.add_argument("--compile", default=None, action=argparse.BooleanOptionalAction,
                   help="compiled or eager (default: as train.py; `model` times both)")
    p.add_argument("--amp", default=None, action=argparse.BooleanOptionalAction,
                   help="bf16 autocast (default: as train.py, by timing; `model` times both)")
    p.add_argument("--batch_size", type=int, default=64, help="sequences per step")
    p.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    p.add_argument("--device", choices=speed.DEVICES, default="auto", help="auto: CUDA, then MPS, then CPU")
    p.add_argument("--data", default=None, help="titles file for `tokenizer` (default: none)")
    p.add_argument("--num_titles", type=int, default=100_000, help="titles for `tokenizer`: train on the first 90%%")
    p.add_argument("--vocab_size", type=int, default=4000, help="vocabulary for `tokenizer`")
    p.add_argument("--original", default=None, help="`versus`: the study's train.py (its classes are read)")
    p.add_argument("--nanogpt", default=None, help="`versus`: nanoGPT's model.py")
    p.add_argument("--rounds", type=int, default=2, help="`versus`: rounds of all candidates")
    p.add_argument("--top", type=int, default=20, help="`profile`: operators to list")
    p.add_argument("--only", choices=VERSUS, default=None,
                   help="`versus`: time this candidate alone; `profile`: profile it")
    args = p.parse_args()
    if args.shape == "all" and args.what in ("step", "profile", "versus"):
        p.error(f"`{args.what}` times one shape: pass --shape 2.56M or 12M")
    if args.only and args.only.startswith("nanorun"):  # nanorun's step as versus times it: step 6's dropout
        args.opt, args.dropout = args.only.split()[1], STEP6["dropout"]
    device = speed.pick_device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size} x block 64, {args.steps} timed steps")
    {"step": bench_step, "model": bench_model, "adamw": bench_adamw, "tokenizer": bench_tokenizer,
     "versus": bench_versus, "profile": bench_profile}[args.what](args, device)


if __name__ == "__main__":
    main()
