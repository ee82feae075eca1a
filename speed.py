"""
speed.py: the platform, off the reading path: which device, how many processes, and what makes a step
fast there. gpt.py and train.py read as the textbook; everything that depends on the machine lives here.

    device = pick_device("auto")            # CUDA, then MPS, then CPU
    rank, world = start_processes(device)    # under torchrun: join the process group (DDP)
    set_up_process(device, compile=can_compile(device))  # settings of the whole process: the caller's, once
    machine = choose(device, None, d_model=192, vocab_size=4000, rows=4096)  # bf16 or fp32, timed; MFU's peak
    use_fast_modules(model, device)          # fused attention on GPUs, cheaper dropout masks on CPU
    model, compiled, times = compile_if_faster(model, device, batch_size, block_size, machine.amp)
    with autocast(device, machine.amp): ...   # bf16 matmuls, reductions and the loss in fp32

Measurements and the commands that repeat them: NOTES.md; `python bench.py step` times a whole step.
"""

import contextlib
import ctypes
import functools
import json
import os
import platform
import shutil
import time
import warnings
from types import SimpleNamespace

import torch
import torch._inductor.config
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from common import ConfigError, atomic_file
from gpt import ScaledDotProductAttention

# ----------------------------------------------------------------------------------------------
# devices and processes

DEVICES = ("auto", "cuda", "mps", "cpu")


def has_mps():
    """An Apple GPU that torch can use (builds without MPS support lack torch.backends.mps)."""
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_device(name):
    """The device for --device NAME; "auto" is the fastest one present. One sentence if it is missing."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device cuda was asked but this torch {torch.__version__} sees no CUDA GPU; "
                          "use --device auto or cpu")
    if name == "mps" and not has_mps():
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


@contextlib.contextmanager
def main_process_first(rank, world):
    """The main process runs the block first (say, training the tokenizer into a cache), the others wait
    for it and then run the block themselves (loading what it wrote)."""
    if rank != 0:
        dist.barrier()
    yield
    if rank == 0 and world > 1:
        dist.barrier()


def set_up_process(device, compile):
    """The settings that change this whole process, made here, once, by the program that trains.
    Returns whether freed memory is kept (below)."""
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
    return device == "cpu" and keep_freed_memory()


def keep_freed_memory():
    """Linux (glibc): keep the memory the process frees for its next allocations. A training step frees and
    allocates the same activations every step; by default glibc hands large blocks back to the kernel and
    the next step takes a page fault per 4 KiB it touches again (5,000-29,000 faults, 9-50 ms a step of
    the 2.56M model). Returns whether the setting took (False on macOS, musl, Windows)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded into this process
    except (OSError, AttributeError, TypeError):  # no mallopt (macOS), no CDLL(None) (Windows)
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    # blocks up to 32 MiB (glibc's largest allowed) from the reusable heap; give memory back only past 1 GiB
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


# ----------------------------------------------------------------------------------------------
# precision: bf16 where it is measured to be faster

def autocast(device, amp):
    """bf16 autocast on the device when amp is on: matmuls in bf16, reductions and the loss in fp32."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=torch.bfloat16)


def synchronize(device):
    """Wait for the device's queued work, so that a clock read after it counts that work (CPU: no queue)."""
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def model_matmuls(d_model, vocab_size, rows):
    """The (m, k, n) products of one block and the head of a model of width d_model, forward and backward
    (a layer y = x W with x (rows, k), W (k, n) also computes dx = dy W^T and dW = x^T dy)."""
    shapes = []
    for k, n in ((d_model, 3 * d_model), (d_model, 4 * d_model), (4 * d_model, d_model), (d_model, vocab_size)):
        shapes += [(rows, k, n), (rows, n, k), (k, rows, n)]
    return shapes


def time_matmuls(shapes, dtype, device):
    """Seconds to run each product of `shapes` once in `dtype` (inputs made beforehand, from a generator of
    their own: the global one draws the dropout masks, which must not move)."""
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.rand(m, k, generator=g).to(device, dtype), torch.rand(k, n, generator=g).to(device, dtype))
             for m, k, n in shapes]
    synchronize(device)  # the copies above are not timed
    return seconds(lambda: [a @ b for a, b in pairs], device)


