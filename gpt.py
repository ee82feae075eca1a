"""
A compact GPT-2: token and learned position embeddings, pre-LayerNorm transformer blocks
(causal self-attention, then a GELU MLP of 4x width), a final LayerNorm and an output head
that shares its weights with the token embedding.

Ideas from Radford et al. 2019 (GPT-2) and Vaswani et al. 2017 (attention). The end of the file
has what running it needs: bf16 autocast, torch.compile with an eager fallback, sampling titles.

    python gpt.py --bench                  # forward+backward tokens/s, eager and compiled, fp32 and bf16
    python gpt.py --bench --shape 2.56M --no-compile --dtype fp32   # one cell of that table
"""

import argparse
import contextlib
import ctypes
import math
import shutil
import time
import warnings
import dataclasses
from dataclasses import dataclass

import torch
import torch._inductor.config
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 4000
    block_size: int = 64    # longest sequence the model reads (size of the position table)
    n_layer: int = 4
    n_head: int = 3
    d_model: int = 192
    dropout: float = 0.0
    bias: bool = True       # biases in Linear and LayerNorm layers, as in GPT-2

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head}): "
                             f"pick an n_head that divides it.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")


# -----------------------------------------------------------------------------
# the blocks

def dropout(x, p, training):
    """Zero each element of x with probability p and scale the rest by 1 / (1 - p) (Srivastava et al. 2014).

    On GPUs this is F.dropout. On CPU, PyTorch's mask (bernoulli_) draws one 32-bit random number per
    element on one core: 57 ms of a 330 ms compiled training step of the study's 4L/192d model. Here each
    64-bit random word gives four elements 16 random bits each (~13 ms a step), and an element is dropped
    when its 16 bits fall in the lowest round(p * 65536) of the 65536 values: p is rounded to a multiple
    of 1/65536 (0.0603 -> 0.060303).
    E.g. dropout(torch.ones(8), 0.5, True) -> eight values, each 0.0 or 2.0."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    n = x.numel()
    # 64 random bits each (the bound is exclusive: one value in 2^64 never comes, which does not matter)
    words = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), device=x.device)
    bits = words.view(torch.int16)[:n].view(x.shape)     # 16 random bits per element, as an int16
    cut = min(round(p * 65536), 65535)                   # how many of the 65536 values mean "drop"
    keep = bits >= cut - 32768                           # int16 runs from -32768: the lowest `cut` values drop
    return x * keep * (65536 / (65536 - cut))


class Dropout(nn.Module):
    """nn.Dropout with the CPU-friendly mask of dropout() above."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x):
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)      # 3 x (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)      # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)      # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)      # (B, nh, T, hs)
        # softmax(q k^T / sqrt(hs)) v, with position t seeing only positions <= t
        if x.device.type == "cpu":
            # written out on CPU: for short sequences it is faster than PyTorch's fused CPU kernel (whose
            # backward is slow at T=64, and which has no dropout), and it uses the cheaper dropout above
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))                 # (B, nh, T, T)
            future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)  # (T, T): True above the diagonal
            att = F.softmax(att.masked_fill(future, float("-inf")), dim=-1)
            y = dropout(att, self.dropout, self.training) @ v                     # (B, nh, T, hs)
        else:  # a fused kernel (flash or memory-efficient attention) where the device has one
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.d_model, 4 * config.d_model, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.d_model, config.d_model, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        # exact erf GELU; GPT-2 used the tanh approximation, which differs by < 1e-3
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        # pre-LayerNorm: each sub-layer reads a normalised copy and adds its output to the residual stream
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


# -----------------------------------------------------------------------------
# the model

