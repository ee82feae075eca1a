"""
speed.py: what makes training fast on each device, kept apart so that gpt.py reads as the textbook.

Each piece computes what the plain model computes, and says what it buys. The measurements behind
them, with the commands that repeat them, are in NOTES.md; `python bench.py` times the whole step.

    use_fast_modules(model, device)    # fused attention on GPUs, cheaper dropout masks on CPU
    model, compiled = compile_with_warm_up(model, device, batch_size, block_size, amp)
    with autocast(device, amp): ...    # bf16 matmuls where the hardware has them
    peak = matmul_peak(device, amp)    # FLOP/s of one big matrix product: the yardstick for MFU

Settings that change the whole process (the C library's memory reuse, the compiler's random numbers,
deterministic algorithms) are made by the program that wants them: see train.set_process_wide().
"""

import contextlib
import ctypes
import functools
import shutil
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt import ScaledDotProductAttention

# ----------------------------------------------------------------------------------------------
# precision and memory


def cpu_has_bf16():
    """AVX-512 BF16 or AMX makes bf16 matmuls faster than fp32 on a CPU (~1.5x per step of the 2.56M model)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_amp(device):
    """bf16 autocast where it pays: CUDA GPUs with bf16, CPUs with AVX-512 BF16 or AMX."""
    return device == "cuda" and torch.cuda.is_bf16_supported() or device == "cpu" and cpu_has_bf16()


def autocast(device, amp):
    """bf16 autocast on CUDA or CPU when amp is on: matmuls in bf16, reductions and the loss in fp32."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16)


def keep_freed_memory():
    """Linux (glibc): keep the memory the process frees for its next allocations. A training step frees and
    allocates the same activations every step; by default glibc hands large blocks back to the kernel and
    the next step takes a page fault per 4 KiB it touches again (5,000-29,000 faults, 9-50 ms a step of
    the 2.56M model). Returns whether the setting took (False on macOS, musl, Windows). Process-wide."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded into this process
    except (OSError, AttributeError, TypeError):  # no mallopt (macOS), no CDLL(None) (Windows)
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    # blocks up to 32 MiB (glibc's largest allowed) from the reusable heap; give memory back only past 1 GiB
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


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


def compile_with_warm_up(model, device, batch_size, block_size, amp):
    """torch.compile(model) and one forward+backward to build the graphs; eager (with a warning) if that fails.
    Returns (the model to call, whether it is compiled)."""
    compiled = torch.compile(model)
    # two distinct tensors, as in training: the compiled graph is specialised on whether idx is targets,
    # so warming up with compiled(x, x) would build a graph that training never uses
    x = torch.zeros(batch_size, block_size, dtype=torch.long, device=device)
    y = torch.zeros(batch_size, block_size, dtype=torch.long, device=device)
    try:
        with torch.random.fork_rng(devices=[]):  # the warm-up must not move the dropout RNG
            with autocast(device, amp):
                _, loss = compiled(x, y)
            loss.backward()
    except Exception as e:  # noqa: BLE001 - any compiler failure means: run eagerly
        warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); running eagerly")
        return model, False
    finally:
        model.zero_grad(set_to_none=True)
    return compiled, True


# ----------------------------------------------------------------------------------------------
# the yardstick: how fast this device multiplies matrices


def synchronize(device):
    """Wait for the device's queued work, so that a clock read after it counts that work (CPU: no queue)."""
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def time_steps(step, steps, device):
    """Run step() once to warm up (compile, allocate), then `steps` times; (median s, best s, warm-up s)."""
    t0 = time.perf_counter()
    step()
    synchronize(device)
    warm_up = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], times[0], warm_up


@functools.cache  # once per process: tune.py's trials and the tests call train.run() many times
def matmul_peak(device, amp, repeats=3):
    """FLOP/s of the fastest of a few n x n x n matrix products: bf16 with amp, else fp32 (TF32 on CUDA,
    as train.set_process_wide allows).

    Model FLOPs utilisation (MFU) is a step's useful FLOP/s over this number. nanoGPT divides by the
    GPU's datasheet peak; a CPU has none that it reaches, so here the peak is measured: the best the
    device does on the work a transformer is made of. It is below the datasheet's, so the MFU is higher
    than nanoGPT's would be on the same GPU. n = 2048 on CPU and MPS (~0.1 s a product on a
    2-core CPU); 8192 on CUDA, where a smaller product is too short to keep the GPU busy."""
    n = 8192 if device == "cuda" else 2048
    # from a generator of its own: the global one draws the dropout masks, which must not move
    a = torch.rand(n, n, generator=torch.Generator().manual_seed(0))
    a = a.to(device, torch.bfloat16 if amp else torch.float32)
    best = time_steps(lambda: a @ a, repeats, device)[1]
    return 2 * n**3 / best