@functools.cache  # once per process and timer
def bf16_emulated(device, timer):
    """(emulated, times) from one 256^3 product per dtype, best of 3: a CPU without bf16 units emulates it
    ~100x behind fp32, and timing the model in bf16 there cost 30 s of every start-up (NOTES.md). Emulated:
    bf16 over 10x behind fp32, below 5 GFLOP/s (a busy machine can hide the ratio), or no bf16 matmul."""
    fp32, bf16 = [], []
    for _ in range(3):
        fp32.append(timer([(256, 256, 256)], torch.float32, device))
        try:
            bf16.append(timer([(256, 256, 256)], torch.bfloat16, device))
        except (RuntimeError, TypeError):  # a device without bf16 matmuls
            bf16 = None
            break
    times = {"fp32": [round(min(fp32), 6)], "bf16": bf16 and [round(min(bf16), 6)], "of": "256^3"}
    return bf16 is None or min(bf16) > 10 * min(fp32) or 2 * 256**3 / min(bf16) < 5e9, times


@functools.cache  # once per process and shape: tune.py's trials and the tests call train.run() many times
def measure_amp(device, d_model, vocab_size, rows, repeats=3, timer=time_matmuls):
    """Whether bf16 autocast pays on this machine for this model: the model's own matrix products timed in
    fp32 and in bf16, interleaved (fp32, bf16, fp32, bf16, ...) so both see the same load; a fraction of a
    second. Returns (amp, {"fp32": [s, ...], "bf16": [s, ...], "of": "the model's"}) for the log, or the
    first look's times where it found bf16 emulated ("of": "256^3"). A flag list is only a hint: a CPU listing
    avx512_bf16 without AMX multiplied the 2.56M model's shapes slower in bf16 than in fp32 (NOTES.md)."""
    emulated, first_look = bf16_emulated(device, timer)
    if emulated:
        return False, first_look
    shapes = model_matmuls(d_model, vocab_size, min(rows, 1024))
    times = {"fp32": [], "bf16": []}
    for _ in range(repeats + 1):  # the first round warms up (allocations, kernels): not kept
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            try:
                times[name].append(timer(shapes, dtype, device))
            except (RuntimeError, TypeError):  # bf16 failed on a shape the first look did not try
                return False, {"fp32": times["fp32"], "bf16": None, "of": "the model's"}
        if times["bf16"][-1] > 2 * times["fp32"][-1]:  # bf16 far behind: no need to go on
            break
    kept = {k: [round(s, 5) for s in v[1:] or v] for k, v in times.items()}
    return min(kept["bf16"]) < min(kept["fp32"]), dict(kept, of="the model's")  # bf16 when its best beat fp32's


def peak_size(device):
    """n of matmul_peak's n x n x n product: large enough to run at the device's full speed."""
    return 8192 if device == "cuda" else 1024


@functools.cache
def matmul_peak(device, repeats=10):
    """(FLOP/s, dtype) of the machine's fastest n^3 product, fp32 (TF32 on CUDA) or bf16 (unless emulated):
    MFU's denominator, whatever precision the step ran in. Measured, not nanoGPT's datasheet peak (a CPU has
    none it reaches), so MFU reads higher than nanoGPT's would. The best of 10: a CPU's speed drifts (bf16
    on an AMD EPYC: 330-690 GFLOP/s within a second), and a slow draw would flatter the MFU."""
    n = peak_size(device)
    best = {}
    emulated = bf16_emulated(device, time_matmuls)[0]
    for dtype in (torch.float32,) if emulated else (torch.float32, torch.bfloat16):
        try:
            time_matmuls([(n, n, n)], dtype, device)  # warm-up: not kept
            best[dtype] = min(time_matmuls([(n, n, n)], dtype, device) for _ in range(repeats))
        except (RuntimeError, TypeError):  # bf16 failed at this size
            continue
    dtype = min(best, key=best.get)
    return 2 * n**3 / best[dtype], str(dtype).replace("torch.", "")


def step_flops_per_token(model, opt_name, teacher=None):
    """The work of one training step per token, the numerator of MFU (model FLOPs utilisation: the FLOP/s a
    step does over the machine's fastest matmul's): SAM and ASAM pass forward and backward twice; a teacher
    passes forward once (a third of a forward and backward pass)."""
    passes = 2 if opt_name in ("sam", "asam") else 1
    return passes * model.flops_per_token() + (teacher.flops_per_token() / 3 if teacher is not None else 0)


