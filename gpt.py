"""
gpt.py: a compact GPT-2, the model a learner reads first.

Token and learned position embeddings, then n_layer pre-LayerNorm transformer blocks (causal
self-attention, then a GELU MLP of 4x width), a final LayerNorm and an output head that shares its
weights with the token embedding. Options beyond GPT-2: rotary positions, title-local attention, a
gate on each attention head's output and a squared-ReLU MLP. Ideas from Radford et al. 2019 (GPT-2) and
Vaswani et al. 2017 (attention); GPT-2's parameter names (wte, wpe, c_attn, c_proj, c_fc, ln_f, lm_head).

    model = GPT(GPTConfig(vocab_size=4000, block_size=64, n_layer=4, n_head=3, d_model=192))
    logits, loss = model(idx, targets)      # (B, T) ids -> (B, T, vocab) logits, mean cross-entropy
    model.generate(idx, max_new_tokens=20)  # sample a continuation

The model is written for reading: attention is the formula, dropout is nn.Dropout. speed.py swaps in
faster equivalents per device (a fused attention kernel on GPUs, cheaper dropout masks on CPU) and
bench.py times it: `python bench.py model`.
"""

import math
from dataclasses import dataclass

import torch
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
    rope: bool = False      # rotary position embeddings (Su et al. 2021) instead of the learned table wpe
    within_title: bool = False  # attend only within a title; positions restart at every title
    eos_id: int = -1        # the token between titles, <eos> t1 <eos> t2 <eos> (needed by within_title)
    attn_gate: bool = False  # scale each head's output by a sigmoid gate read from the attention's input
    relu2: bool = False     # the MLP's nonlinearity: relu(x)^2 (Primer) instead of GELU

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head}): "
                             f"pick an n_head that divides it.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.rope and (self.d_model // self.n_head) % 2:
            raise ValueError(f"rope turns pairs of channels: the head size d_model / n_head = "
                             f"{self.d_model // self.n_head} must be even.")
        if self.within_title and not 0 <= self.eos_id < self.vocab_size:
            raise ValueError(f"within_title needs the <eos> id that starts each title, got eos_id {self.eos_id}.")


# -----------------------------------------------------------------------------
# the blocks

class ScaledDotProductAttention(nn.Module):
    """softmax(q k^T / sqrt(d_k)) v (Vaswani et al. 2017, eq. 1), dropout on the attention weights.
    q, k, v: (B, nh, T, hs) -> (B, nh, T, hs). `mask` says which positions each position may attend
    to (True: may); by default GPT's causal mask, each position itself and the positions before it."""

    def __init__(self, dropout):
        super().__init__()
        self.dropout = nn.Dropout(dropout)

    def forward(self, q, k, v, mask=None):
        T, hs = q.size(-2), q.size(-1)
        if mask is None:
            mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()  # (T, T): True on and below the diagonal
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))               # (B, nh, T, T)
        att = F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
        return self.dropout(att) @ v                                          # (B, nh, T, hs)


def rotate(x, pos, base=10000.0):
    """Rotary position embedding (Su et al. 2021): turn each pair of channels (i, i + hs/2) of x by the angle
    pos * base^(-2i/hs). Rotating both q and k makes q . k depend on their positions only through the
    difference. x: (B, nh, T, hs), pos: (B or 1, T) -> (B, nh, T, hs)."""
    hs = x.size(-1)
    freq = base ** (-torch.arange(0, hs // 2, device=x.device, dtype=torch.float32) * 2 / hs)  # (hs/2,)
    angle = pos[..., None].float() * freq                         # (B, T, hs/2)
    cos, sin = angle.cos()[:, None], angle.sin()[:, None]         # (B, 1, T, hs/2): the same for every head
    x1, x2 = x.float().chunk(2, dim=-1)                           # 2 x (B, nh, T, hs/2)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.n_head, self.rope = config.n_head, config.rope
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.attend = ScaledDotProductAttention(config.dropout)
        # output gate (Qiu et al. 2025): per token, each head's output times sigmoid(x W_g + b_g), one number
        # per head, x the attention's (normalised) input; a head can say "nothing for this token" instead of
        # spending its attention somewhere. At init the gates are ~0.5: every head starts at half its output
        self.gate = nn.Linear(config.d_model, config.n_head, bias=config.bias) if config.attn_gate else None
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, pos, mask=None):
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)      # 3 x (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)      # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)      # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)      # (B, nh, T, hs)
        if self.rope:
            q, k = rotate(q, pos), rotate(k, pos)     # positions enter here instead of through wpe
        y = self.attend(q, k, v, mask)                # (B, nh, T, hs)
        if self.gate is not None:
            g = torch.sigmoid(self.gate(x))           # (B, T, nh): one gate a head and token
            y = y * g.transpose(1, 2)[..., None]      # (B, nh, T, hs) * (B, nh, T, 1)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.d_model, 4 * config.d_model, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.d_model, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.relu2 = config.relu2

    def forward(self, x):
        h = self.c_fc(x)                              # (B, T, 4C)
        # GELU, exact (erf); GPT-2 used the tanh approximation, which differs by < 1e-3. Or the squared ReLU
        # that So et al. 2021 (Primer) found by search: zero below 0, then growing quadratically
        h = F.relu(h).square() if self.relu2 else F.gelu(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, pos, mask=None):
        # pre-LayerNorm: each sub-layer reads a normalised copy and adds its output to the residual stream
        x = x + self.attn(self.ln_1(x), pos, mask)
        x = x + self.mlp(self.ln_2(x))
        return x


