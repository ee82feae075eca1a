"""
dataset.py: the data and the metric, one home for every script.

A titles file (UTF-8, one title per line) -> train / validation / test titles -> a tokenizer trained
on the training titles -> one token stream per split -> batches of windows. The metric (the one README's
study used): the summed cross-entropy (nats) of every token of a split, divided by the characters of
"<eos>".join(titles) + "<eos>" (<eos> counts as 5). Dividing by characters, not tokens, lets models with
different tokenizers compare.

    titles = read_titles("data/hn_titles.txt", limit=120_000)
    train, val, test = split_titles(titles, 100_000, 0.1, 20_000)
    nats_per_char = stream_nats(model, title_stream(tok, val), 64, 64, "cpu") / text_chars(val)
"""

import hashlib
import math
import os
import time

import torch
from tqdm import tqdm

from bpe import Tokenizer
from common import ConfigError


# ----------------------------------------------------------------------------------------------
# titles and the split

def read_titles(path, limit=None):
    """The non-blank lines of a UTF-8 file, each stripped; only the first `limit` titles are read.

    A byte-order mark at the start of the file (Windows editors write one) is the encoding's marker,
    not part of the first title.
    """
    if os.path.isdir(path):
        raise ConfigError(f"--data {path} is a folder; pass --data FILE, a text file with one title per line")
    if not os.path.isfile(path):
        hint = " run `make data` to download the study's corpus, or" if path == "data/hn_titles.txt" else ""
        raise ConfigError(f"data file {path} not found:{hint} pass --data FILE with one title per line")
    titles = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
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

    >>> split_titles(list("abcdefghijkl"), 10, 0.2, 5)
    (['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'], ['i', 'j'], ['k', 'l'])
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

    >>> text_chars(["ab", "c"])
    13
    """
    return sum(len(t) for t in titles) + 5 * len(titles)


def titles_sha256(titles):
    """The data's fingerprint, kept in the log and the checkpoint: resume and evaluate check it."""
    return hashlib.sha256("\n".join(titles).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------
# the tokenizer and the token streams

def get_tokenizer(train_titles, vocab_size, cache_dir, say=print):
    """Train a BPE on the training titles, or load it from a cache keyed by (titles, vocab size)."""
    h = hashlib.sha256(f"bpe v1 vocab={vocab_size}\n".encode())
    for t in train_titles:
        h.update(t.encode() + b"\n")
    path = os.path.join(cache_dir, f"bpe-{vocab_size}-{h.hexdigest()[:16]}.json")
    if os.path.exists(path):
        try:
            tok = Tokenizer.load(path)
            if tok.vocab_size == vocab_size:
                return tok, path
            problem = f"it has {tok.vocab_size:,} tokens, not {vocab_size:,}"
        except ValueError as e:
            problem = str(e)
        # a cache entry overwritten or cut short: it is only a cache, so it is rebuilt, not fatal
        say(f"the cached tokenizer {path} is unusable ({problem}); training it again")
    say(f"training a {vocab_size:,}-token BPE on {len(train_titles):,} titles (cached in {cache_dir})...")
    t0 = time.time()
    try:
        tok = Tokenizer.train(train_titles, vocab_size)
    except ValueError as e:  # too few titles for the vocabulary
        raise ConfigError(f"--vocab_size {vocab_size} cannot be trained on {len(train_titles):,} training "
                          f"titles: {e}") from None
    say(f"  done in {time.time() - t0:.1f} s")
    os.makedirs(cache_dir, exist_ok=True)
    tok.save(path)
    return tok, path


def title_stream(tokenizer, titles):
    """[<eos>] + each title's ids followed by <eos>: every title token has an <eos>-led context."""
    return torch.tensor([tokenizer.eos_id] + tokenizer.encode_titles(titles), dtype=torch.long)


# ----------------------------------------------------------------------------------------------
# batches: non-overlapping windows of the training stream, shuffled once per epoch

def epoch_order(n_windows, seed, epoch):
    """A shuffled order of the training windows that depends only on (seed, epoch): exact resume."""
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    return torch.randperm(n_windows, generator=g)


def get_batch(stream, order, i, batch_size, block_size):
    """Batch i of an epoch: windows order[i*B : (i+1)*B] of the stream; y is x shifted by one token.

    >>> x, y = get_batch(torch.arange(10), torch.tensor([1, 0]), 0, 2, 4)
    >>> x.tolist(), y.tolist()
    ([[4, 5, 6, 7], [0, 1, 2, 3]], [[5, 6, 7, 8], [1, 2, 3, 4]])
    """
    starts = order[i * batch_size:(i + 1) * batch_size] * block_size         # (B,)
    idx = starts[:, None] + torch.arange(block_size + 1)                      # (B, T+1)
    w = stream[idx]                                                           # (B, T+1)
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()                      # (B, T), (B, T)


def train_batches(stream, block_size, batch_size, seed, start_step=0, offsets=False):
    """The global training batches from step start_step on, epoch after epoch: each epoch a fresh order of
    the stream's windows (epoch_order), cut into batches (get_batch); the windows left over at the end of an
    epoch, fewer than a batch, are left out of it (the next epoch shuffles all windows again).

    offsets: from the second epoch on, the windows start a random 0..block_size-1 tokens later (drawn from
    seed and epoch), so a title cut by a window's edge in one epoch is read whole in another: the same
    tokens, other windows, a cheap augmentation for many epochs (NOTES.md, "window offsets")."""
    n_windows = (len(stream) - 1) // block_size
    steps_per_epoch = n_windows // batch_size
    epoch, first = divmod(start_step, steps_per_epoch)
    while True:
        g = torch.Generator().manual_seed(seed * 7919 + epoch)  # not epoch_order's seed (but at --seed 0)
        shift = int(torch.randint(block_size, (1,), generator=g)) if offsets and epoch > 0 else 0
        if (len(stream) - 1 - shift) // block_size < steps_per_epoch * batch_size:
            shift = 0  # the shifted stream would hold one batch fewer: keep this epoch's cuts
        order = epoch_order((len(stream) - 1 - shift) // block_size, seed, epoch)
        for i in range(first, steps_per_epoch):
            yield get_batch(stream[shift:], order, i, batch_size, block_size)  # (B, T), (B, T)
        epoch, first = epoch + 1, 0


# ----------------------------------------------------------------------------------------------
# the metric: every token of a stream scored exactly once

@torch.no_grad()
def stream_nats(model, stream, block_size, batch_size, device, shard=(0, 1), progress=False):
    """Summed cross-entropy (nats) of stream[1:], each token given what precedes it within its window.

    Windows of block_size targets tile the stream; the last one is padded with target -1 (not scored)
    and the last batch with all-padding rows, so every batch has one shape (no recompiles).
    shard=(rank, world) scores only batches rank, rank + world, ...: the world's sums add up to the total.
    """
    was_training = model.training
    model.eval()
    n_pred = len(stream) - 1
    n_batches = math.ceil(math.ceil(n_pred / block_size) / batch_size)
    x = torch.zeros(n_batches * batch_size * block_size, dtype=torch.long)
    y = torch.full_like(x, -1)
    x[:n_pred], y[:n_pred] = stream[:-1], stream[1:]
    x, y = x.view(-1, batch_size, block_size), y.view(-1, batch_size, block_size)  # (nb, B, T)
    rank, world = shard
    total = 0.0
    for b in tqdm(range(rank, n_batches, world), desc="scoring", disable=not progress, leave=False):
        _, loss = model(x[b].to(device), y[b].to(device))  # fp32, unless the caller autocasts around it
        total += loss.float().item() * (y[b] != -1).sum().item()            # mean -> sum
    model.train(was_training)
    return total