def best_peak_seen(path, device, peak, dtype):
    """MFU's yardstick, steadied: the faster of this start-up's peak and the best measured before on this
    machine, device and thread count, kept in the JSON file `path` (train.py: beside the runs). One start-up
    at a slow moment measured a 2-core CPU's peak at 88 GFLOP/s, another at 164 (NOTES.md), which put the same
    step at an MFU of 97% or 51%; the best seen is the nearest to the machine's real peak, so MFU errs low, if
    at all. Returns (FLOP/s, dtype)."""
    key = " ".join(map(str, (platform.node(), device, torch.cuda.get_device_name() if device == "cuda" else
                             platform.machine(), torch.__version__, torch.get_num_threads())))
    seen = {}
    try:
        with open(path, encoding="utf-8") as f:
            seen = dict(json.load(f))
        best, best_dtype = seen[key]
        if best >= peak:
            return float(best), str(best_dtype)
    except (OSError, ValueError, TypeError, KeyError):  # no file or no entry yet, or a damaged one: this peak
        pass
    seen[key] = [peak, dtype]
    try:
        with atomic_file(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(seen, f, indent=1)
    except OSError:  # a folder we cannot write: the run goes on with this start-up's peak
        pass
    return peak, dtype


def choose(device, amp, d_model, vocab_size, rows, world=1, peaks_file=None):
    """bf16 or fp32 (amp None: measured by measure_amp; under torchrun bf16 only where every process found it
    faster, so that all run in one precision) and MFU's yardstick, the sum of every process's fastest matmul
    (with `peaks_file`, the best seen), timed after set_up_process (TF32 on CUDA). Returns what was chosen,
    with `log`: the choices and the times they were made on, for the run's log."""
    amp, amp_times = (amp, None) if amp is not None else measure_amp(device, d_model, vocab_size, rows)
    if world > 1:
        amp = all_sum(float(amp), device, world) == world
    peak_now, peak_dtype = matmul_peak(device)
    peak = peak_now
    if peaks_file:
        peak, peak_dtype = best_peak_seen(peaks_file, device, peak_now, peak_dtype)
    peak, peak_now = all_sum(peak, device, world), all_sum(peak_now, device, world)
    log = dict(amp=amp, amp_times_s=amp_times, matmul_peak_gflop_per_s=peak / 1e9, matmul_peak_dtype=peak_dtype,
               matmul_peak_now_gflop_per_s=peak_now / 1e9)
    return SimpleNamespace(amp=amp, amp_times=amp_times, peak=peak, peak_dtype=peak_dtype, log=log)


# ----------------------------------------------------------------------------------------------
# faster modules, swapped in for the model's plain ones

def cpu_dropout(x, p, training):
    """F.dropout with a cheaper mask on CPU. PyTorch's CPU mask (bernoulli_) draws one 32-bit random number
    per element on one core: 57 ms of a 330 ms compiled step of the 2.56M model. Here each 64-bit random
    word gives four elements 16 random bits each (~10 ms a step), and an element is dropped when its bits
    fall in the lowest round(p * 65536) of the 65536 values: p is rounded to a multiple of 1/65536
    (0.0603 -> 0.060303)."""
    if not training or p == 0.0:
        return x
    n = x.numel()
    # 64 random bits each (the bound is exclusive: one value in 2^64 never comes, which does not matter)
    words = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), device=x.device)
    bits = words.view(torch.int16)[:n].view(x.shape)     # 16 random bits per element, as an int16
    cut = min(round(p * 65536), 65535)                   # how many of the 65536 values mean "drop"
    keep = bits >= cut - 32768                           # int16 runs from -32768: the lowest `cut` values drop
    return x * keep * (65536 / (65536 - cut))


class CpuDropout(nn.Dropout):
    """nn.Dropout with cpu_dropout's mask."""

    def forward(self, x):
        return cpu_dropout(x, self.p, self.training)


class FusedAttention(nn.Module):
    """gpt.ScaledDotProductAttention in one fused kernel (flash or memory-efficient attention) where the
    device has one: it never stores the (T, T) attention matrix. On CPU at T = 64 the written-out formula
    is faster, mostly in the backward pass, so CPUs keep it."""

    def __init__(self, dropout):
        super().__init__()
        self.p = dropout

    def forward(self, q, k, v, mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                              dropout_p=self.p if self.training else 0.0)