# -----------------------------------------------------------------------------
# the model

class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)   # token embedding
        if not config.rope:
            self.wpe = nn.Embedding(config.block_size, config.d_model)   # learned position embedding
        self.drop = nn.Dropout(config.dropout)
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

    def flops_per_token(self):
        """Floating-point operations to train on one token (forward + backward): 6 per parameter that
        multiplies an activation, plus attention's q k^T and att v, 12 L T C (PaLM, Chowdhery et al. 2022,
        app. B; Kaplan et al. 2020 count only q k^T, half of it). The embedding lookup is not a multiply, the
        tied head is."""
        c = self.config
        n = self.num_params() - (0 if c.rope else c.block_size * c.d_model)
        return 6 * n + 12 * c.n_layer * c.block_size * c.d_model

    def forward(self, idx, targets=None):
        """idx (B, T) token ids -> logits (B, T, vocab) and, when targets (B, T) are given, the mean
        cross-entropy over targets that are not -1 (-1 marks padding, which is not scored)."""
        self._check_ids(idx)
        B, T = idx.shape
        pos, mask = self.positions_and_mask(idx)                   # (1 or B, T), None or (B, 1, T, T)
        x = self.wte(idx)                                          # (B, T, C)
        if not self.config.rope:
            x = x + self.wpe(pos)                                  # (B, T, C)
        x = self.drop(x)
        for block in self.h:
            x = block(x, pos, mask)                                # (B, T, C)
        logits = self.lm_head(self.ln_f(x))                        # (B, T, vocab)
        loss = None
        if targets is not None:
            if targets.shape != idx.shape:
                raise ValueError(f"targets have shape {tuple(targets.shape)} but idx has {tuple(idx.shape)}; "
                                 f"they must match.")
            loss = F.cross_entropy(logits.view(B * T, -1), targets.view(B * T), ignore_index=-1)
        return logits, loss

    def positions_and_mask(self, idx):
        """Each token's position, and which tokens it may attend to (None: GPT's causal mask).

        The stream packs several titles into a window: <eos> t1 <eos> t2 <eos> ... With within_title each
        <eos> is position 0 of the title after it: positions count from there, and a token attends only to
        the earlier tokens of its own title (its <eos> included), never into the title before it.

        >>> m = GPT(GPTConfig(vocab_size=9, block_size=6, n_layer=1, n_head=1, d_model=8, within_title=True, eos_id=0))
        >>> pos, mask = m.positions_and_mask(torch.tensor([[5, 0, 6, 7, 0, 8]]))  # 5: the end of a cut title
        >>> pos.tolist(), mask[0, 0, 3].int().tolist()  # what token 7 (t = 3) may attend to: its title's first 3
        ([[0, 0, 1, 2, 0, 1]], [0, 1, 1, 1, 0, 0])
        """
        T = idx.size(1)
        t = torch.arange(T, device=idx.device)                              # (T,)
        if not self.config.within_title:
            return t[None], None
        is_eos = idx == self.config.eos_id                                  # (B, T)
        start = torch.where(is_eos, t, 0).cummax(dim=1).values              # (B, T): where each token's title began
        title = is_eos.cumsum(dim=1)                                        # (B, T): which title a token is in
        mask = (title[:, :, None] == title[:, None, :]) & (t[:, None] >= t)  # (B, T, T): same title, not later
        return t - start, mask[:, None]                                     # (B, T), (B, 1, T, T)

    def _check_ids(self, idx):
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"idx must be a (batch, time) tensor of integer token ids, "
                             f"got shape {tuple(idx.shape)} and dtype {idx.dtype}.")
        if idx.size(1) > self.config.block_size:
            raise ValueError(f"sequence of length {idx.size(1)} is longer than block_size "
                             f"{self.config.block_size}; crop it or build the model with a larger block_size.")
        # The range check reads the data, so it is skipped while torch.compile traces the model (inside a
        # graph it would break the graph, every step). train.py's ids come from its tokenizer, so they are
        # in range by construction; eager runs keep the check: one min/max over B*T ids.
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
# sampling titles

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


def visible(text):
    """text with control characters written as escapes, so a printed sample cannot move the cursor
    or ring the terminal's bell.

    >>> visible("tab\\there, bell\\x07, é")
    'tab\\\\there, bell\\\\x07, é'
    """
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)