class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)   # token embedding
        self.wpe = nn.Embedding(config.block_size, config.d_model)   # learned position embedding
        self.drop = Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.d_model, bias=config.bias)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        # weight tying (Press & Wolf 2017): the head scores a token by its dot product with that token's
        # embedding; one (vocab, d_model) matrix instead of two
        self.lm_head.weight = self.wte.weight

        # GPT-2 initialisation: N(0, 0.02) everywhere, zero biases, and the two projections that write
        # into the residual stream scaled by 1/sqrt(2 n_layer), so the stream's variance does not grow
        # with depth (each block adds to it twice)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def num_params(self):
        """Number of parameters, the tied embedding/head matrix counted once, position table included."""
        return sum(p.numel() for p in self.parameters())  # parameters() already skips the tied duplicate

    def forward(self, idx, targets=None):
        """idx (B, T) token ids -> logits (B, T, vocab) and, when targets (B, T) are given, the mean
        cross-entropy over targets that are not -1 (-1 marks padding, which is not scored)."""
        self._check_ids(idx)
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)                   # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))               # (B, T, C)
        for block in self.h:
            x = block(x)                                           # (B, T, C)
        logits = self.lm_head(self.ln_f(x))                        # (B, T, vocab)
        loss = None
        if targets is not None:
            if targets.shape != idx.shape:
                raise ValueError(f"targets have shape {tuple(targets.shape)} but idx has {tuple(idx.shape)}; "
                                 f"they must match.")
            loss = F.cross_entropy(logits.view(B * T, -1), targets.view(B * T), ignore_index=-1)
        return logits, loss

    def _check_ids(self, idx):
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"idx must be a (batch, time) tensor of integer token ids, "
                             f"got shape {tuple(idx.shape)} and dtype {idx.dtype}.")
        if idx.size(1) > self.config.block_size:
            raise ValueError(f"sequence of length {idx.size(1)} is longer than block_size "
                             f"{self.config.block_size}; crop it or build the model with a larger block_size.")
        # The range check reads the data, so it is skipped while torch.compile traces the model: inside a
        # graph it would cost a graph break (a device sync and a split graph) on every step. Eager runs
        # keep it: one min/max over B*T ids, tiny next to the forward pass. A compiled run should check
        # its token file once when it loads it.
        if not torch.compiler.is_compiling():
            lo, hi = torch.aminmax(idx)
            if lo < 0 or hi >= self.config.vocab_size:
                raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got ids from "
                                 f"{int(lo)} to {int(hi)}; was the data encoded with another tokenizer?")

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Extend idx (B, T) by max_new_tokens sampled tokens and return (B, T + max_new_tokens).

        The context is cropped to the last block_size tokens. temperature scales the logits before the
        softmax (0 means greedy: always the most likely token); top_k keeps only the k most likely tokens.
        Dropout is switched off while sampling and the previous train/eval mode is restored after.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}.")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be a positive integer or None, got {top_k}.")
        was_training = self.training
        self.eval()
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size:])    # (B, T', vocab)
            logits = logits[:, -1, :]                              # (B, vocab): only the last position predicts
            if temperature == 0:
                idx_next = logits.argmax(dim=-1, keepdim=True)     # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]  # (B, 1)
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                idx_next = torch.multinomial(probs, num_samples=1)  # (B, 1)
            idx = torch.cat((idx, idx_next), dim=1)
        self.train(was_training)
        return idx


# -----------------------------------------------------------------------------
# running it: precision, torch.compile, sampling titles

def cpu_has_bf16():
    """AVX-512 BF16 or AMX makes bf16 matmuls faster than fp32 on a CPU (measured ~1.5x per step)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def keep_freed_memory():
    """Linux (glibc) only: keep memory the process frees for its next allocations instead of giving it back
    to the kernel. A training step frees and allocates the same activations every step; by default glibc
    returns large blocks (and the top of its heap) to the kernel, and the next step takes a page fault for
    every 4 KiB it touches again: 5,000-29,000 faults, 9-50 ms of kernel time per step of the 4L/192d model
    on CPU, none with this. Returns whether the setting took (False elsewhere, e.g. macOS or musl)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded into this process
    except (OSError, AttributeError, TypeError):  # no mallopt (macOS), no CDLL(None) (Windows)
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    # blocks up to 32 MiB (glibc's largest allowed) from the reusable heap; give memory back only past 1 GiB
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