def use_fast_modules(model, device):
    """Swap the model's plain modules for the device's faster equivalents, in place; return what was
    swapped, e.g. ["CpuDropout x13"]. The weights (and so checkpoints) do not change."""
    swaps = {}
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            new = None
            if device == "cpu" and type(child) is nn.Dropout:
                new = CpuDropout(child.p)
            elif device != "cpu" and isinstance(child, ScaledDotProductAttention):
                new = FusedAttention(child.dropout.p)
            if new is not None:
                setattr(parent, name, new)
                swaps[type(new).__name__] = swaps.get(type(new).__name__, 0) + 1
    return [f"{k} x{n}" for k, n in swaps.items()]


# ----------------------------------------------------------------------------------------------
# torch.compile

def can_compile(device):
    """compile where it works out of the box: CUDA, and CPUs with a C++ compiler (MPS support is patchy)."""
    return device == "cuda" or (device == "cpu" and any(map(shutil.which, ("c++", "g++", "clang++"))))


def zero_batch(batch_size, block_size, device):
    """Inputs and targets of the training shape, all zeros, as two distinct tensors as in training: the compiled
    graph is specialised on whether the targets are the inputs, so compiled(x, x) would build one training
    never uses."""
    x = torch.zeros(batch_size, block_size, dtype=torch.long, device=device)
    return x, torch.zeros_like(x)


def compile_with_warm_up(model, device, batch_size, block_size, amp, frozen=False):
    """torch.compile(model) and one forward+backward to build the graphs (frozen: a forward on inputs alone,
    without gradients, as distillation's teacher runs); eager (with a warning) if that fails. Returns (the
    model to call, whether it is compiled)."""
    compiled = torch.compile(model)
    x, y = zero_batch(batch_size, block_size, device)
    try:  # the warm-up must not move any generator that draws dropout masks
        with generators_kept(device):
            with autocast(device, amp), torch.set_grad_enabled(not frozen):
                _, loss = compiled(x) if frozen else compiled(x, y)
            if not frozen:
                loss.backward()
    except Exception as e:  # noqa: BLE001 - any compiler failure means: run eagerly
        warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); running eagerly")
        return model, False
    finally:
        model.zero_grad(set_to_none=True)
    return compiled, True


def compile_if_faster(model, device, batch_size, block_size, amp, measure=True, repeats=2, timer=None):
    """compile_with_warm_up, then (with `measure`) keep the compiled model unless the eager model's forward and
    backward pass beats it by over 5% on a batch of the training shape: best of `repeats`, the two alternated
    (~4 s for the 2.56M model on a 2-core CPU without bf16 units). Returns (the model to call, whether
    compiled, the times for the log)."""
    compiled, ok = compile_with_warm_up(model, device, batch_size, block_size, amp)
    if not (ok and measure):
        return compiled, ok, None
    x, y = zero_batch(batch_size, block_size, device)

    def forward_backward(m):
        with autocast(device, amp):
            m(x, y)[1].backward()

    timer = timer or (lambda m: seconds(lambda: forward_backward(m), device))
    times = {"compiled": [], "eager": []}
    with generators_kept(device):  # the timing draws no dropout mask that training would have drawn
        timer(model)  # the eager pass's warm-up
        for _ in range(repeats):
            times["compiled"].append(timer(compiled))
            times["eager"].append(timer(model))
    model.zero_grad(set_to_none=True)
    # compiled unless eager wins by over 5%: a busy machine's noise is larger (NOTES.md, 2026-12-07)
    faster = min(times["compiled"]) <= 1.05 * min(times["eager"])
    return compiled if faster else model, faster, {k: [round(t, 4) for t in v] for k, v in times.items()}


def generators_kept(device):
    """A context after which the CPU's and the device's random generators are where they were before it."""
    gpus = [] if device == "cpu" else [torch.cuda.current_device() if device == "cuda" else 0]
    return torch.random.fork_rng(devices=gpus, device_type=None if device == "cpu" else device)


def seconds(f, device):
    """Wall-clock seconds of f(), the device's queued work included."""
    t0 = time.perf_counter()
    f()
    synchronize(device)
    return time.perf_counter() - t0


def time_steps(step, steps, device):
    """Run step() once to warm up (compile, allocate), then `steps` times; (median s, best s, warm-up s)."""
    warm_up = seconds(step, device)
    times = sorted(seconds(step, device) for _ in range(steps))
    return times[len(times) // 2], times[0], warm_up