def autocast(device, amp):
    """bf16 autocast on CUDA or CPU when amp is on: matmuls in bf16, reductions and the loss in fp32."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device == "cuda" else "cpu", dtype=torch.bfloat16)


def compile_model(model, device):
    """torch.compile(model); on CPU its random numbers (dropout's) come from PyTorch's own generator, and
    its training steps repeat bit for bit."""
    if device == "cpu":
        # By default the compiler makes its own random numbers, on CPU one Philox hash per element, unvectorised:
        # with nn.Dropout the kernel holding them took ~97 ms of a compiled 4L/192d step. fallback_random calls
        # PyTorch's generator instead (dropout()'s words: ~13 ms), so a compiled model also draws the very same
        # dropout masks as the eager one. (A process-wide setting.)
        torch._inductor.config.fallback_random = True
        # The embeddings' backward, compiled, adds gradient rows from all threads with atomic adds: the order
        # of the additions, and so the last bits of the gradient, change from run to run (two runs of the
        # same command ended 0.006 nats apart after 108 steps). In deterministic mode the compiler calls
        # PyTorch's sorted index_put instead, ~0.5 ms a step. (Process-wide too; warn_only: an operation
        # with no deterministic version warns rather than fails.)
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.compile(model)


def maybe_compile(model, want, device, batch_size, block_size, amp):
    """torch.compile and run one forward+backward to build the graphs; fall back to eager if it fails."""
    if want is None:  # compile needs a C++ compiler on CPU; MPS support is recent and patchy
        want = device == "cuda" or (device == "cpu" and any(map(shutil.which, ("c++", "g++", "clang++"))))
    if not want:
        return model, False
    compiled = compile_model(model, device)
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


@torch.no_grad()
def sample_titles(model, tokenizer, n, device, prompt="", temperature=1.0, top_k=None, max_tokens=48):
    """n titles generated after <eos> (+ an optional prompt), each cut at the next <eos>."""
    start = [tokenizer.eos_id] + tokenizer.encode(prompt)
    idx = torch.tensor([start] * n, dtype=torch.long, device=device)
    out = model.generate(idx, max_tokens, temperature=temperature, top_k=top_k)[:, len(start):].tolist()
    titles = []
    for ids in out:
        ids = ids[:ids.index(tokenizer.eos_id)] if tokenizer.eos_id in ids else ids
        titles.append(prompt + tokenizer.decode(ids))
    return titles


# -----------------------------------------------------------------------------
# benchmark: forward + backward throughput

SHAPES = {  # the study's two small shapes (steps 6 and 5), vocab 4000, block 64
    "2.56M": GPTConfig(vocab_size=4000, block_size=64, n_layer=4, n_head=3, d_model=192),
    "12M": GPTConfig(vocab_size=4000, block_size=64, n_layer=6, n_head=6, d_model=384),
}


def bench_one(config, batch_size, compile, dtype, steps, device, opt=None):
    """Forward+backward tokens/s of one (shape, compile, dtype) setting on random tokens: the median
    step and the fastest step (the fastest is the one least disturbed by other work on the machine).
    With opt (e.g. "adamw", "asam") each step is a whole bare training step: forward, backward (twice
    for SAM/ASAM), clip, optimizer step; train.py's tokens/s compares against this."""
    import optim  # only the benchmark needs it
    torch.manual_seed(1337)
    model = GPT(config).to(device)
    runner = compile_model(model, device) if compile else model
    optimizer = optim.build_optimizer(opt, model, lr=1e-4, weight_decay=0.01) if opt else None
    B, T = batch_size, config.block_size
    x = torch.randint(config.vocab_size, (B, T), device=device)
    y = torch.randint(config.vocab_size, (B, T), device=device)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=(dtype == "bf16"))

    def step():
        with autocast:
            _, loss = runner(x, y)
        loss.backward()
        if opt in ("sam", "asam"):
            optimizer.first_step(zero_grad=True)
            with autocast:
                _, loss = runner(x, y)
            loss.backward()
        if optimizer is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if opt in ("sam", "asam"):
                optimizer.second_step()
            else:
                optimizer.step()
        loss.item()
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        elif device == "mps":
            torch.mps.synchronize()

    t0 = time.perf_counter()
    step()  # the first call compiles (when compiling) and warms up the allocator
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    return B * T / times[len(times) // 2], B * T / times[0], warmup_s


def main():
    parser = argparse.ArgumentParser(description="GPT model; --bench measures training throughput.")
    parser.add_argument("--bench", action=argparse.BooleanOptionalAction, default=False,
                        help="time forward+backward (default: off)")
    parser.add_argument("--shape", choices=["all", *SHAPES], default="all", help="model shape (default: all)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="only compiled (--compile) or only eager (--no-compile) (default: both)")
    parser.add_argument("--dtype", choices=["all", "fp32", "bf16"], default="all",
                        help="fp32, or bf16 autocast (default: all)")
    parser.add_argument("--batch_size", type=int, default=64, help="sequences per batch (default: 64)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting (default: 5)")
    parser.add_argument("--opt", choices=["sgd", "adamw", "sam", "asam", "muon"], default=None,
                        help="time whole training steps with this optimizer (default: forward+backward only)")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout of the model (default: 0.0)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads, 0 = torch's choice (default: 0)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                        help="auto prefers cuda, then mps, then cpu (default: auto)")
    args = parser.parse_args()
    if not args.bench:
        parser.error("nothing to do: pass --bench")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if device == "cpu":
        keep_freed_memory()  # as train.py does
    shapes = list(SHAPES) if args.shape == "all" else [args.shape]
    compiles = [False, True] if args.compile is None else [args.compile]
    dtypes = ["fp32", "bf16"] if args.dtype == "all" else [args.dtype]
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size} x block 64, {args.steps} timed steps, dropout {args.dropout}, "
          f"{'whole ' + args.opt + ' steps' if args.opt else 'forward+backward'}")
    for name in shapes:
        config = dataclasses.replace(SHAPES[name], dropout=args.dropout)
        n = GPT(config).num_params()
        for compile in compiles:
            for dtype in dtypes:
                median, best, warmup_s = bench_one(config, args.batch_size, compile, dtype, args.steps, device,
                                                   args.opt)
                print(f"{name:>6} ({n:,} params)  {'compiled' if compile else 'eager':>8}  {dtype}  "
                      f"{median:9,.0f} tokens/s median, {best:9,.0f} best  (first step {warmup_s:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
