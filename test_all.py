"""
nanorun's tests: known answers, hand-worked examples, reference implementations and invariants.

    python -m pytest -q test_all.py        # or: make test

Every test builds its own tiny data under pytest's tmp_path; none needs a GPU or a download. The
PostgreSQL test starts its own server and skips where the server programs are missing
(apt-get install postgresql).
"""

import argparse
import copy
import dataclasses
import doctest
import glob
import itertools
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter

import optuna
import pytest
import torch
import torch.nn.functional as F
import torch.utils.flop_counter

import bpe
import checkpoint
import dataset
import evaluate
import gpt
import optim
import plot_logs
import speed
import train
import tune
from bpe import Tokenizer
from gpt import GPT, MLP, GPTConfig

HERE = os.path.dirname(os.path.abspath(__file__))
# Models this small only lose from threads: on a busy 2-core machine 2 threads were ~5x slower.
torch.set_num_threads(1)


# ==================================================================================================
# bpe.py: the tokenizer
# ==================================================================================================

HARD_STRINGS = [
    "",
    "Show HN: I built a tokenizer in 200 lines",
    "emoji 🚀🔥 and a family 👩‍👩‍👧 with zero-width joiners",
    "日本語のタイトル、中文标题，한국어 제목",
    "עברית مرحبا بالعالم",  # right to left
    "e\u0301 n\u0303 a\u030a\u0323",  # combining marks
    "\x00\x01\x07\t\n\r\x1b\x7f control characters",
    "a literal <eos> inside a title, and <eos><eos> at the end<eos>",
    "   leading and trailing spaces   ",
    "line\u2028separator, nbsp\u00a0, tab\tand\n\nnewlines",
    "it's they’re WE'LL don't 'quoted' ’curly’",
    "numbers 1 12 123 1234 12345678901234567890, ½ ², and snake_case__names",
]

TEXTBOOK = "aaabdaaabac"  # the classic BPE example: aa -> Z, ab -> Y, ZY -> X


def small_corpus():
    """A few hundred titles made of repeated words, punctuation and every kind of hard string."""
    rng = random.Random(0)
    words = ["the", "The", "BPE", "tokenizer", "Show", "HN", "Ask", "rust", "python", "2024", "it's", "日本", "🚀"]
    titles = []
    for _ in range(300):
        title = " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))
        titles.append(title + rng.choice(["", "?", "!", ":"]))
    return titles + HARD_STRINGS


def ranks_of(merges):
    """{pair: merge id}, what the chunk encoders take."""
    return {pair: 256 + r for r, pair in enumerate(merges)}


def basic_encode(merges, text):
    """encode() with the textbook chunk encoder: the reference for the fast one."""
    ranks = ranks_of(merges)
    return [i for chunk in bpe.split_chunks(text) for i in bpe.encode_chunk_basic(list(chunk.encode("utf-8")), ranks)]


# -----------------------------------------------------------------------------
# small helpers, exactly as their docstrings say


def test_get_pairs_and_merge():
    assert bpe.get_pairs([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert bpe.get_pairs([7]) == {} and bpe.get_pairs([]) == {}
    assert bpe.merge([1, 2, 3, 1, 2], (1, 2), 4) == [4, 3, 4]
    assert bpe.merge([5, 5, 5], (5, 5), 6) == [6, 5]
    assert bpe.merge([5, 5, 5, 5], (5, 5), 6) == [6, 6]
    assert bpe.merge([1, 3], (1, 2), 4) == [1, 3]


def test_split_chunks():
    assert bpe.split_chunks("Show HN: it's 2024!") == ["Show", " HN", ":", " it", "'s", " 2024", "!"]
    assert bpe.split_chunks("don’t  stop") == ["don", "’t", " ", " stop"]  # the last space joins the word
    for s in HARD_STRINGS:
        assert "".join(bpe.split_chunks(s)) == s  # pre-tokenization never loses a character


# -----------------------------------------------------------------------------
# training: a textbook example by hand, then the fast trainer against the basic one


def test_textbook_merges_by_hand():
    # a=97 b=98 c=99 d=100. Counts: aa 4, ab 2, the rest 1 -> aa becomes 256: [256 97 98 100 256 97 98 97 99].
    # Now (97, 98) and (256, 97) both occur twice; the tie goes to the smaller pair: ab becomes 257:
    # [256 257 100 256 257 97 99]. Now (256, 257) occurs twice: it becomes 258 ("aaab").
    tok = Tokenizer.train([TEXTBOOK], vocab_size=256 + 3 + 1)
    assert tok.merges == [(97, 97), (97, 98), (256, 257)]
    assert tok.encode(TEXTBOOK) == [258, 100, 258, 97, 99]
    assert tok.pieces([256, 257, 258]) == ["aa", "ab", "aaab"]
    assert tok.vocab_size == 260 and tok.eos_id == 259
    assert bpe.train_merges_basic({TEXTBOOK: 1}, 3) == tok.merges
    assert bpe.train_merges({"aaab": 1, "ab": 2}, 2) == [(97, 98), (97, 97)]


@pytest.mark.parametrize(
    "texts",
    [
        [TEXTBOOK],
        ["abab cdcd abab cdcd", "ab cd ab cd"],  # many ties
        ["aaaa aaa aa a", "aaaaaaa"],  # overlapping pairs
        ["".join(random.Random(seed).choice("abc ") for _ in range(400)) for seed in range(3)],
        ["日本語 日本 中文 한국어 한국 🚀🚀 🚀", "עברית עברית e\u0301e\u0301"],  # multibyte
        small_corpus(),
    ],
)
def test_fast_training_matches_basic_training(texts):
    chunk_counts = Counter(chunk for text in texts for chunk in bpe.split_chunks(text))
    reference = bpe.train_merges_basic(chunk_counts, 60)
    assert bpe.train_merges(chunk_counts, 60) == reference
    tok = Tokenizer.train(texts, vocab_size=256 + len(reference) + 1)  # train_merges with the collector paused
    assert tok.merges == reference
    for text in texts + HARD_STRINGS + ["abcabc aaab unseen words"]:
        assert tok.encode(text) == basic_encode(reference, text)


def test_merges_do_not_depend_on_text_order():
    # chunks are counted once with their frequency, so the order they were seen in must not matter
    texts = small_corpus()
    shuffled = texts[:]
    random.Random(1).shuffle(shuffled)
    assert Tokenizer.train(texts, 320).merges == Tokenizer.train(shuffled, 320).merges


def test_gc_paused_while_merges_are_learned_then_restored():
    import gc  # only this test touches the collector

    was_enabled = gc.isenabled()
    try:
        for before in (True, False):
            gc.enable() if before else gc.disable()
            with pytest.raises(KeyError), bpe.gc_paused():
                assert not gc.isenabled()
                raise KeyError  # an error inside the block restores the setting too
            assert gc.isenabled() == before
    finally:
        gc.enable() if was_enabled else gc.disable()


# -----------------------------------------------------------------------------
# encoding and decoding


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(small_corpus(), vocab_size=400)


def runs_tokenizer():
    """Learned from runs of a's and a few strings of a and b: merges "aa", "aaaa", ..., "ab", "aab", ..."""
    rng = random.Random(0)
    texts = ["a" * k for k in range(1, 65)] + ["".join(rng.choice("aab") for _ in range(40)) for _ in range(20)]
    return Tokenizer.train(texts, vocab_size=300)


def test_fast_chunk_encoders_match_the_basic_one(tok):
    hard = [list(chunk.encode("utf-8")) for s in HARD_STRINGS for chunk in bpe.split_chunks(s)]
    runs = runs_tokenizer()
    assert {"aa", "aaaa", "aaaaaaaa", "ab"} <= set(runs.pieces(range(256, runs.vocab_size - 1)))
    # Small alphabets make many overlapping pairs (in "aaa" the left "aa" merges first), and long runs
    # of one letter make them everywhere: where a careless encoder goes wrong.
    rng = random.Random(0)
    strings = ["a" * n for n in range(200)] + ["ab" * 100, "aab" * 70, "b" + "a" * 300]
    for alphabet in ("ab", "aab", "abc"):
        strings += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(100)]
    cases = [(tok, ids) for ids in hard] + [(runs, list(s.encode("utf-8"))) for s in strings]
    assert max(len(ids) for _, ids in cases) > bpe.LONG_CHUNK  # encode_chunk takes both of its paths
    for t, ids in cases:
        ranks = ranks_of(t.merges)
        expected = bpe.encode_chunk_basic(ids, ranks)
        assert bpe.encode_chunk(ids, ranks) == expected
        assert bpe.encode_long_chunk(ids, ranks) == expected  # the long path, on short chunks too


def test_a_long_chunk_encodes_in_about_linear_time():
    # One chunk of one letter, merged as "aa", "aaaa", ...: an encoder that rescans the chunk for every
    # single merge takes ~n^2 steps (the old one took 16 s for 40,000 a's, minutes for 200,000). Four times
    # the letters must take about four times the CPU (quadratic: sixteen); the best of three runs of each
    # counts this process's CPU time only, so other work on the machine hardly moves the ratio.
    tok = runs_tokenizer()

    def cpu_seconds(n):
        best = math.inf
        for _ in range(3):
            t0 = time.process_time()
            ids = tok.encode("a" * n)
            best = min(best, time.process_time() - t0)
        assert tok.decode(ids) == "a" * n and len(ids) < n / 16  # the long merges were used
        return best
    ratio = cpu_seconds(200_000) / cpu_seconds(50_000)
    assert ratio < 8, f"4x the letters took {ratio:.1f}x the CPU: is encoding quadratic again?"


def test_round_trip_hard_strings(tok):
    for s in HARD_STRINGS:
        ids = tok.encode(s)
        assert tok.decode(ids) == s
        assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.encode("") == [] and tok.decode([]) == ""


def test_eos_is_never_parsed_from_text(tok):
    ids = tok.encode("a <eos> b")
    assert tok.eos_id not in ids
    assert tok.decode(ids) == "a <eos> b"
    assert tok.decode([tok.eos_id]) == "<eos>"  # the eos id decodes to its text


def test_encode_titles(tok):
    titles = ["Show HN: x", "", "it's <eos>"]
    ids = tok.encode_titles(titles)
    assert ids == tok.encode(titles[0]) + [tok.eos_id] + [tok.eos_id] + tok.encode(titles[2]) + [tok.eos_id]
    assert tok.decode(ids) == "<eos>".join(titles) + "<eos>"  # the stream the metric counts characters of


def test_decode_partial_utf8_does_not_crash(tok):
    b = "日".encode("utf-8")  # 3 bytes, ids 0..255 are the bytes themselves
    assert tok.decode([b[0], b[1]]) == "\ufffd"
    assert tok.decode([b[0], tok.eos_id, b[0], b[1], b[2]]) == "\ufffd<eos>日"
    assert tok.decode(list(b)) == "日"


def test_specials_come_after_bytes_and_merges():
    texts = small_corpus()
    tok = Tokenizer.train(texts, vocab_size=300, specials=("<pad>", "<eos>", "<unk>"))
    assert len(tok.merges) == 300 - 256 - 3
    assert tok.eos_id == 256 + len(tok.merges) + 1 and tok.vocab_size == 300
    assert tok.decode([298, 299, 297]) == "<eos><unk><pad>"
    assert tok.merges == Tokenizer.train(texts, vocab_size=298).merges  # specials do not change merges


# -----------------------------------------------------------------------------
# saving and loading


def test_save_load_same_encodings(tok, tmp_path):
    path = tmp_path / "tok.json"
    tok.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.merges == tok.merges and loaded.specials == tok.specials
    assert loaded.vocab_size == tok.vocab_size and loaded.eos_id == tok.eos_id
    for s in HARD_STRINGS + small_corpus()[:50]:
        assert loaded.encode(s) == tok.encode(s)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok.json"]  # no temporary file left behind
    d = json.loads(path.read_text(encoding="utf-8"))
    assert d["format"] == "nanorun-bpe" and d["version"] == 1 and len(d["merges"]) == len(tok.merges)


def test_determinism_byte_identical_files(tmp_path):
    texts = small_corpus()
    Tokenizer.train(texts, 350).save(tmp_path / "a.json")
    # another process, with another hash seed (so other set and dict orders): the same bytes
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import test_all; "
            f"test_all.Tokenizer.train(test_all.small_corpus(), 350).save({str(tmp_path / 'b.json')!r})")
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONHASHSEED="12345"))
    Tokenizer.load(tmp_path / "a.json").save(tmp_path / "c.json")
    a = (tmp_path / "a.json").read_bytes()
    assert a == (tmp_path / "b.json").read_bytes() == (tmp_path / "c.json").read_bytes()


# -----------------------------------------------------------------------------
# clear errors


def test_vocab_too_small():
    with pytest.raises(ValueError, match="vocab_size 257 is too small.*>= 258"):
        Tokenizer.train(["hello world"], vocab_size=257)
    with pytest.raises(ValueError, match=">= 260"):
        Tokenizer.train(["hello world"], vocab_size=259, specials=("<pad>", "<eos>", "<unk>"))
    assert Tokenizer.train(["hello world"], vocab_size=258).vocab_size == 258  # one merge is enough


def test_empty_or_too_small_training_set():
    for texts in ([], [""], iter([])):
        with pytest.raises(ValueError, match="training set is empty"):
            Tokenizer.train(texts, vocab_size=300)
    with pytest.raises(ValueError, match="not one string"):
        Tokenizer.train("a title", vocab_size=300)
    with pytest.raises(ValueError, match="only have enough adjacent pairs for 2 merges"):
        Tokenizer.train(["abc"], vocab_size=300)


def test_bad_specials():
    with pytest.raises(ValueError, match="must include '<eos>'"):
        Tokenizer.train(["hello"], vocab_size=300, specials=("<pad>",))
    with pytest.raises(ValueError, match="distinct"):
        Tokenizer.train(["hello"], vocab_size=300, specials=("<eos>", "<eos>"))


def test_decode_out_of_range(tok):
    for bad in (tok.vocab_size, -1):
        with pytest.raises(ValueError, match=f"token id {bad} is out of range"):
            tok.decode([1, bad])


def test_bad_tokenizer_files(tok, tmp_path):
    path = tmp_path / "tok.json"
    tok.save(path)
    good = json.loads(path.read_text(encoding="utf-8"))

    def write(text):
        path.write_text(text, encoding="utf-8")
        return path

    cases = [
        ('{"format": "nanorun-bpe", "vers', "not valid JSON"),
        ("[1, 2, 3]", 'it has no "format": "nanorun-bpe"'),
        (json.dumps({**good, "format": "something-else"}), 'it has no "format": "nanorun-bpe"'),
        (json.dumps({**good, "version": 2}), "format version 2, but this bpe.py reads only version 1"),
        (json.dumps({**good, "merges": [[97, 98], [300, 1]]}), "merge 1 is \\[300, 1\\]"),
        (json.dumps({**good, "merges": [[97, "b"]]}), "merge 0 is"),
        (json.dumps({**good, "specials": []}), "must include '<eos>'"),
        (json.dumps({k: v for k, v in good.items() if k != "merges"}), "lacks a 'pattern' string or a 'merges' list"),
        (json.dumps({**good, "pattern": "(unclosed"}), "its pattern: missing \\)"),
    ]
    # One sentence: the file, that it is not a tokenizer file, and why. What to do is the caller's to say
    # (a cached tokenizer can be trained again, a run's own cannot), so it names no command.
    sentence = f"^{re.escape(str(path))} is not a nanorun-bpe tokenizer file \\(.*{{}}.*\\)\\.$"
    for text, message in cases:
        with pytest.raises(ValueError, match=sentence.format(message)):
            Tokenizer.load(write(text))
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ValueError, match=sentence.format("not valid JSON: 'utf-8' codec can't decode")):
        Tokenizer.load(path)


# ==================================================================================================
# gpt.py and optim.py: the model, the optimizers, the schedules
# ==================================================================================================

# the models here are tiny: one thread is as fast as two, and a second thread stalls badly whenever
# the machine is busy with other work

TINY = GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, d_model=16)


def tiny_model(seed=0, config=TINY):
    torch.manual_seed(seed)
    return GPT(config)


def random_batch(seed, config=TINY, B=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(config.vocab_size, (B, config.block_size), generator=g)
    y = torch.randint(config.vocab_size, (B, config.block_size), generator=g)
    return x, y


# -----------------------------------------------------------------------------
# gpt.py

@pytest.mark.parametrize("vocab, block, n_layer, n_head, d_model, expected", [
    (16000, 128, 6, 8, 512, 27_172_864),   # study steps 0-4
    (4000, 64, 6, 6, 384, 12_208_128),     # step 5
    (4000, 64, 4, 3, 192, 2_560_128),      # step 6
])
def test_parameter_counts_of_the_study(vocab, block, n_layer, n_head, d_model, expected):
    config = GPTConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=n_head, d_model=d_model)
    with torch.device("meta"):  # shapes only, no memory or init time
        model = GPT(config)
    assert model.num_params() == expected
    # by hand: tied embedding V*C, positions T*C, per block 12C^2 weights + 13C biases/norms, final norm 2C
    C = d_model
    assert expected == vocab * C + block * C + n_layer * (12 * C * C + 13 * C) + 2 * C
    # training FLOPs per token: 6 per parameter that multiplies (all but the position table) + attention
    assert model.flops_per_token() == 6 * (expected - block * C) + 12 * n_layer * block * C


def test_flops_per_token_equals_the_matmul_flops_torch_counts():
    # an independent count: torch's FlopCounterMode adds up the matrix products of one forward and backward
    # pass (2 m n k each); flops_per_token's 6 per parameter also covers biases and norms, which are no products
    model = GPT(GPTConfig(vocab_size=500, block_size=32, n_layer=2, n_head=4, d_model=64))
    x, y = random_batch(0, model.config, B=2)
    with torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        _, loss = model(x, y)
        loss.backward()
    vectors = sum(p.numel() for p in model.parameters() if p.dim() == 1)
    assert counter.get_total_flops() / x.numel() == pytest.approx(model.flops_per_token() - 6 * vectors, rel=1e-3)


def test_gpt2_names_tying_and_init():
    model = GPT(GPTConfig())  # the 2.56M shape
    names = {n for n, _ in model.named_parameters()}
    for n in ["wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight",
              "h.0.ln_2.bias", "h.0.mlp.c_fc.weight", "h.3.mlp.c_proj.weight", "ln_f.weight"]:
        assert n in names
    assert model.lm_head.weight is model.wte.weight
    assert "lm_head.weight" not in names  # the tied matrix is listed (and counted) once
    assert abs(model.h[0].attn.c_attn.weight.std().item() - 0.02) < 0.001
    assert abs(model.h[1].mlp.c_proj.weight.std().item() - 0.02 / math.sqrt(2 * 4)) < 0.0005
    assert torch.all(model.h[0].mlp.c_fc.bias == 0)


def test_clear_errors_for_bad_shapes_and_ids():
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(d_model=192, n_head=5)
    model = tiny_model()
    with pytest.raises(ValueError, match="longer than block_size"):
        model(torch.zeros(1, TINY.block_size + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids must lie in"):
        model(torch.full((1, 4), TINY.vocab_size))
    with pytest.raises(ValueError, match="token ids must lie in"):
        model(torch.tensor([[0, -1, 2]]))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.zeros(1, 4))


def test_loss_is_mean_cross_entropy_over_unpadded_targets():
    model = tiny_model()
    x, y = random_batch(1)
    y[0, :5] = -1  # padding: not scored
    y[2, 7] = -1
    logits, loss = model(x, y)
    logp = torch.log_softmax(logits, dim=-1)
    keep = y != -1
    by_hand = -logp[keep].gather(1, y[keep].unsqueeze(1)).mean()
    assert torch.allclose(loss, by_hand, atol=1e-6)


def test_causality_future_tokens_never_change_past_logits():
    model = tiny_model().eval()
    x, _ = random_batch(2, B=1)
    logits, _ = model(x)
    for t in [0, 5, TINY.block_size - 1]:
        x2 = x.clone()
        x2[0, t] = (x2[0, t] + 1) % TINY.vocab_size
        logits2, _ = model(x2)
        assert torch.allclose(logits2[:, :t], logits[:, :t], atol=1e-6, rtol=0)
        assert not torch.allclose(logits2[:, t], logits[:, t])


def test_rotary_scores_depend_only_on_the_distance_between_positions():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 2, 1, 8, generator=g), torch.randn(1, 2, 1, 8, generator=g)
    score = lambda i, j: (gpt.rotate(q, torch.tensor([[i]])) * gpt.rotate(k, torch.tensor([[j]]))).sum()
    assert torch.allclose(score(7, 3), score(4, 0), atol=1e-5) and torch.allclose(score(0, 0), (q * k).sum())
    assert not torch.allclose(score(7, 3), score(3, 7), atol=1e-3)


@pytest.mark.parametrize("rope", [False, True])
def test_within_title_a_title_is_read_the_same_wherever_it_sits_in_the_window(rope):
    config = dataclasses.replace(TINY, rope=rope, within_title=True, eos_id=0)
    model = tiny_model(config=config).eval()
    title = [0, 5, 6, 7, 8]                                  # <eos> then the title's tokens
    early = torch.tensor([title + [9, 10, 0, 11, 12, 13, 14, 15, 16, 17, 18]])
    late = torch.tensor([[3, 4, 0, 21, 22, 23, 24] + title + [25, 26, 27, 28]])
    a, b = model(early)[0][0, :5], model(late)[0][0, 7:12]
    assert torch.allclose(a, b, atol=1e-5)                   # nothing before its <eos> reaches it
    plain = tiny_model(config=dataclasses.replace(config, within_title=False)).eval()
    assert not torch.allclose(plain(early)[0][0, :5], plain(late)[0][0, 7:12], atol=1e-3)


@pytest.mark.parametrize("masked", ["causal", "any mask"])
def test_written_out_attention_equals_torch_sdpa_forward_and_backward(masked):
    # the model's formula (used on CPU) against PyTorch's fused kernel (FusedAttention, used on GPUs)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, generator=g, requires_grad=True) for _ in range(3))
    mask = None if masked == "causal" else torch.rand(2, 1, 9, 9, generator=g) < 0.7
    if mask is not None:
        mask[..., 0] = True  # every row attends somewhere
    ours = gpt.ScaledDotProductAttention(0.0)(q, k, v, mask)
    theirs = speed.FusedAttention(0.0)(q, k, v, mask)
    assert torch.allclose(ours, theirs, atol=1e-6)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    ref = torch.autograd.grad(theirs.square().sum(), (q, k, v))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, ref))


def test_generate_greedy_crops_context_and_restores_mode():
    model = tiny_model()
    model.train()
    x = torch.randint(TINY.vocab_size, (2, TINY.block_size + 3), generator=torch.Generator().manual_seed(3))
    out = model.generate(x, 5, temperature=0)
    assert out.shape == (2, TINY.block_size + 3 + 5) and torch.equal(out[:, :x.size(1)], x)
    assert model.training
    # the same by hand: argmax of the last logit given the last block_size tokens
    model.eval()
    idx = x
    for _ in range(5):
        logits, _ = model(idx[:, -TINY.block_size:])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, idx)
    assert torch.equal(model.generate(x, 5, top_k=1), out)  # top_k=1 leaves one choice
    with pytest.raises(ValueError):
        model.generate(x, 1, temperature=-1.0)


def test_forward_traces_as_one_graph_under_compile():
    # backend="eager" traces with dynamo but skips code generation: fast, and fullgraph=True fails on any
    # graph break (neither the id range check nor the CPU dropout's random words may cause one)
    model = tiny_model(config=dataclasses.replace(TINY, dropout=0.3))
    assert speed.use_fast_modules(model, "cpu") == ["CpuDropout x7"]  # embeddings + 3 per block
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x, y = random_batch(4)
    torch.manual_seed(5)
    _, loss = model(x, y)
    torch.manual_seed(5)
    _, loss_c = compiled(x, y)
    assert torch.allclose(loss, loss_c, atol=1e-6)


@pytest.fixture
def process_wide_settings_restored():
    """speed.set_up_process() changes settings of the whole process: put back what it found."""
    saved = (torch._inductor.config.fallback_random, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.get_num_threads())
    yield
    torch._inductor.config.fallback_random = saved[0]
    torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
    torch.set_num_threads(saved[3])


@pytest.mark.skipif(not speed.can_compile("cpu"), reason="compiling needs a C++ compiler")
def test_compiled_model_draws_eager_masks_and_repeats_bit_for_bit(process_wide_settings_restored):
    model = tiny_model(config=dataclasses.replace(TINY, dropout=0.3))
    speed.use_fast_modules(model, "cpu")
    x, y = random_batch(4, B=64)  # 1,024 tokens over a 32-token vocabulary: every embedding row is hit often
    torch.manual_seed(5)
    _, loss = model(x, y)
    torch.set_num_threads(2)  # two threads here (the other tests run one): the race below needs them
    speed.set_up_process("cpu", compile=True)
    assert torch._inductor.config.fallback_random and torch.are_deterministic_algorithms_enabled()
    compiled = torch.compile(model)
    torch.manual_seed(5)
    _, loss_c = compiled(x, y)
    assert torch.allclose(loss, loss_c, atol=1e-5)
    assert not torch.allclose(loss, compiled(x, y)[1], atol=1e-5)  # the next call draws other masks
    # the embeddings' compiled backward would add rows from both threads with atomic adds, in an order
    # that changes from call to call; deterministic mode asks for PyTorch's sorted one instead
    grads = []
    for _ in range(4):
        torch.manual_seed(3)
        model.zero_grad(set_to_none=True)
        compiled(x, y)[1].backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert all(torch.equal(grads[0], g) for g in grads[1:])


def test_cpu_dropout_drops_a_fraction_p_of_elements_independently_and_scales_the_rest():
    dropout = speed.cpu_dropout
    torch.manual_seed(0)
    x = torch.ones(1_000_000)
    out = dropout(x, 0.0603, True)
    p = 3952 / 65536                                # 0.0603 rounded to a multiple of 1/65536
    kept = out[out != 0]
    assert torch.all(kept == kept[0]) and abs(kept[0].item() - 1 / (1 - p)) < 1e-6
    dropped = (out == 0).float()

    def within(fraction, q, n):                     # a binomial fraction within 5 standard deviations of q
        return abs(fraction - q) < 5 * (q * (1 - q) / n) ** 0.5

    for lane in dropped.view(-1, 4).mean(0).tolist():   # each of a random word's four 16-bit lanes
        assert within(lane, p, 250_000)
    assert within((dropped[1:] * dropped[:-1]).mean().item(), p * p, 999_999)  # neighbours: independent
    assert dropout(x, 0.3, False) is x and dropout(x, 0.0, True) is x
    assert set(dropout(torch.ones(8), 0.5, True).tolist()) <= {0.0, 2.0}


KEEP_FREED_MEMORY_EFFECT = """
import ctypes, speed
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
class MallInfo2(ctypes.Structure):  # glibc's mallinfo2(): hblks counts blocks held as separate mappings
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks fsmblks "
                                                "uordblks fordblks keepcost").split()]
libc.mallinfo2.restype = MallInfo2
def mapped_blocks_while_holding_8_mib():
    p = libc.malloc(8 << 20)
    n = libc.mallinfo2().hblks
    libc.free(p)
    return n
print(mapped_blocks_while_holding_8_mib(), speed.keep_freed_memory(), mapped_blocks_while_holding_8_mib())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_keep_freed_memory_serves_large_blocks_from_the_reusable_heap():
    # by default glibc maps an 8 MiB block on its own (and unmaps it when freed); after keep_freed_memory()
    # it comes from the heap, which freed blocks return to. In a fresh process: the setting is process-wide.
    out = subprocess.run([sys.executable, "-c", KEEP_FREED_MEMORY_EFFECT], cwd=HERE, capture_output=True,
                         text=True, check=True).stdout.split()
    before, took, after = int(out[0]), out[1], int(out[2])
    assert took == "True" and after == before - 1


def test_cpu_kind_reads_the_first_processor_of_cpuinfo(tmp_path):
    block = ("processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
             "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16 sha_ni\n")
    (tmp_path / "cpuinfo").write_text(block.format(n=0) + "\n" + block.format(n=1).replace("avx512_bf16 ", ""))
    assert checkpoint.cpu_kind(tmp_path / "cpuinfo") == \
        {"name": "AMD EPYC", "family": "25", "model": "17", "bf16": ["avx512_bf16"]}
    assert checkpoint.cpu_kind(tmp_path / "missing") == {}


def test_matmul_peak_leaves_the_random_numbers_of_dropout_alone():
    # train.py measures it after seeding: drawing its matrix from the global generator would move every
    # dropout mask after it, and a resumed run would no longer be the uninterrupted one
    before = torch.get_rng_state()
    assert speed.matmul_peak("cpu", repeats=1)[0] > 1e9  # FLOP/s: any CPU does a GFLOP/s
    assert torch.equal(torch.get_rng_state(), before)


# -----------------------------------------------------------------------------
# optim.py: SGD and AdamW against PyTorch's

def train_copy(make_opt, lr, steps=20, wd=0.1):
    """Train a tiny model for `steps` steps with decay and no-decay groups; return its parameters."""
    model = tiny_model(seed=5)
    opt = make_opt(optim.param_groups(model, wd))
    for step in range(steps):
        for group in opt.param_groups:  # the lr changes every step, set in the groups as train.py does
            group["lr"] = optim.lr_at(step, steps, lr, "cosine", warmup_steps=4)
        x, y = random_batch(100 + step)
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


def assert_same_params(a, b, atol=1e-6):
    assert len(a) == len(b)
    worst = max((pa - pb).abs().max().item() for pa, pb in zip(a, b))
    assert worst <= atol, f"max difference {worst}"


@pytest.mark.parametrize("kwargs", [
    dict(momentum=0.0),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.1),
    dict(momentum=0.9, nesterov=True),
])
def test_sgd_equals_torch(kwargs):
    ours = train_copy(lambda groups: optim.SGD(groups, lr=0.1, **kwargs), lr=0.1)
    theirs = train_copy(lambda groups: torch.optim.SGD(groups, lr=0.1, **kwargs), lr=0.1)
    assert_same_params(ours, theirs)
    assert not torch.allclose(ours[0], tiny_model(seed=5).wte.weight)  # it did move


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.9, 0.95)])
@pytest.mark.parametrize("foreach", [True, False])
def test_adamw_equals_torch(betas, foreach):
    ours = train_copy(lambda groups: optim.AdamW(groups, lr=1e-2, betas=betas), lr=1e-2)
    theirs = train_copy(lambda groups: torch.optim.AdamW(groups, lr=1e-2, betas=betas, foreach=foreach), lr=1e-2)
    assert_same_params(ours, theirs)


def test_param_groups_exempt_biases_norms_and_embeddings():
    model = GPT(GPTConfig())
    decay, no_decay = optim.param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in decay["params"]} == {
        f"h.{i}.{m}.weight" for i in range(4) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert {names[id(p)] for p in no_decay["params"]} >= {"wte.weight", "wpe.weight", "ln_f.weight", "h.0.ln_1.bias"}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    (everything,) = optim.param_groups(model, 0.01, decay_all=True)
    assert len(everything["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_each_optimizer_with_zero_gradients_only_decays_block_matrices(name):
    # g = 0: AdamW's and Muon's updates are 0, SGD's is its coupled decay, SAM's e is 0; so after one step the
    # block matrices are w (1 - lr wd) and norms, biases and embeddings have not moved at all
    model = tiny_model(seed=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = optim.build_optimizer(name, model, lr=0.1, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    if name in ("sam", "asam"):
        opt.first_step()
        opt.second_step()
    else:
        opt.step()
    for n, p in model.named_parameters():
        if n.startswith("h.") and n.endswith("weight") and p.dim() == 2:
            assert torch.allclose(p, before[n] * (1 - 0.1 * 0.5), rtol=1e-6, atol=0), n
        else:
            assert torch.equal(p, before[n]), n


# -----------------------------------------------------------------------------
# SAM and ASAM worked by hand on L(a, b) = (k_a a^2 + k_b b^2) / 2, gradient (k_a a, k_b b)

def quadratic(k_a, k_b):
    a = torch.nn.Parameter(torch.tensor([1.0]))
    b = torch.nn.Parameter(torch.tensor([2.0]))

    def backward():
        a.grad = b.grad = None
        (0.5 * (k_a * a ** 2 + k_b * b ** 2)).sum().backward()
    return a, b, backward


def values(a, b):
    return [a.item(), b.item()]


def test_sam_by_hand():
    # k = (3, 2) at w = (1, 2): g = (3, 4), ||g|| = 5, e = 0.05 * (3, 4) / 5 = (0.03, 0.04)
    a, b, backward = quadratic(3.0, 2.0)
    opt = optim.SAM([{"params": [a]}, {"params": [b]}], optim.SGD, lr=0.1)  # norms span both groups
    assert opt.param_groups[0]["rho"] == optim.SAM_RHO == 0.05
    backward()
    opt.first_step(zero_grad=True)
    assert values(a, b) == pytest.approx([1.03, 2.04], abs=1e-6)
    backward()  # gradient at w + e: (3.09, 4.08)
    opt.second_step(zero_grad=True)
    assert values(a, b) == pytest.approx([1 - 0.1 * 3.09, 2 - 0.1 * 4.08], abs=1e-6)  # from w, not w + e


def test_asam_by_hand():
    # k = (3, 1) at w = (1, 2): g = (3, 2), w g = (3, 4), ||w g|| = 5, w^2 g = (3, 8), e = 0.5 * (3, 8) / 5
    a, b, backward = quadratic(3.0, 1.0)
    opt = optim.SAM([a, b], optim.SGD, adaptive=True, lr=0.1)
    assert opt.param_groups[0]["rho"] == optim.ASAM_RHO == 0.5
    backward()
    opt.first_step(zero_grad=True)
    assert values(a, b) == pytest.approx([1.3, 2.8], abs=1e-6)
    backward()  # gradient at w + e: (3.9, 2.8)
    opt.second_step(zero_grad=True)
    assert values(a, b) == pytest.approx([1 - 0.39, 2 - 0.28], abs=1e-6)


def test_sam_restores_weights_exactly_and_keeps_decay_in_the_base():
    a, b, backward = quadratic(3.0, 2.0)
    opt = optim.SAM([a, b], optim.SGD, lr=0.0)  # lr 0: second_step must land exactly on w
    backward()
    opt.first_step()
    backward()
    opt.second_step()
    assert values(a, b) == [1.0, 2.0]
    # AdamW base with weight decay 0.1: e is the same as without decay; AdamW's first step is
    # w (1 - lr wd) - lr g / (|g| + eps), with g the gradient at w + e (positive here)
    a, b, backward = quadratic(3.0, 2.0)
    opt = optim.SAM([a, b], optim.AdamW, lr=0.1, weight_decay=0.1)
    backward()
    opt.first_step(zero_grad=True)
    assert values(a, b) == pytest.approx([1.03, 2.04], abs=1e-6)
    backward()
    opt.second_step(zero_grad=True)
    assert values(a, b) == pytest.approx([1 * 0.99 - 0.1, 2 * 0.99 - 0.1], abs=1e-6)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_ignores_gradient_scale_before_first_step(adaptive):
    # clipping before first_step rescales g, and e = rho g / ||g|| does not see the scale
    points = []
    for scale in (1.0, 0.01):
        a, b, backward = quadratic(3.0, 2.0)
        opt = optim.SAM([a, b], optim.SGD, adaptive=adaptive, lr=0.1)
        backward()
        a.grad *= scale
        b.grad *= scale
        opt.first_step()
        points.append(values(a, b))
    assert points[0] == pytest.approx(points[1], abs=1e-6)


def test_sam_steps_out_of_order_are_one_clear_error():
    w = torch.nn.Parameter(torch.ones(3))
    opt = optim.SAM([w], optim.AdamW, rho=0.05, lr=0.1, weight_decay=0.0)
    with pytest.raises(RuntimeError, match="without a first_step"):
        opt.second_step()
    w.grad = torch.ones(3)
    opt.first_step()
    with pytest.raises(RuntimeError, match="called twice"):  # w + e would become the point to come back to
        opt.first_step()
    opt.second_step()
    # back at w = 1, then AdamW's first step: lr * g / (|g| + eps) = 0.1
    torch.testing.assert_close(w.detach(), torch.full((3,), 0.9))


def test_sam_groups_are_shared_and_step_closure_matches_two_steps():
    a, b, backward = quadratic(3.0, 2.0)
    opt = optim.SAM([a, b], optim.SGD, lr=0.1)
    opt.param_groups[0]["lr"] = 0.05  # what a schedule does
    assert opt.base_optimizer.param_groups[0]["lr"] == 0.05
    backward()
    opt.step(closure=lambda: backward())
    assert values(a, b) == pytest.approx([1 - 0.05 * 3.09, 2 - 0.05 * 4.08], abs=1e-6)


def sam_train(model, opt, steps, start):
    for step in range(start, start + steps):
        x, y = random_batch(200 + step)
        model(x, y)[1].backward()
        opt.first_step(zero_grad=True)
        model(x, y)[1].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.second_step(zero_grad=True)


@pytest.mark.parametrize("name", ["sam", "asam"])
def test_sam_state_dict_resumes_exactly(name):
    model = tiny_model(seed=7)
    opt = optim.build_optimizer(name, model, lr=1e-2, weight_decay=0.1)
    sam_train(model, opt, 3, start=0)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = copy.deepcopy(opt.state_dict())  # state_dict() holds live tensors, as torch.save would not
    sam_train(model, opt, 3, start=3)

    resumed = tiny_model(seed=99)
    resumed.load_state_dict(saved_model)
    opt2 = optim.build_optimizer(name, resumed, lr=1e-2, weight_decay=0.1)
    opt2.load_state_dict(saved_opt)
    assert opt2.param_groups is opt2.base_optimizer.param_groups  # still shared after loading
    sam_train(resumed, opt2, 3, start=3)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


# -----------------------------------------------------------------------------
# Muon

QUINTIC = (3.4445, -4.7750, 2.0315)  # Jordan et al. 2024's coefficients, written here, not read from optim


def test_newton_schulz_quintic_by_hand():
    # p(s) = 3.4445 s - 4.7750 s^3 + 2.0315 s^5: p(1.0) = 0.701, p(0.5) = 1.72225 - 0.596875 + 0.0634844 = 1.189
    assert optim.NS_COEFFS == QUINTIC
    one = optim.newton_schulz(torch.diag(torch.tensor([1.0, 0.0])), steps=1)  # ||G||_F = 1: s = 1 stays 1
    assert torch.allclose(one, torch.diag(torch.tensor([0.701, 0.0])), atol=1e-5)
    half = optim.newton_schulz(0.5 * torch.eye(4), steps=1)  # ||G||_F = 1: every s is 0.5
    assert torch.allclose(half, 1.1888594 * torch.eye(4), atol=1e-5)


def ns_band(x_min, steps=5):
    """Where `steps` rounds of the Newton-Schulz polynomial send the interval [x_min, 1]."""
    a, b, c = QUINTIC
    x = torch.linspace(x_min, 1.0, 100_001, dtype=torch.float64)
    for _ in range(steps):
        x = a * x + b * x ** 3 + c * x ** 5
    return x.min().item(), x.max().item()


@pytest.mark.parametrize("shape", [(24, 40), (40, 24)])
def test_newton_schulz_applies_its_polynomial_to_each_singular_value(shape):
    G = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    x = S / G.norm()
    a, b, c = QUINTIC
    for _ in range(5):
        x = a * x + b * x ** 3 + c * x ** 5
    expected = U @ torch.diag(x) @ Vh  # same singular vectors, singular values p(p(p(p(p(s)))))
    assert torch.allclose(optim.newton_schulz(G, dtype=torch.float32), expected, atol=1e-5)


def test_muon_update_has_singular_values_in_the_band():
    G = torch.randn(64, 96, generator=torch.Generator().manual_seed(1))
    S = torch.linalg.svdvals(G)
    lo, hi = ns_band((S.min() / G.norm()).item())
    assert 0.6 < lo and hi < 1.25  # about [0.68, 1.13]
    p = torch.nn.Parameter(torch.zeros(64, 96))
    opt = optim.Muon([p], lr=0.1, momentum=0.0)  # no momentum: the update is the orthogonalised gradient
    p.grad = G.clone()
    opt.step()
    O = -p.detach() / (0.1 * 0.2 * math.sqrt(96))
    s = torch.linalg.svdvals(O)
    assert lo - 1e-3 <= s.min().item() and s.max().item() <= hi + 1e-3
    assert optim.newton_schulz(G).dtype == torch.float32  # bf16 on CUDA only: a CPU may have to emulate it


def test_muon_touches_only_block_matrices_and_matches_torch():
    model = tiny_model(seed=11)
    # Muon's own momentum, 0.95; bf16 orthogonalisation as torch.optim.Muon does on every device (train.py: with --amp)
    opt = optim.build_optimizer("muon", model, lr=1e-2, weight_decay=0.1, ns_dtype=torch.bfloat16)
    assert {g["ns_dtype"] for g in opt.param_groups} == {torch.bfloat16}
    names = {id(p): n for n, p in model.named_parameters()}
    muon = sorted(names[id(p)] for g in opt.param_groups if g["use_muon"] for p in g["params"])
    adam = sorted(names[id(p)] for g in opt.param_groups if not g["use_muon"] for p in g["params"])
    assert muon == sorted(n for n in names.values() if n.startswith("h.") and n.endswith("weight")
                          and ".ln_" not in n)
    assert set(muon) | set(adam) == set(names.values()) and not set(muon) & set(adam)

    # reference: torch.optim.Muon (Moonshot's RMS matching) on the matrices, torch AdamW on the rest
    ref = tiny_model(seed=11)
    ref_names = dict(ref.named_parameters())
    ref_opts = []
    for g in opt.param_groups:
        params = [ref_names[names[id(p)]] for p in g["params"]]
        if g["use_muon"]:
            ref_opts.append(torch.optim.Muon(params, lr=1e-2, weight_decay=g["weight_decay"], momentum=0.95,
                                             nesterov=True, adjust_lr_fn="match_rms_adamw"))
        else:
            ref_opts.append(torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.95), weight_decay=g["weight_decay"]))
    for step in range(5):
        x, y = random_batch(300 + step)
        for m, opts in ((model, [opt]), (ref, ref_opts)):
            m(x, y)[1].backward()
            for o in opts:
                o.step()
                o.zero_grad()
    assert_same_params(list(model.parameters()), list(ref.parameters()), atol=1e-6)


def test_muon_rejects_vectors():
    with pytest.raises(ValueError, match="use_muon=False"):
        optim.Muon([torch.nn.Parameter(torch.zeros(3))])


# -----------------------------------------------------------------------------
# schedules: 100 steps, 10 of warm-up, lr 1e-3 down to 1e-5

@pytest.mark.parametrize("schedule, mid_step, end_of_run", [
    ("cosine", 55, 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 89 / 90))),  # step 55: (55 - 10) / 90
    ("wsd", 90, 1e-5 + (1e-3 - 1e-5) / 20),  # stable to step 80, decays over the last 20: step 90 is half way
    ("constant", None, 1e-3),
])
def test_schedule_values(schedule, mid_step, end_of_run):
    lr = lambda step: optim.lr_at(step, 100, 1e-3, schedule, warmup_steps=10, min_lr=1e-5)
    assert lr(0) == pytest.approx(1e-4)        # first update: 1/10 of the peak
    assert lr(9) == pytest.approx(1e-3)        # end of warm-up: the peak
    if mid_step is not None:
        assert lr(mid_step) == pytest.approx((1e-3 + 1e-5) / 2)  # half way down the decay
    assert lr(99) == pytest.approx(end_of_run)  # last update: one step short of the floor
    if schedule == "wsd":
        assert lr(80) == pytest.approx(1e-3)
    values = [lr(s) for s in range(9, 100)]
    assert all(x >= y - 1e-15 for x, y in zip(values, values[1:]))  # never rises after warm-up


def test_wsd_with_decay_frac_1_is_a_straight_line_from_the_end_of_warm_up():
    lr = lambda step: optim.lr_at(step, 100, 1e-3, "wsd", warmup_steps=10, min_lr=1e-5, decay_frac=1.0)
    for step in (10, 55, 99):  # (step - 10) / 90 of the way from 1e-3 to 1e-5
        assert lr(step) == pytest.approx(1e-3 + (1e-5 - 1e-3) * (step - 10) / 90)


@pytest.mark.parametrize("schedule", ["cosine", "wsd"])
def test_no_update_is_wasted_at_lr_zero(schedule):
    lrs = [optim.lr_at(s, 50, 1e-3, schedule, warmup_steps=5, min_lr=0.0) for s in range(50)]
    assert min(lrs) > 0 and lrs[-1] < 0.11e-3  # the last update is small, not zero


def test_schedule_errors():
    with pytest.raises(ValueError, match="unknown schedule"):
        optim.lr_at(0, 10, 1.0, "exp")
    with pytest.raises(ValueError, match="outside the run"):
        optim.lr_at(10, 10, 1.0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.build_optimizer("adam", tiny_model(), lr=1e-3, weight_decay=0.0)


# -----------------------------------------------------------------------------
# every optimizer can memorise one tiny batch

@pytest.mark.parametrize("name, lr", [("sgd", 0.3), ("adamw", 1e-2), ("sam", 1e-2), ("asam", 1e-2), ("muon", 1e-2)])
def test_each_optimizer_overfits_a_tiny_batch(name, lr):
    config = GPTConfig(vocab_size=16, block_size=8, n_layer=2, n_head=2, d_model=32)
    model = tiny_model(seed=0, config=config)
    x, y = random_batch(0, config, B=4)
    x[:, 0] = torch.arange(4)  # distinct first tokens: every prefix has one right answer
    opt = optim.build_optimizer(name, model, lr=lr, weight_decay=0.0)
    for _ in range(100):
        _, loss = model(x, y)
        loss.backward()
        if name in ("sam", "asam"):
            opt.first_step(zero_grad=True)
            model(x, y)[1].backward()
            opt.second_step(zero_grad=True)
        else:
            opt.step()
            opt.zero_grad()
    assert model(x, y)[1].item() < 0.01  # from ln(16) = 2.77


# ==================================================================================================
# train.py: data, metric, runs, resume, bad input
# ==================================================================================================

ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")


def make_titles(n, seed=0):
    """Titles from a tiny grammar: enough structure that a small model's loss falls fast."""
    rng = random.Random(seed)
    starts = ["Show HN:", "Ask HN:", "Launch HN:", "", "", ""]
    adjs = ["fast", "tiny", "open-source", "simple", "new", "better"]
    nouns = ["database", "compiler", "editor", "tokenizer", "GPT", "search engine"]
    langs = ["Rust", "Python", "Go", "C", "Zig"]
    return [f"{rng.choice(starts)} A {rng.choice(adjs)} {rng.choice(nouns)} in {rng.choice(langs)}".strip()
            for _ in range(n)]


@pytest.fixture
def titles_file(tmp_path):
    path = tmp_path / "titles.txt"
    path.write_text("\n".join(make_titles(700)) + "\n", encoding="utf-8")
    return str(path)


def tiny(titles_file, tmp_path, **over):
    cfg = dict(data=titles_file, num_titles=600, test_titles=100, vocab_size=300, n_layer=1, n_head=2,
               d_model=32, block_size=16, batch_size=8, dropout=0.1, opt="adamw", lr=3e-3, epochs=2,
               evals_per_epoch=2, log_every=5, device="cpu", compile=False, amp=False,
               out_dir=str(tmp_path / "runs"), progress=False, sample=0)
    cfg.update(over)
    return cfg


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------------------------
# pure helpers, exactly as their docstrings say

@pytest.mark.parametrize("module", [bpe, dataset, gpt, optim, plot_logs, tune])
def test_docstring_examples_are_doctests_that_pass(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_window_offsets_cut_each_later_epoch_elsewhere_and_resume_exactly():
    stream, T, B = torch.arange(1001), 16, 4  # token i is i: a window's first token is where it starts
    steps = (1000 // T) // B                  # 15 steps an epoch
    plain = [x for x, _ in itertools.islice(dataset.train_batches(stream, T, B, seed=3), 3 * steps)]
    shifted = [x for x, _ in itertools.islice(dataset.train_batches(stream, T, B, seed=3, offsets=True), 3 * steps)]
    assert all(torch.equal(a, b) for a, b in zip(plain[:steps], shifted[:steps]))  # epoch 1: the same windows
    for epoch in (1, 2):
        starts = torch.cat([x[:, 0] for x in shifted[epoch * steps:(epoch + 1) * steps]])
        assert len(set((starts % T).tolist())) == 1 and len(set(starts.tolist())) == len(starts)  # one grid, no repeats
        assert all(torch.equal(x[:, 1:], x[:, :1] + torch.arange(1, T)) for x in shifted[epoch * steps:])  # contiguous
    assert {int(shifted[e * steps][0, 0] % T) for e in (1, 2)} != {0}  # the grid moved
    resumed = [x for x, _ in itertools.islice(dataset.train_batches(stream, T, B, 3, start_step=20, offsets=True), 25)]
    assert all(torch.equal(a, b) for a, b in zip(resumed, shifted[20:]))


def test_text_chars_is_the_length_of_the_joined_text():
    assert dataset.text_chars(["ab", "c"]) == 13 == len("<eos>".join(["ab", "c"]) + "<eos>")


def test_read_titles_strips_skips_blank_lines_and_reads_a_byte_order_mark_as_encoding(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("  one \n\n\t\ntwo\nthree", encoding="utf-8")
    assert dataset.read_titles(str(p)) == ["one", "two", "three"]
    assert dataset.read_titles(str(p), limit=2) == ["one", "two"]
    p.write_bytes(b"\xef\xbb\xbfShow HN: x\r\nsecond\r\n")  # as a Windows editor saves it
    assert dataset.read_titles(str(p)) == ["Show HN: x", "second"]


# ----------------------------------------------------------------------------------------------
# the metric: every token scored once, summed nats over characters

class Uniform(torch.nn.Module):
    """A model whose every prediction is uniform over V: each scored token costs exactly ln V."""

    def __init__(self, V):
        super().__init__()
        self.V = V

    def forward(self, idx, targets):
        logits = torch.zeros(*idx.shape, self.V)
        return logits, torch.nn.functional.cross_entropy(logits.view(-1, self.V), targets.view(-1),
                                                         ignore_index=-1)


@pytest.mark.parametrize("n,block,batch", [(2, 4, 3), (50, 4, 3), (64, 8, 2), (65, 8, 2), (1000, 7, 5)])
def test_stream_nats_scores_every_token_once(n, block, batch):
    stream = torch.randint(0, 11, (n,))
    nats = dataset.stream_nats(Uniform(11), stream, block, batch, "cpu")
    assert nats == pytest.approx((n - 1) * math.log(11), rel=1e-6)


def test_stream_nats_shards_add_up_to_the_whole():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, d_model=16))
    stream = torch.randint(0, 50, (300,))  # 38 windows in 13 batches of 3: shards of 5, 4 and 4 batches
    whole = dataset.stream_nats(model, stream, 8, 3, "cpu")
    parts = [dataset.stream_nats(model, stream, 8, 3, "cpu", shard=(r, 3)) for r in range(3)]
    assert sum(parts) == pytest.approx(whole, rel=1e-6) and min(parts) > 0


def test_stream_nats_equals_a_plain_loop_with_a_real_model():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, d_model=16))
    stream = torch.randint(0, 50, (45,))
    by_hand = 0.0
    with torch.no_grad():
        for i in range(0, 44, 8):  # windows of 8 targets: x = stream[i:i+8], y = the next token of each
            x, y = stream[i:i + 8][None], stream[i + 1:i + 9][None]
            x = x[:, :y.shape[1]]
            logits, _ = model(x)
            by_hand += torch.nn.functional.cross_entropy(logits[0], y[0], reduction="sum").item()
    assert dataset.stream_nats(model, stream, 8, 3, "cpu") == pytest.approx(by_hand, rel=1e-5)


# ----------------------------------------------------------------------------------------------
# end to end

def test_run_follows_the_schedule_it_is_given(tmp_path, titles_file):
    # warm-up-stable-decay with half the run decaying: every update's lr is optim.lr_at's, decay_frac included
    r = train.run(**tiny(titles_file, tmp_path, schedule="wsd", decay_frac=0.5, min_lr=1e-4, log_every=1))
    lrs = {e["step"]: e["lr"] for e in read_log(r["run_dir"] + "/log.jsonl") if e["event"] == "train"}
    total = r["steps"]  # a run that ran to its end
    warmup = round(0.1 * total)
    assert lrs == {s: optim.lr_at(s - 1, total, 3e-3, "wsd", warmup, 1e-4, decay_frac=0.5)
                   for s in range(1, total + 1)}
    assert lrs[total // 2] == 3e-3 and lrs[total] < 3e-3 / 2  # stable through half the run, then decayed


def test_distillation_mixes_in_the_cross_entropy_against_the_teacher_s_distribution():
    model, (x, y) = tiny_model(seed=1), random_batch(2)
    y[0, :5] = -1                                                 # padding is scored by neither term
    logits, ce = model(x, y)
    sure = F.one_hot(y.clamp(min=0), TINY.vocab_size).float()    # a teacher certain of the truth
    assert torch.allclose(train.training_loss(model, x, y, sure, 0.3)[1], ce, atol=1e-5)
    uniform = torch.full((*x.shape, TINY.vocab_size), 1 / TINY.vocab_size)
    keep = y != -1
    by_hand = 0.7 * ce - 0.3 * F.log_softmax(logits, -1).mean(-1)[keep].mean()
    hard, mixed = train.training_loss(model, x, y, uniform, 0.3)
    assert torch.equal(hard, ce) and torch.allclose(mixed, by_hand, atol=1e-6)
    # a teacher equal to the student: the KL divergence is at its minimum, so the pure soft target pulls nowhere
    model.eval()
    twin = F.softmax(tiny_model(seed=1).eval()(x)[0], -1).detach()
    train.training_loss(model, x, y, twin, 1.0)[1].backward()
    assert max(p.grad.abs().max() for p in model.parameters()) < 1e-6
    model.zero_grad()
    train.training_loss(model, x, y, twin, 0.5)[1].backward()     # the true tokens' half still pulls
    assert max(p.grad.abs().max() for p in model.parameters()) > 1e-3


def test_the_teacher_predicts_once_a_step_even_under_sam():
    model, (x, y) = tiny_model(seed=1), random_batch(2)
    teacher, calls = tiny_model(seed=2).eval(), []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    for name in ("adamw", "asam"):
        opt = optim.build_optimizer(name, model, lr=1e-3, weight_decay=0.0, rho=0.05 if name == "asam" else None)
        train.train_step(model, opt, x, y, device="cpu", amp=False, grad_clip=1.0, teacher=teacher, distill=0.5)
    assert len(calls) == 2
    assert speed.step_flops_per_token(model, "asam", teacher) == \
        2 * model.flops_per_token() + teacher.flops_per_token() / 3


def test_a_student_learns_from_a_teacher_of_its_own_titles_only(titles_file, tmp_path):
    teacher = train.run(**tiny(titles_file, tmp_path, d_model=48, epochs=1, name="teacher"))
    student = train.run(**tiny(titles_file, tmp_path, teacher=teacher["run_dir"], distill=0.5))
    assert student["status"] == "done" and math.isfinite(student["final_val_loss"])
    head = read_log(student["log"])[0]
    assert head["config"]["teacher"] == teacher["run_dir"]
    plain = GPT(GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, d_model=32))
    assert student["gflop_per_s"] > student["tokens_per_s"] * plain.flops_per_token() / 1e9  # the teacher's work counts
    with pytest.raises(train.ConfigError, match="trained on other titles"):
        train.run(**tiny(titles_file, tmp_path, num_titles=500, vocab_size=300, teacher=teacher["run_dir"]))
    with pytest.raises(train.ConfigError, match="another tokenizer"):
        train.run(**tiny(titles_file, tmp_path, vocab_size=290, teacher=teacher["run_dir"]))
    with pytest.raises(train.ConfigError, match="reads 16 tokens, fewer than --block_size 32"):
        train.run(**tiny(titles_file, tmp_path, block_size=32, teacher=teacher["run_dir"]))
    unfinished = train.run(**tiny(titles_file, tmp_path, max_steps=10, name="unfinished"))
    with pytest.raises(train.ConfigError, match="stopped at step 10 of 140; finish it first with --resume"):
        train.run(**tiny(titles_file, tmp_path, teacher=unfinished["run_dir"]))


def test_run_writes_log_and_checkpoint_and_loss_falls(titles_file, tmp_path):
    seen = []
    out = train.run(callback=lambda step, val: seen.append((step, val)), **tiny(titles_file, tmp_path))
    assert out["status"] == "done" and math.isfinite(out["final_val_loss"])
    log = read_log(out["log"])
    events = [e["event"] for e in log]
    assert events[0] == "config" and events[-1] == "end" and "train" in events
    head = log[0]
    assert head["config"]["n_layer"] == 1 and head["n_params"] == out["n_params"]
    assert {"torch", "python", "numpy"} <= set(head["versions"]) and len(head["data"]["sha256"]) == 64
    evals = [e for e in log if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [s for s, _ in seen] and evals[0]["step"] == 0
    assert len(evals) == 1 + 2 * 2 and evals[-1]["step"] == out["steps"]
    assert evals[-1]["val_loss"] < 0.6 * evals[0]["val_loss"]
    assert log[-1]["final_val_loss"] == out["final_val_loss"] == evals[-1]["val_loss"]
    # the training loss in both units: nats/token, and nats/char like the validation loss
    trains = [e for e in log if e["event"] == "train"]
    assert trains[-1]["step"] == out["steps"]  # the last step is always logged
    assert all(e["loss_per_char"] == pytest.approx(e["loss"] * head["data"]["tokens_per_char"]) for e in trains)
    assert 0.2 < head["data"]["tokens_per_char"] < 1
    # MFU: the step's model FLOP/s over the matmul peak measured at the start (a 2048^3 product: > 1 GFLOP/s);
    # measuring it leaves the random numbers of dropout alone (test_resume_* compare dropout runs bit for bit)
    peak = head["matmul_peak_gflop_per_s"]
    assert peak > 1 and all(e["mfu"] == pytest.approx(e["gflop_per_s"] / peak) for e in trains)
    assert out["mfu"] == pytest.approx(out["gflop_per_s"] / peak) and out["mfu"] > 0
    # the checkpoint holds the plain module's weights: strict load into a fresh GPT on CPU
    ckpt = train.load_checkpoint(out["ckpt"])
    assert not any(k.startswith("_orig_mod.") for k in ckpt["model"])
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"], strict=True)
    assert os.path.isfile(os.path.join(out["run_dir"], "tokenizer.json"))


def test_second_run_reuses_the_tokenizer_and_never_overwrites_a_run(titles_file, tmp_path):
    a = train.run(**tiny(titles_file, tmp_path, epochs=1, max_steps=2))
    b = train.run(**tiny(titles_file, tmp_path, epochs=1, max_steps=2))
    assert a["run_dir"] != b["run_dir"]
    assert len(os.listdir(tmp_path / "runs" / ".tokenizers")) == 1
    with open(os.path.join(a["run_dir"], "tokenizer.json"), "rb") as f1, \
            open(os.path.join(b["run_dir"], "tokenizer.json"), "rb") as f2:
        assert f1.read() == f2.read()


def test_fractional_epochs_set_the_schedule_and_the_evaluations(titles_file, tmp_path):
    out = train.run(name="half", **tiny(titles_file, tmp_path, epochs=1.5, evals_per_epoch=2,
                                        schedule="wsd", lr=1e-2, min_lr=0.0, warmup_ratio=0.0))
    log = read_log(tmp_path / "runs" / "half" / "log.jsonl")
    per_epoch = log[0]["steps_per_epoch"]
    assert out["steps"] == log[0]["total_steps"] == round(1.5 * per_epoch)
    # three evaluations after step 0 (1.5 epochs x 2), the last at the last step; the lr decays to 0 there
    evals = [e["step"] for e in log if e["event"] == "eval"]
    assert evals == [0, round(out["steps"] / 3), round(2 * out["steps"] / 3), out["steps"]]
    lrs = [e["lr"] for e in log if e["event"] == "train"]
    assert max(lrs) == 1e-2 and lrs[-1] < 1e-2 / 2


def test_callback_can_stop_a_run(titles_file, tmp_path):
    out = train.run(callback=lambda step, val: step > 0, name="cut", **tiny(titles_file, tmp_path))
    log = read_log(tmp_path / "runs" / "cut" / "log.jsonl")
    assert out["status"] == log[-1]["status"] == "stopped" and log[-1]["event"] == "end"
    evals = [e for e in log if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [0, out["steps"]] and out["final_val_loss"] is None
    assert (log[-1]["last_eval_step"], log[-1]["last_val_loss"]) == (out["steps"], evals[-1]["val_loss"])


def test_a_stop_signal_in_the_last_step_leaves_the_run_done(titles_file, tmp_path):
    # SIGTERM arrives during the last evaluation (the callback sends it): the run is finished, so it ends
    # "done" with its final loss, not "interrupted" with advice to resume a run that has nothing left
    last = {}
    def terminate_at_the_end(step, val):
        if step == last.get("step"):
            os.kill(os.getpid(), signal.SIGTERM)
    cfg = tiny(titles_file, tmp_path)
    last["step"] = train.run(name="plain", **cfg)["steps"]
    out = train.run(callback=terminate_at_the_end, name="late", **cfg)
    assert out["status"] == "done" and out["signal"] is not None and out["final_val_loss"] is not None


def test_resume_after_sigkill_equals_an_uninterrupted_run(titles_file, tmp_path):
    cfg = tiny(titles_file, tmp_path, epochs=4, opt="asam")
    whole = train.run(name="whole", **cfg)

    # the same run in a process killed with SIGKILL as soon as its first checkpoint exists
    flags = [f"--{k}={v}" for k, v in cfg.items() if not isinstance(v, bool)]
    flags += ["--no-compile", "--no-amp", "--no-progress", "--name=killed"]
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "train.py"), *flags], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ONE_THREAD)
    ckpt = tmp_path / "runs" / "killed" / "ckpt.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log = read_log(tmp_path / "runs" / "killed" / "log.jsonl")
    assert proc.returncode == -signal.SIGKILL and log[-1]["event"] != "end", "the run ended before the kill"
    with open(tmp_path / "runs" / "killed" / "log.jsonl", "a") as f:
        f.write('{"event": "train", "st')  # as if killed mid-write: resume cuts the half line off

    resumed = train.run(resume=str(ckpt), device="cpu", compile=False, progress=False, sample=0)
    assert resumed["steps"] == whole["steps"]
    assert resumed["final_val_loss"] == pytest.approx(whole["final_val_loss"], abs=1e-6)
    assert read_log(tmp_path / "runs" / "killed" / "log.jsonl")[-1]["status"] == "done"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; kill, timeout, a job scheduler
def test_ctrl_c_or_sigterm_saves_and_exits_cleanly(titles_file, tmp_path, sig):
    cfg = tiny(titles_file, tmp_path, epochs=6)
    flags = [f"--{k}={v}" for k, v in cfg.items() if not isinstance(v, bool)]
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "train.py"), *flags, "--no-compile", "--no-amp",
                             "--no-progress", "--name=ctrlc"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
    ckpt = tmp_path / "runs" / "ctrlc" / "ckpt.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig and "Traceback" not in err and "continue with --resume" in out
    log = read_log(tmp_path / "runs" / "ctrlc" / "log.jsonl")
    end, evals = log[-1], [e for e in log if e["event"] == "eval"]
    assert end["status"] == "interrupted" and end["steps"] < log[0]["total_steps"]
    assert end["final_val_loss"] is None  # what is true: the last evaluation and its step
    assert (end["last_eval_step"], end["last_val_loss"]) == (evals[-1]["step"], evals[-1]["val_loss"])
    assert train.load_checkpoint(str(ckpt))["step"] == end["steps"]


def test_resume_after_a_cut_run_equals_uninterrupted(titles_file, tmp_path):
    whole = train.run(name="whole", **tiny(titles_file, tmp_path, opt="sgd", momentum=0.9, lr=0.05))
    cut = train.run(name="cut", **tiny(titles_file, tmp_path, opt="sgd", momentum=0.9, lr=0.05, max_steps=7))
    assert cut["steps"] == 7
    cut_s = train.load_checkpoint(cut["ckpt"])["elapsed_s"]
    t0 = time.time()
    resumed = train.run(resume=cut["run_dir"])  # a run folder works too; without --max_steps: to the end
    wall = time.time() - t0
    assert resumed["steps"] == whole["steps"]
    # the clock goes on from the checkpoint: the run's time counts both processes (a busy machine may pause
    # this process between the run's last clock reading and `wall`, so the lower bound has slack)
    assert 0 < cut_s <= cut["time_s"] and wall + cut_s / 2 < resumed["time_s"] <= wall + cut_s + 1e-3
    assert resumed["final_val_loss"] == pytest.approx(whole["final_val_loss"], abs=1e-6)
    # resuming a finished run says so and changes nothing
    before = {f: open(os.path.join(cut["run_dir"], f), "rb").read() for f in os.listdir(cut["run_dir"])}
    with pytest.raises(train.ConfigError, match="the run is finished, nothing to resume"):
        train.run(resume=cut["ckpt"])
    assert before == {f: open(os.path.join(cut["run_dir"], f), "rb").read() for f in os.listdir(cut["run_dir"])}
    # the log says what the resumed process changed (max_steps 7 -> 0) and chose (device, precision, compile)
    event = next(e for e in read_log(tmp_path / "runs" / "cut" / "log.jsonl") if e["event"] == "resume")
    assert event["step"] == 7 and event["config"]["max_steps"] == 0 and event["config"]["device"] == "cpu"
    assert (event["device"], event["amp"], event["compiled"]) == ("cpu", False, False)
    assert event["versions"]["torch"] == torch.__version__


def test_ema_ends_the_run_with_the_average_of_its_last_epoch_and_resumes_exactly(titles_file, tmp_path, capsys):
    cfg = tiny(titles_file, tmp_path, dropout=0.0)  # no dropout: the three runs below train the same weights
    plain = train.run(name="plain", **cfg)
    whole = train.run(name="whole", ema=0.5, **cfg)
    cut = train.run(name="cut", ema=0.5, max_steps=plain["steps"] - 1, **cfg)
    evals = lambda r: [(e["step"], e["val_loss"]) for e in read_log(r["log"]) if e["event"] == "eval"]
    # training does not change; only the last evaluation scores the average, not the last weights
    assert evals(whole)[:-1] == evals(plain)[:-1] and evals(whole)[-1][1] != evals(plain)[-1][1]
    # the known answer: avg = 0.5 (the average one step before the end) + 0.5 (the last weights)
    before, last = train.load_checkpoint(cut["ckpt"]), train.load_checkpoint(plain["ckpt"])["model"]
    names = [n for n, _ in train.GPT(train.GPTConfig(**before["model_config"])).named_parameters()]
    assert before["ema"]["avg"] is not None and len(before["ema"]["avg"]) == len(names)
    end = train.load_checkpoint(whole["ckpt"])["model"]
    for name, a in zip(names, before["ema"]["avg"]):
        torch.testing.assert_close(end[name], 0.5 * a + 0.5 * last[name])
    # a run cut in its last epoch resumes its average too
    resumed = train.run(resume=cut["run_dir"])
    assert resumed["final_val_loss"] == pytest.approx(whole["final_val_loss"], abs=1e-6)
    with pytest.raises(train.ConfigError, match="--ema must be in"):
        train.run(name="bad", ema=1.0, **cfg)
    # an average over more steps than the last epoch has would keep much of its first weights: one warning
    assert "warning: --ema" not in capsys.readouterr().out
    train.run(name="long", ema=0.999, max_steps=1, **cfg)
    assert "warning: --ema 0.999 averages over ~1000 steps" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# data parallel: torchrun with 2 CPU processes (gloo) trains the same model as one process

def torchrun(cfg, *flags, wait=True):
    """train.py under torchrun with 2 processes, one thread each; cfg as for train.run()."""
    args = [f"--{k}={v}" for k, v in cfg.items() if not isinstance(v, bool)]
    args += [f"--{k}" if v else f"--no-{k}" for k, v in cfg.items() if isinstance(v, bool)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(HERE, "train.py"), *args, *flags]
    proc = subprocess.Popen(cmd, cwd=HERE, env=ONE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    if wait:
        proc.output = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, proc.output
    return proc


def final_eval(run_dir):
    return [e for e in read_log(os.path.join(run_dir, "log.jsonl")) if e["event"] == "eval"][-1]


@pytest.mark.parametrize("opt", ["adamw", "asam"])
def test_two_processes_train_the_same_model_as_one(titles_file, tmp_path, opt):
    # the global batch of 8 is split 4 + 4; DDP averages the gradients of every backward pass (SAM's first
    # one too, so its perturbation uses the global gradient norm); validation is split and summed
    cfg = tiny(titles_file, tmp_path, opt=opt, dropout=0.0, epochs=2)
    one = train.run(name="one", **cfg)
    assert torchrun(cfg, "--name=two").output.count("final val loss") == 1  # the first process alone prints
    two = final_eval(tmp_path / "runs" / "two")
    assert two["step"] == one["steps"] and two["val_loss"] == pytest.approx(one["final_val_loss"], abs=1e-5)
    log = read_log(tmp_path / "runs" / "two" / "log.jsonl")
    assert log[0]["processes"] == 2 and log[-1]["status"] == "done"
    assert sorted(os.listdir(tmp_path / "runs" / "two")) == ["ckpt.pt", "log.jsonl", "tokenizer.json"]


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"),
                    reason="finds the training processes through Linux's /proc")
def test_two_process_run_killed_mid_epoch_resumes_to_the_same_end(titles_file, tmp_path):
    cfg = tiny(titles_file, tmp_path, opt="asam", dropout=0.0, epochs=4)
    whole = train.run(name="whole", **cfg)
    proc = torchrun(cfg, "--name=killed", wait=False)
    ckpt = tmp_path / "runs" / "killed" / "ckpt.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    workers = [int(p) for p in open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()]
    for pid in [proc.pid, *workers]:  # the launcher and both training processes (each in a session of its own)
        os.kill(pid, signal.SIGKILL)
    proc.communicate()
    assert read_log(tmp_path / "runs" / "killed" / "log.jsonl")[-1]["event"] != "end", "ended before the kill"
    assert torchrun({}, f"--resume={ckpt}", "--no-progress").output.count("final val loss") == 1
    end = final_eval(tmp_path / "runs" / "killed")
    assert end["step"] == whole["steps"] and end["val_loss"] == pytest.approx(whole["final_val_loss"], abs=1e-5)


def test_non_finite_loss_stops_at_once(titles_file, tmp_path):
    with pytest.raises(train.Diverged, match="training loss became"):
        train.run(name="boom", **tiny(titles_file, tmp_path, opt="sgd", lr=1e12, grad_clip=0, dropout=0.0))
    log = read_log(tmp_path / "runs" / "boom" / "log.jsonl")
    assert log[-1]["status"] == "diverged"


# ----------------------------------------------------------------------------------------------
# bad input: one clear sentence, non-zero exit, nothing lost

def cli(*args, cwd):
    r = subprocess.run([sys.executable, os.path.join(HERE, "train.py"), *args], cwd=cwd,
                       capture_output=True, text=True, timeout=120, env=ONE_THREAD)
    return r.returncode, r.stderr.strip()


@pytest.mark.parametrize("make,over,match", [
    (None, dict(data="nope.txt"), "not found"),
    (b"", {}, "no titles"),
    (b"\n  \n", {}, "no titles"),
    (b"good title\nbad \xff byte\n", {}, "not UTF-8"),
    ("few", dict(num_titles=5000), "has 700 titles but --num_titles 5,000"),
    ("ok", dict(d_model=33, n_head=2), "not divisible"),
    ("ok", dict(vocab_size=100), "too small"),
    ("ok", dict(opt="adam"), "unknown --opt"),
    ("ok", dict(device="tpu"), "unknown --device"),
    ("ok", dict(dropout=1.5), "--dropout"),
    ("ok", dict(distill=1.5), "--distill must be in"),
    ("ok", dict(min_lr=1.0, lr=0.1), "--min_lr"),
    ("ok", dict(epochs=0), "--epochs must be a positive number"),
    ("ok", dict(schedule="wsd", decay_frac=0.0), "--decay_frac must be in"),
    ("ok", dict(batch_size=1000, block_size=512), "fewer than one batch"),
    ("ok", dict(nonsense=3), "unknown setting"),
    ("ok", dict(vocab_size=5000), "--vocab_size 5000 cannot be trained on 540 training titles"),
    ("ok", dict(num_titles=2, vocab_size=400), "--vocab_size 400 cannot be trained on 1 training titles"),
    ("ok", dict(out_dir="FILE/runs"), "cannot write run folders in"),
])
def test_bad_input_raises_one_clear_sentence(tmp_path, titles_file, make, over, match):
    cfg = tiny(titles_file, tmp_path, **over)
    if isinstance(make, bytes):
        (tmp_path / "bad.txt").write_bytes(make)
        cfg["data"] = str(tmp_path / "bad.txt")
    if cfg["out_dir"].startswith("FILE"):  # a folder that cannot be made: a file stands in its path
        (tmp_path / "FILE").write_text("")
        cfg["out_dir"] = str(tmp_path / cfg["out_dir"])
    with pytest.raises(train.ConfigError, match=match) as e:
        train.run(**cfg)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_device_is_an_error(titles_file, tmp_path):
    with pytest.raises(train.ConfigError, match="sees no CUDA GPU"):
        train.run(**tiny(titles_file, tmp_path, device="cuda"))


def test_cli_errors_exit_non_zero_with_one_line(tmp_path, titles_file):
    code, err = cli("--data", str(tmp_path / "missing.txt"), cwd=tmp_path)
    assert code != 0 and err.count("\n") == 0 and err.startswith("error: data file")
    code, err = cli("--opt", "adam", cwd=tmp_path)
    assert code != 0 and "invalid choice: 'adam'" in err


def test_existing_run_name_and_bad_resume_lose_nothing(titles_file, tmp_path):
    first = train.run(name="keep", **tiny(titles_file, tmp_path, epochs=1, max_steps=3))
    before = {f: open(os.path.join(first["run_dir"], f), "rb").read() for f in os.listdir(first["run_dir"])}
    with pytest.raises(train.ConfigError, match="already exists"):
        train.run(name="keep", **tiny(titles_file, tmp_path))
    with pytest.raises(train.ConfigError, match="was trained with n_layer=1, not 2"):
        train.run(resume=first["ckpt"], n_layer=2)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(open(first["ckpt"], "rb").read()[:1000])
    with pytest.raises(train.ConfigError, match="corrupt"):
        train.run(resume=str(corrupt))
    after = {f: open(os.path.join(first["run_dir"], f), "rb").read() for f in os.listdir(first["run_dir"])}
    assert after == before


def test_resume_with_a_shorter_file_names_the_file_to_use(titles_file, tmp_path):
    cut = train.run(name="cut", **tiny(titles_file, tmp_path, epochs=1, max_steps=2))
    short = tmp_path / "short.txt"
    short.write_text("\n".join(make_titles(500)) + "\n", encoding="utf-8")
    with pytest.raises(train.ConfigError, match="was trained on the first 600 titles of .*titles.txt, but --data "
                                                 ".*short.txt has only 500; resume with that run's data file"):
        train.run(resume=cut["ckpt"], data=str(short))
    with pytest.raises(train.ConfigError, match="was trained with num_titles=600, not 500; drop --num_titles"):
        train.run(resume=cut["ckpt"], num_titles=500)  # the other way round is refused as well, and says why


def test_help_states_each_default_once_and_names_the_recipe():
    text = train.build_parser().format_help()
    assert "(default: None)" not in text and "step-6 recipe" in " ".join(text.split())
    assert "(default: 2.1e-03)" in text or "(default: 0.0021)" in text


def test_preset_flags_and_overrides():
    cfg = train.resolve_config({"preset": "step5", "d_model": 384, "opt": "adamw"})
    assert (cfg["n_layer"], cfg["n_head"], cfg["lr"], cfg["opt"]) == (6, 6, 1.1e-3, "adamw")
    # every preset is a valid config, and the big ones are the study's 27,172,864-parameter shape
    for name, p in train.PRESETS.items():
        c = train.resolve_config({"preset": name})
        n = GPT(GPTConfig(vocab_size=c["vocab_size"], block_size=c["block_size"], n_layer=c["n_layer"],
                          n_head=c["n_head"], d_model=c["d_model"], rope=c["rope"],
                          attn_gate=c["attn_gate"])).num_params()
        assert n == {"step5": 12_208_128, "step6": 2_560_128, "nanorun": 2_550_156,  # rotary: no position table
                     "nanorun12m": 12_197_412}.get(name, 27_172_864)


# ==================================================================================================
# tune.py, evaluate.py, plot_logs.py: the study as commands
# ==================================================================================================



# ----------------------------------------------------------------------------------------------
# what the numbers mean: the metric, RoPE, a GPU's modules, bf16, the generators, two processes

def test_logged_val_loss_is_nats_per_character_by_hand(titles_file, tmp_path):
    out = train.run(name="metric", **tiny(titles_file, tmp_path, epochs=1, max_steps=3, dropout=0.0))
    logged = [e for e in read_log(out["log"]) if e["event"] == "eval"][-1]["val_loss"]
    ckpt = torch.load(out["ckpt"], weights_only=False)
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    tok = Tokenizer.load(os.path.join(out["run_dir"], "tokenizer.json"))
    with open(titles_file, encoding="utf-8") as f:
        val = [line.strip() for line in f][540:600]  # 600 titles, the last 10% validate
    ids = [tok.eos_id] + tok.encode_titles(val)
    nats = 0.0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, 16):  # windows of 16 targets tile the stream; each token scored once
            targets = ids[s + 1:s + 17]
            logp = model(torch.tensor([ids[s:s + len(targets)]]))[0][0].log_softmax(-1)
            nats -= sum(logp[i, t].item() for i, t in enumerate(targets))
    assert logged == pytest.approx(nats / len("<eos>".join(val) + "<eos>"), rel=1e-5)


def test_attention_gate_scales_each_heads_output_by_its_sigmoid():
    torch.manual_seed(0)
    plain = GPT(TINY)
    gated = GPT(dataclasses.replace(TINY, attn_gate=True))
    gated.load_state_dict(plain.state_dict(), strict=False)  # the same weights; the gates are the only new ones
    assert sorted(set(gated.state_dict()) - set(plain.state_dict())) == \
        [f"h.{i}.attn.gate.{p}" for i in range(TINY.n_layer) for p in ("bias", "weight")]
    x, _ = random_batch(3)
    for block in gated.h:  # gates wide open (sigmoid(30) = 1 - 1e-13): the plain model
        torch.nn.init.zeros_(block.attn.gate.weight)
        torch.nn.init.constant_(block.attn.gate.bias, 30.0)
    assert torch.allclose(gated(x)[0], plain(x)[0], atol=1e-5)
    hs = TINY.d_model // TINY.n_head  # head 0 shut in every block: as if its values were all zero
    for block_g, block_p in zip(gated.h, plain.h):
        block_g.attn.gate.bias.data[0] = -30.0
        with torch.no_grad():
            block_p.attn.c_attn.weight[2 * TINY.d_model:2 * TINY.d_model + hs] = 0.0
            block_p.attn.c_attn.bias[2 * TINY.d_model:2 * TINY.d_model + hs] = 0.0
    assert torch.allclose(gated(x)[0], plain(x)[0], atol=1e-5)
    assert gated.num_params() == plain.num_params() + TINY.n_layer * (TINY.d_model + 1) * TINY.n_head


def test_squared_relu_mlp_by_hand():
    mlp = MLP(GPTConfig(vocab_size=10, n_layer=1, n_head=1, d_model=1, relu2=True))  # 1 -> 4 -> 1
    with torch.no_grad():
        mlp.c_fc.weight.copy_(torch.tensor([[1.0], [-1.0], [2.0], [0.5]]))
        mlp.c_fc.bias.copy_(torch.tensor([0.0, 0.0, -1.0, 1.0]))
        mlp.c_proj.weight.fill_(1.0)
        mlp.c_proj.bias.fill_(0.25)
    # x = 3: pre-activations 3, -3, 5, 2.5 -> squared ReLU 9, 0, 25, 6.25; summed, plus the bias 0.25
    assert mlp(torch.tensor([[[3.0]]])).item() == 40.5
    # x = -2: -2, 2, -5, 0 -> 0, 4, 0, 0; GELU would give GELU(-2) + GELU(2) + ... instead
    assert mlp(torch.tensor([[[-2.0]]])).item() == 4.25
    mlp.relu2 = False
    assert mlp(torch.tensor([[[-2.0]]])).item() == pytest.approx(
        0.25 + sum(F.gelu(torch.tensor(v)).item() for v in (-2.0, 2.0, -5.0, 0.0)))


def test_rope_turns_channel_pairs_by_hand_computed_angles():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).repeat(1, 1, 2, 1)  # (B, nh, T, hs) = (1, 1, 2, 4)
    out = gpt.rotate(x, torch.tensor([[0, 3]]))
    # pairs of channels (0, 2) and (1, 3) at frequencies 10000^(-0/4) = 1 and 10000^(-2/4) = 0.01; position 3
    a, b = 3.0, 0.03
    by_hand = [1 * math.cos(a) - 3 * math.sin(a), 2 * math.cos(b) - 4 * math.sin(b),
               1 * math.sin(a) + 3 * math.cos(a), 2 * math.sin(b) + 4 * math.cos(b)]
    assert torch.equal(out[0, 0, 0], x[0, 0, 0])  # position 0: no turn
    assert torch.allclose(out[0, 0, 1], torch.tensor(by_hand), atol=1e-6)


def test_rope_turns_queries_and_keys_and_leaves_values_alone(monkeypatch):
    model = tiny_model(config=dataclasses.replace(TINY, rope=True))
    attn, seen = model.h[0].attn, {}
    plain = attn.attend.forward
    monkeypatch.setattr(attn.attend, "forward", lambda q, k, v, mask=None: seen.update(q=q, k=k, v=v) or plain(q, k, v, mask))
    x, _ = random_batch(1)
    model(x)
    B, T, C = x.size(0), x.size(1), TINY.d_model
    q, k, v = (t.view(B, T, 2, C // 2).transpose(1, 2) for t in attn.c_attn(model.h[0].ln_1(model.wte(x))).split(C, 2))
    pos = torch.arange(T)[None]
    assert torch.equal(seen["v"], v)
    assert torch.allclose(seen["q"], gpt.rotate(q, pos)) and torch.allclose(seen["k"], gpt.rotate(k, pos))
    assert not torch.allclose(seen["q"], q)


@pytest.mark.parametrize("within_title", [False, True])
def test_a_gpus_fused_attention_trains_like_the_textbook_and_applies_dropout(within_title):
    config = dataclasses.replace(TINY, within_title=within_title, eos_id=0)
    plain, fused = tiny_model(config=config), tiny_model(config=config)
    assert speed.use_fast_modules(fused, "cuda") == ["FusedAttention x2"]  # forced on CPU: the GPU's modules
    opts = [optim.build_optimizer("adamw", m, lr=1e-2, weight_decay=0.1) for m in (plain, fused)]
    for step in range(5):  # dropout 0: the same training, step for step
        x, y = random_batch(step, config)
        losses = [train.train_step(m, o, x, y, device="cpu", amp=False, grad_clip=1.0).item()
                  for m, o in zip((plain, fused), opts)]
        assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    # dropout > 0: the fused kernel drops attention weights in training, none in evaluation
    dropped = tiny_model(config=dataclasses.replace(config, dropout=0.5))
    speed.use_fast_modules(dropped, "cuda")
    assert dropped.h[0].attn.attend.p == 0.5
    attend, (x, _) = dropped.h[0].attn.attend, random_batch(7, config)
    q = k = v = torch.randn(2, 2, 16, 8)
    outs = [attend(q, k, v) for _ in range(2)]
    assert not torch.allclose(outs[0], outs[1])
    attend.eval()
    assert torch.equal(attend(q, k, v), attend(q, k, v))


def test_amp_runs_the_matmuls_in_bf16_on_cpu(titles_file, tmp_path):
    model, (x, y) = tiny_model(), random_batch(2)
    dtypes = []
    model.lm_head.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    opt = optim.build_optimizer("adamw", model, lr=1e-3, weight_decay=0.0)
    train.train_step(model, opt, x, y, device="cpu", amp=True, grad_clip=1.0)
    train.train_step(model, opt, x, y, device="cpu", amp=False, grad_clip=1.0)
    assert dtypes == [torch.bfloat16, torch.float32]
    out = train.run(name="bf16", **tiny(titles_file, tmp_path, amp=True, epochs=1, max_steps=4))
    assert read_log(out["log"])[0]["amp"] is True and math.isfinite(out["last_val_loss"])


def test_amp_is_the_faster_of_the_two_measured_and_the_flags_override_it(titles_file, tmp_path, monkeypatch):
    def timer(seconds):  # a fake clock: each dtype takes the time given (the first look's 256^3: a thousandth)
        return lambda shapes, dtype, device: seconds[dtype] * (1e-3 if shapes == [(256, 256, 256)] else 1)
    fp32, bf16 = torch.float32, torch.bfloat16
    assert speed.measure_amp("cpu", 8, 50, 64, timer=timer({fp32: 0.2, bf16: 0.1})) == \
        (True, {"fp32": [0.2] * 3, "bf16": [0.1] * 3, "of": "the model's"})
    assert speed.measure_amp("cpu", 8, 50, 64, timer=timer({fp32: 0.1, bf16: 0.15}))[0] is False
    assert speed.measure_amp("cpu", 8, 50, 64, timer=timer({fp32: 0.1, bf16: 0.5})) == \
        (False, {"fp32": [0.1], "bf16": [0.5], "of": "the model's"})  # bf16 5x slower: one round is enough
    shapes_seen = []
    def emulated(shapes, dtype, device):  # bf16 20x slower: the first look (256^3) is all that is timed
        shapes_seen.append(shapes)
        return {fp32: 0.1, bf16: 2.0}[dtype]
    assert speed.measure_amp("cpu", 8, 50, 64, timer=emulated) == (False, {"fp32": [0.1], "bf16": [2.0], "of": "256^3"})
    assert shapes_seen == [[(256, 256, 256)]] * 6
    # a busy machine slows the fp32 product too (3 ms): bf16 is 8x behind, but at 1.3 GFLOP/s no bf16 unit's
    assert speed.measure_amp("cpu", 8, 51, 64, timer=timer({fp32: 3.0, bf16: 25.0})) == \
        (False, {"fp32": [0.003], "bf16": [0.025], "of": "256^3"})
    def no_bf16(shapes, dtype, device):  # a device whose bf16 matmul raises (an older MPS): fp32, said so
        if dtype == bf16:
            raise RuntimeError("bf16 matmul not supported")
        return 0.1
    assert speed.measure_amp("cpu", 8, 50, 64, timer=no_bf16) == (False, {"fp32": [0.1], "bf16": None, "of": "256^3"})
    # a run logs the choice and the times it saw; --amp / --no-amp override the measurement
    monkeypatch.setattr(speed, "measure_amp", lambda *args: (True, {"fp32": [0.2], "bf16": [0.1]}))
    for name, amp, expected, times in (("measured", None, True, {"fp32": [0.2], "bf16": [0.1]}),
                                      ("forced", False, False, None)):
        out = train.run(name=name, **tiny(titles_file, tmp_path, amp=amp, epochs=1, max_steps=1))
        head = read_log(out["log"])[0]
        assert (head["amp"], head["amp_times_s"]) == (expected, times)


def test_mfu_is_measured_against_the_fastest_matmul(monkeypatch):
    speed.matmul_peak.cache_clear()
    monkeypatch.setattr(speed, "time_matmuls", lambda shapes, dtype, device: 2.0 if dtype == torch.bfloat16 else 1.0)
    peak, dtype = speed.matmul_peak("cpu", repeats=1)
    speed.matmul_peak.cache_clear()
    assert (peak, dtype) == (2 * 1024**3 / 1.0, "float32")
    timed = []  # where bf16 is emulated (the first look: 20x behind), its peak is not timed at all
    def emulated(shapes, dtype, device):
        timed.append((shapes[0][0], dtype))
        return 20.0 if dtype == torch.bfloat16 else 1.0
    monkeypatch.setattr(speed, "time_matmuls", emulated)
    assert speed.matmul_peak("cpu", repeats=1) == (2 * 1024**3 / 1.0, "float32")
    speed.matmul_peak.cache_clear()
    assert (1024, torch.bfloat16) not in timed and (256, torch.bfloat16) in timed


def test_compile_warm_up_leaves_every_generator_where_it_was(monkeypatch):
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model: compile_(model, backend="eager"))  # fast; dropout still draws
    model = tiny_model(config=dataclasses.replace(TINY, dropout=0.3))
    before = torch.get_rng_state()
    runner, compiled = speed.compile_with_warm_up(model, "cpu", 2, TINY.block_size, amp=False)
    assert compiled and torch.equal(torch.get_rng_state(), before)


def test_compile_is_kept_only_where_it_times_faster_than_eager(monkeypatch):
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model: compile_(model, backend="eager"))  # fast; dropout still draws
    model = tiny_model(config=dataclasses.replace(TINY, dropout=0.1))
    for eager_s, kept in ((1.0, True), (0.78, True), (0.5, False)):  # compiled 0.8 s; eager must win by 5%
        runner, compiled, times = speed.compile_if_faster(model, "cpu", 2, TINY.block_size, amp=False,
                                                          timer=lambda m: eager_s if m is model else 0.8)
        assert compiled == kept and (runner is model) == (not kept)
        assert times == {"compiled": [0.8] * 2, "eager": [eager_s] * 2}
    timed = []  # --compile typed: compiled, nothing timed
    runner, compiled, times = speed.compile_if_faster(model, "cpu", 2, TINY.block_size, amp=False, measure=False,
                                                      timer=timed.append)
    assert compiled and runner is not model and times is None and timed == []
    before = torch.get_rng_state()  # timed for real: no dropout mask drawn, no gradient left behind
    _, _, times = speed.compile_if_faster(model, "cpu", 2, TINY.block_size, amp=False)
    assert torch.equal(torch.get_rng_state(), before) and all(p.grad is None for p in model.parameters())
    assert len(times["compiled"]) == len(times["eager"]) == 2 and min(times["eager"]) > 0


@pytest.mark.skipif(not speed.can_compile("cpu"), reason="compiling needs a C++ compiler")
def test_two_processes_train_the_same_run_bit_for_bit(titles_file, tmp_path):
    flags = ["--data", titles_file, "--num_titles", "600", "--test_titles", "100", "--vocab_size", "300",
             "--n_layer", "1", "--n_head", "2", "--d_model", "32", "--block_size", "16", "--batch_size", "8",
             "--epochs", "1", "--max_steps", "8", "--dropout", "0.1", "--no-compile", "--no-amp", "--device", "cpu",
             "--no-progress", "--sample", "0", "--opt", "adamw", "--lr", "3e-3"]
    logs = []
    for i in range(2):  # each process trains its own tokenizer (its own --out_dir) and model
        r = subprocess.run([sys.executable, os.path.join(HERE, "train.py"), *flags, "--out_dir", f"r{i}", "--name", "a"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        logs.append([(e["step"], e["val_loss"]) for e in read_log(tmp_path / f"r{i}" / "a" / "log.jsonl")
                     if e["event"] == "eval"])
    assert logs[0] == logs[1] and len(logs[0]) >= 2
    assert (tmp_path / "r0" / "a" / "tokenizer.json").read_bytes() == (tmp_path / "r1" / "a" / "tokenizer.json").read_bytes()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_fused_modules_train_like_the_textbook_and_warm_up_keeps_the_generator(titles_file, tmp_path):
    out = train.run(name="cuda", **tiny(titles_file, tmp_path, device="cuda", amp=True, compile=True, max_steps=6,
                                        within_title=True, rope=True, dropout=0.1))
    head = read_log(out["log"])[0]
    assert head["fast_modules"] == ["FusedAttention x1"] and head["compiled"] and math.isfinite(out["last_val_loss"])
    model = tiny_model(config=dataclasses.replace(TINY, dropout=0.3)).cuda()
    speed.use_fast_modules(model, "cuda")
    before = torch.cuda.get_rng_state()
    speed.compile_with_warm_up(model, "cuda", 2, TINY.block_size, amp=True)
    assert torch.equal(torch.cuda.get_rng_state(), before)


@pytest.mark.skipif(not speed.has_mps(), reason="needs an Apple GPU (MPS)")
def test_on_mps_a_run_with_dropout_resumes_exactly(titles_file, tmp_path):
    cfg = tiny(titles_file, tmp_path, device="mps", dropout=0.1)
    whole = train.run(name="whole", **cfg)
    cut = train.run(name="cut", **dict(cfg, max_steps=7))
    resumed = train.run(resume=cut["ckpt"])
    assert resumed["final_val_loss"] == whole["final_val_loss"]


# ----------------------------------------------------------------------------------------------
# a newcomer's surprises: interruptions, a corrupt cache, a folder as data, messages that name real flags

def test_ctrl_c_before_the_first_step_is_one_line_and_leaves_no_run(titles_file, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(dataset.Tokenizer, "train", interrupted)  # Ctrl-C while the tokenizer trains
    cfg = tiny(titles_file, tmp_path)
    argv = [f"--{k}={v}" for k, v in cfg.items() if not isinstance(v, bool)] + ["--no-compile", "--no-amp", "--no-progress"]
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    assert e.value.code == 130 and "interrupted" in capsys.readouterr().err
    assert [p for p in os.listdir(cfg["out_dir"]) if p != ".tokenizers"] == []


def test_a_corrupt_tokenizer_cache_is_rebuilt(titles_file, tmp_path, capsys):
    first = train.run(name="a", **tiny(titles_file, tmp_path, epochs=1, max_steps=1))
    [cached] = glob.glob(os.path.join(tmp_path, "runs", ".tokenizers", "*.json"))
    with open(cached, "w") as f:
        f.write("{not json")
    second = train.run(name="b", **tiny(titles_file, tmp_path, epochs=1, max_steps=1))
    assert "unusable" in capsys.readouterr().out and second["last_val_loss"] == first["last_val_loss"]
    Tokenizer.load(cached)  # rebuilt


def test_a_folder_as_data_is_one_sentence(tmp_path):
    with pytest.raises(train.ConfigError, match="is a folder; pass --data FILE"):
        dataset.read_titles(str(tmp_path))


def test_evaluate_ctrl_c_prints_what_was_scored_and_exits_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(evaluate, "evaluate", interrupted)
    with pytest.raises(SystemExit) as e:
        evaluate.main(["runs/x", "--device", "cpu"])
    assert e.value.code == 130 and "interrupted after scoring 0 of 1" in capsys.readouterr().err


def flags_of(parser):
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")} | \
        {"--no-" + s[2:] for a in parser._actions if isinstance(a, argparse.BooleanOptionalAction)
         for s in a.option_strings}


def test_every_message_names_only_flags_its_program_accepts():
    """The flags named in a file's strings (its error messages and hints) are flags of the program that
    prints them; a flag of another program is named with that program ("python train.py --resume")."""
    train_flags = flags_of(train.build_parser())
    programs = {"train.py": train_flags, "dataset.py": train_flags, "checkpoint.py": train_flags,
                "speed.py": train_flags, "evaluate.py": flags_of(evaluate.build_parser())}
    for name, accepted in programs.items():
        with open(os.path.join(HERE, name), encoding="utf-8") as f:
            text = re.sub(r"((train|bench|tune|evaluate)\.py|torchrun)( \w+)?( --[\w-]+( [A-Z_/.\w]+)?)+", "", f.read())
        named = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", text))
        assert named <= accepted, (name, named - accepted)


@pytest.fixture(scope="module")
def study_titles(tmp_path_factory):
    """600 made-up titles with a little structure, so a tiny model's loss falls within one epoch."""
    r = random.Random(0)
    words = [["Show HN", "Ask HN", "Launch HN", "Tell HN"], ["fast", "small", "simple", "new", "tiny"],
             ["database", "compiler", "editor", "browser", "shell", "kernel"], ["Rust", "Go", "Python", "C", "Zig"]]
    path = tmp_path_factory.mktemp("data") / "titles.txt"
    path.write_text("".join(f"{r.choice(words[0])}: A {r.choice(words[1])} {r.choice(words[2])} written in "
                            f"{r.choice(words[3])}\n" for _ in range(600)), encoding="utf-8")
    return str(path)


def tiny_flags(study_titles):
    return ["--data", study_titles, "--num_titles", "400", "--test_titles", "100", "--vocab_size", "300",
            "--n_layer", "1", "--n_head", "2", "--d_model", "32", "--batch_size", "8", "--epochs", "1",
            "--opt", "adamw", "--device", "cpu", "--no-compile", "--no-amp", "--no-progress"]


# -----------------------------------------------------------------------------
# plot_logs.py


def write_log(path, name, events):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(e) for e in events) + "\n")


def fake_log(path, name, final, preset=None, t0=0.0, steps=30, time_s=60.0, status="done",
             total_steps=None, machine=None, **flags):
    """A finished run: train loss 4 - step/10 (loss_per_char: / 4, 4 characters a token) every 5 steps and
    at the last, val loss falling to `final` at steps 0, steps // 2 and steps (elapsed_s: the step). A run
    stopped early (--max_steps) ends at `steps` of `total_steps`. `machine` adds device, amp and versions
    to the config event. `flags` override the config."""
    cfg = dict(train.defaults(), **(train.PRESETS[preset]["flags"] if preset else {}), preset=preset, epochs=1)
    cfg.update(flags)
    study = train.PRESETS.get(preset, {})
    events = [{"event": "config", "time": t0, "name": name, "config": cfg, "device": "cpu", "n_params": 2560128,
               "total_steps": total_steps or steps, **(machine or {}),
               "preset": {"name": preset, "change": study.get("change"), "study_val_loss": study.get("study_val_loss")}}]
    for step in range(steps + 1):
        if step and (step % 5 == 0 or step == steps):
            events.append({"event": "train", "time": t0 + step, "step": step, "epoch": step / steps,
                           "loss": 4 - step / 10, "loss_per_char": (4 - step / 10) / 4, "lr": 1e-3,
                           "tokens_per_s": 1000.0})
        if step in (0, steps // 2, steps):
            events.append({"event": "eval", "time": t0 + step, "step": step, "epoch": step / steps,
                           "val_loss": final + (steps - step) / steps, "elapsed_s": float(step)})
    events.append({"event": "end", "time": t0 + 60, "status": status, "final_val_loss": final,
                   "best_val_loss": final, "steps": steps, "tokens_per_s": 1000.0, "time_s": time_s})
    write_log(path, name, events)


def test_read_log_stops_at_a_garbage_line_and_skips_a_half_written_last_one(tmp_path, capsys):
    path = str(tmp_path / "x" / "log.jsonl")
    fake_log(path, "x", 1.3, steps=10)
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path, "w") as f:  # a line that is not JSON, and not the last: an error naming the line
        f.write("\n".join(lines[:2] + ["garbage"] + lines[2:]) + "\n")
    with pytest.raises(SystemExit, match=f"^error: {re.escape(path)} line 3 is not JSON; [^\n]*$"):
        plot_logs.main(["--ablation", "--runs", path])
    with open(path, "w") as f:  # a run killed while writing its last line: the rest is read, with a warning
        f.write("\n".join(lines) + '\n{"event": "train", "st')
    run = plot_logs.read_log(path)
    assert capsys.readouterr().err == f"warning: {path} ends in a half-written line (a run killed mid-write); skipped\n"
    assert run["evals"] == [(0.0, 2.3), (0.5, 1.8), (1.0, 1.3)] and plot_logs.finished(run)
    write_log(path, "x", [json.loads(line) for line in lines[1:]])  # no config event: one sentence
    with pytest.raises(SystemExit, match=f"^error: {re.escape(path)} has no config event; is it a nanorun log.jsonl"):
        plot_logs.main(["--runs", path])


def test_plot_logs_marks_a_run_stopped_by_max_steps_unfinished(tmp_path, capsys):
    fake_log(str(tmp_path / "cut" / "log.jsonl"), "cut", 1.5, steps=10, total_steps=17)  # "done", at 10 of 17
    fake_log(str(tmp_path / "all" / "log.jsonl"), "all", 1.4, steps=17, t0=1, lr=1e-3)
    runs = [plot_logs.read_log(str(tmp_path / name / "log.jsonl")) for name in ("cut", "all")]
    assert [plot_logs.finished(run) for run in runs] == [False, True]
    plot_logs.main(["--ablation", "--runs", str(tmp_path / "*" / "log.jsonl")])
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[2] for line in out if line.startswith("| ") and "---" not in line][1:] == \
        ["1.5000 *", "1.4000"]
    assert out[-1].startswith("* unfinished: the run stopped before its last step")
    fig = plot_logs.figure(plot_logs.group_runs(runs), ["cut", "all"])
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["cut  1.5000 *", "all  1.4000"]
    assert "* unfinished" in legend.get_title().get_text()


def test_ladder_device_column_names_the_gpu_or_the_cpu_and_the_precision(tmp_path, capsys):
    h100 = {"device": "cuda", "amp": True, "versions": {"gpu": "NVIDIA H100 80GB HBM3", "cpu": "Intel(R) Xeon(R)"}}
    epyc = {"device": "cpu", "amp": False, "versions": {"gpu": None, "cpu": "AMD EPYC 7B13"}}
    fake_log(str(tmp_path / "g" / "log.jsonl"), "g", 1.3, preset="step6", machine=h100)
    fake_log(str(tmp_path / "c" / "log.jsonl"), "c", 1.4, preset="step5", t0=1, machine=epyc)
    fake_log(str(tmp_path / "n" / "log.jsonl"), "n", 1.5, preset="step0", t0=2)  # no versions: the device's kind
    plot_logs.main(["--table", "--runs", str(tmp_path / "*" / "log.jsonl")])
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[4:]]
    assert [(row[0], row[2], row[4], row[-1]) for row in rows] == [
        ("| step0", "baseline: SGD, constant lr", "1.7533", "cpu |"),
        ("| step5", "smaller model; no wd on bias/norm/emb; lr floor", "1.2935", "AMD EPYC 7B13 fp32 |"),
        ("| step6", "smaller still", "1.3206", "NVIDIA H100 80GB HBM3 bf16 |")]


def test_versions_names_a_missing_package_none(monkeypatch):
    """train.py needs no optuna (a GPU machine may not have it): its log says None instead of crashing."""
    import importlib.metadata
    real = importlib.metadata.version

    def version(package):
        if package == "optuna":
            raise importlib.metadata.PackageNotFoundError(package)
        return real(package)
    monkeypatch.setattr(importlib.metadata, "version", version)
    v = train.versions()
    assert v["optuna"] is None and v["numpy"] == real("numpy") and v["torch"] == torch.__version__


def test_read_log_drops_steps_logged_again_after_resume(tmp_path):
    # steps 1-3 ran, the checkpoint is at step 2 (its eval), the run was killed during step 3 and resumed
    path = str(tmp_path / "r" / "log.jsonl")
    events = [{"event": "config", "time": 0, "name": "r", "config": {}},
              {"event": "train", "step": 1, "epoch": 0.25, "loss": 3.0, "loss_per_char": 0.75},
              {"event": "train", "step": 2, "epoch": 0.5, "loss": 2.5, "loss_per_char": 0.625},
              {"event": "eval", "step": 2, "epoch": 0.5, "val_loss": 2.0, "elapsed_s": 20.0},
              {"event": "train", "step": 3, "epoch": 0.75, "loss": 9.9, "loss_per_char": 2.475},
              {"event": "end", "status": "interrupted", "final_val_loss": 2.0},
              {"event": "resume", "step": 2, "elapsed_s": 21.0},
              {"event": "train", "step": 3, "epoch": 0.75, "loss": 2.2, "loss_per_char": 0.55},
              {"event": "eval", "step": 4, "epoch": 1.0, "val_loss": 1.8, "elapsed_s": 40.0}]
    write_log(path, "r", events)
    with open(path, "a") as f:
        f.write('{"event": "train", "st')  # killed mid-line
    run = plot_logs.read_log(path)
    assert run["train"] == [(0.25, 3.0), (0.5, 2.5), (0.75, 2.2)]
    assert run["evals"] == [(0.5, 2.0), (1.0, 1.8)]
    assert run["end"] is None and plot_logs.final_val_loss(run) == 1.8


def test_read_log_reads_loss_per_char_and_elapsed_time(tmp_path):
    path = str(tmp_path / "r" / "log.jsonl")
    fake_log(path, "r", 1.3, steps=12)  # train events at 5, 10 and the last step, 12
    run = plot_logs.read_log(path)
    assert run["train"] == [(5 / 12, 3.5), (10 / 12, 3.0), (1.0, 2.8)]
    assert run["train_per_char"] == [(5 / 12, 0.875), (10 / 12, 0.75), (1.0, 0.7)]
    assert run["elapsed_s"] == 12.0


def test_read_log_times_a_resumed_run_on_the_clock_its_checkpoint_kept(tmp_path):
    path = str(tmp_path / "r" / "log.jsonl")
    events = [{"event": "config", "time": 0, "name": "r", "config": {}},
              {"event": "eval", "step": 2, "epoch": 0.5, "val_loss": 2.0, "elapsed_s": 30.0},
              {"event": "resume", "step": 2, "elapsed_s": 31.0},
              {"event": "eval", "step": 4, "epoch": 1.0, "val_loss": 1.8, "elapsed_s": 50.0},
              {"event": "end", "status": "done", "final_val_loss": 1.8, "time_s": 52.0}]
    write_log(path, "r", events)
    run = plot_logs.read_log(path)
    assert run["eval_s"] == [30.0, 50.0] and plot_logs.run_time(run) == 52.0
    assert [plot_logs.time_to_cell([run], target) for target in (2.0, 1.9)] == ["30 s", "50 s"]
    del events[3]["elapsed_s"]  # a log from before evaluations were timed: one sentence naming the line
    write_log(path, "r", events)
    with pytest.raises(ValueError, match=f"^{re.escape(path)} line 4 has no 'elapsed_s'; "):
        plot_logs.read_log(path)


def runs_in(tmp_path):
    runs = sorted((plot_logs.read_log(p) for p in glob.glob(str(tmp_path / "*" / "log.jsonl"))),
                  key=lambda r: r["config"]["time"])
    return plot_logs.group_runs(runs)


def test_plot_logs_writes_png_from_two_logs(tmp_path):
    fake_log(str(tmp_path / "a" / "log.jsonl"), "a", 1.5)
    fake_log(str(tmp_path / "b" / "log.jsonl"), "b", 1.3, t0=1.0, lr=1e-3)
    out = tmp_path / "figure.png"
    plot_logs.main(["--runs", str(tmp_path / "*" / "log.jsonl"), "--out", str(out)])
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image
    h, w, _ = matplotlib.image.imread(str(out)).shape
    assert w > 1000 and h > 500
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "figure.png"]  # no temporary file left behind
    (tmp_path / "FILE").write_text("")  # a folder that cannot be made: one sentence, nothing written
    with pytest.raises(SystemExit, match="error: cannot write .*FILE/fig.png"):
        plot_logs.main(["--runs", str(tmp_path / "*" / "log.jsonl"), "--out", str(tmp_path / "FILE" / "fig.png")])


def test_figure_train_panel_is_in_nats_per_char_and_ends_at_the_last_epoch(tmp_path):
    fake_log(str(tmp_path / "a" / "log.jsonl"), "a", 1.5, steps=30)
    fake_log(str(tmp_path / "b" / "log.jsonl"), "b", 1.3, steps=20, t0=1.0, lr=1e-3)
    fig = plot_logs.figure(runs_in(tmp_path), ["a", "b"])
    ax_val, ax_train = fig.axes[:2]
    assert ax_train.get_ylabel() == "train loss (nats/char)" and ax_val.get_ylabel() == "val loss (nats/char)"
    assert ax_train.get_xlabel() == ax_val.get_xlabel() == "epoch"
    assert ax_train.get_xlim() == ax_val.get_xlim() == (0, 1.0)  # both runs reached epoch 1; no margin beyond
    assert [t.get_text() for t in ax_val.get_legend().get_texts()] == ["a  1.5000", "b  1.3000"]


def test_figure_of_a_run_with_one_train_point_draws_it(tmp_path):
    fake_log(str(tmp_path / "a" / "log.jsonl"), "a", 1.5, steps=3)  # logs only its last step
    fig = plot_logs.figure(runs_in(tmp_path), ["a"])
    ax_train = fig.axes[1]
    assert ax_train.get_ylabel() == "train loss (nats/char)"
    assert ax_train.lines[0].get_xydata().tolist() == [[1.0, (4 - 0.3) / 4]]  # the point itself, unsmoothed
    assert ax_train.lines[0].get_marker() == "o"  # a single point has no line to show it
    out = tmp_path / "figure.png"
    fig.savefig(out, format="png")  # a figure without pyplot: no display needed
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_recipe_groups_seeds_and_keeps_other_settings_apart():
    base = dict(train.defaults(), preset="step6", epochs=1)
    configs = [dict(base, seed=1), dict(base, seed=2, name="b", out_dir="elsewhere", device="cuda", compile=True),
               dict(base, seed=1, lr=1e-3), dict(base, seed=3, log_every=1, progress=False, data="copy.txt")]
    shas = ["ab12", "ab12", "ab12", "ab12"]  # the copy holds the same titles

    def groups():
        runs = [{"i": i, "config": {"config": c, "data": {"sha256": s}}} for i, (c, s) in enumerate(zip(configs, shas))]
        return [[run["i"] for run in group] for group in plot_logs.group_runs(runs)]
    assert groups() == [[0, 1, 3], [2]]
    shas[3] = "ff00"  # other titles behind the same name: another recipe
    assert groups() == [[0, 1], [2], [3]]
    assert plot_logs.recipe_labels([configs[0], configs[2], dict(base, opt="adamw", rope=True)]) == \
        ["step6", "step6 --lr 0.001", "step6 --rope --opt adamw"]  # each against the first of its preset, config order


def test_figure_draws_seeds_of_one_recipe_as_a_mean_in_a_band(tmp_path):
    for seed, final in [(1, 1.40), (2, 1.42), (3, 1.41)]:
        fake_log(str(tmp_path / f"s{seed}" / "log.jsonl"), f"s{seed}", final, t0=seed, seed=seed)
    fake_log(str(tmp_path / "lr" / "log.jsonl"), "lr", 1.6, t0=9, lr=1e-3)
    groups = runs_in(tmp_path)
    assert [[r["name"] for r in g] for g in groups] == [["s1", "s2", "s3"], ["lr"]]
    fig = plot_logs.figure(groups, ["defaults (3 seeds)", "lr"])
    ax_val, ax_train = fig.axes[:2]
    assert ax_val.lines[0].get_xydata()[:, 1] == pytest.approx([2.41, 1.91, 1.41])  # the seeds' mean
    assert len(ax_val.collections) == 1 and len(ax_train.collections) == 1  # one band each, for the group
    legend = ax_val.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["defaults (3 seeds)  1.4100 ± 0.0200", "lr  1.6000"]
    assert legend.get_title().get_text() == "final val loss\nband: lowest to highest seed"  # all finished: no *


def test_ladder_table_lists_presets_in_study_order(tmp_path, capsys):
    fake_log(str(tmp_path / "s6" / "log.jsonl"), "s6", 1.4, preset="step6")
    fake_log(str(tmp_path / "s6b" / "log.jsonl"), "s6b", 1.45, preset="step6", t0=2.0, seed=2,
             steps=10, total_steps=30)  # stopped by --max_steps
    fake_log(str(tmp_path / "s0" / "log.jsonl"), "s0", 1.9, preset="step0", t0=5.0)
    fake_log(str(tmp_path / "x" / "log.jsonl"), "x", 1.2)  # not a preset: not in the ladder
    plot_logs.main(["--table", "--runs", str(tmp_path / "*" / "log.jsonl")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("nanorun ladder: 100,000 titles x 1 epoch of data/hn_titles.txt "
                        "(the study: 100,000 titles x 7 epochs)")
    assert lines[2] == "| step | run | change | nanorun val loss | study val loss | time | device |"
    assert lines[4:] == ["| step0 | s0 | baseline: SGD, constant lr | 1.9000 | 1.7533 | 60 s | cpu |",
                         "| step6 | s6 | smaller still | 1.4000 | 1.3206 | 60 s | cpu |",
                         "| step6 | s6b | smaller still | 1.4500 * | 1.3206 | 60 s | cpu |", "",
                         "* unfinished: the run stopped before its last step (interrupted, diverged or --max_steps); "
                         "its last evaluation is counted."]


def test_ablation_table_one_row_per_recipe_mean_and_spread(tmp_path, capsys):
    # in config-time order: step6 x 3 seeds, AdamW with rho x 2 seeds (the first made before the
    # last step6 seed), one run with another lr, interrupted after its last evaluation
    logs = [("base-1", 1.40, 0, 60.0, dict(seed=1)), ("base-2", 1.42, 1, 70.0, dict(seed=2)),
            ("adamw-1", 1.30, 2, 100.0, dict(seed=1, opt="adamw", rho=0.5)),
            ("base-3", 1.41, 3, 80.0, dict(seed=3)), ("lr-1", 1.5, 4, 200.0, dict(seed=1, lr=1e-3)),
            ("adamw-2", 1.34, 5, 140.0, dict(seed=2, opt="adamw", rho=0.5))]
    for name, final, t0, time_s, flags in logs:
        status = "interrupted" if name == "lr-1" else "done"
        fake_log(str(tmp_path / name / "log.jsonl"), name, final, preset="step6", t0=t0, time_s=time_s,
                 status=status, **flags)  # evaluations at 0, 15 and 30 s
    plot_logs.main(["--ablation", "--target", "1.41", "--runs", str(tmp_path / "*" / "log.jsonl")])
    assert capsys.readouterr().out.splitlines() == [
        "ablation: 3 recipes, 6 runs, 100,000 titles x 1 epoch of data/hn_titles.txt",
        "",
        "| # | change | val loss | seeds | params | mean time | device | time to 1.41 |",
        "|---|---|---|---|---|---|---|---|",
        "| 1 | step6 | 1.4100 ± 0.0200 | 3 | 2.56M | 70 s | cpu | 30 s (2 of 3 seeds) |",
        "| 2 | step6 --opt adamw --rho 0.5 | 1.3200 ± 0.0400 | 2 | 2.56M | 2.0 min | cpu | 30 s |",
        "| 3 | step6 --lr 0.001 | 1.5000 * | 1 | 2.56M | 3.3 min | cpu | not reached |",
        "",
        "change: the row's preset, and the flags in which it differs from that preset's first row.",
        "val loss: final validation loss, nats per character, mean ± spread (max − min) over the seeds; "
        "a difference between rows under twice the spread is noise.",
        "time to 1.41: from a run's start (tokenizer and compilation included) to its first evaluation "
        "at or below 1.41, mean over the seeds that reached it.",
        "* unfinished: the run stopped before its last step (interrupted, diverged or --max_steps); "
        "its last evaluation is counted."]
    plot_logs.main(["--ablation", "--target", "0", "--runs", str(tmp_path / "*" / "log.jsonl")])
    assert "| # | change | val loss | seeds | params | mean time | device |" in capsys.readouterr().out.splitlines()
    plot_logs.main(["--ablation", "--runs", str(tmp_path / "*" / "log.jsonl")])  # by default: the study's number
    assert "| # | change | val loss | seeds | params | mean time | device | time to 1.3206 |" in \
        capsys.readouterr().out.splitlines()
    # several globs: rows in the globs' order (runs made at once by make ablate JOBS=... finish in any order)
    globs = [str(tmp_path / f"{row}*" / "log.jsonl") for row in ("lr-", "adamw-", "")]
    plot_logs.main(["--ablation", "--runs", *globs])
    rows = [line.split(" | ")[1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert rows == ["step6", "step6 --opt adamw --lr 0.0021 --rho 0.5", "step6 --lr 0.0021"]  # against row 1
    with pytest.raises(SystemExit, match="no log matches --runs '.*nothing"):
        plot_logs.main(["--ablation", "--runs", str(tmp_path / "*" / "log.jsonl"), str(tmp_path / "nothing")])


def test_ablation_table_shows_the_held_out_test_losses_evaluate_printed_for_the_runs(tmp_path, capsys):
    for seed, final in ((1, 1.40), (2, 1.42), (3, 1.41)):
        fake_log(str(tmp_path / "a" / f"base-{seed}" / "log.jsonl"), f"base-{seed}", final, preset="step6", t0=seed,
                 seed=seed)
    # elsewhere, a run of the same name and final val loss that evaluate.py never saw
    fake_log(str(tmp_path / "b" / "base-1" / "log.jsonl"), "base-1", 1.40, preset="step6", lr=1e-3)
    result = lambda name, loss, val: dict(checkpoint=f"runs/{name}/ckpt.pt", params=2560128, test_titles=100,
                                          loss=loss, perplexity=math.exp(loss), tokens_per_char=0.3, val_loss=val,
                                          time_s=1.0)
    table = evaluate.markdown_table([result("base-1", 1.30, 1.40), result("base-2", 1.34, 1.42),
                                     result("base-3", 1.20, 1.39)])  # base-3: an earlier checkpoint of the run
    (tmp_path / "a" / "evaluate.txt").write_text("Held-out test titles of t.txt\n\n" + table + "\n")
    runs = [str(tmp_path / d / "*" / "log.jsonl") for d in ("a", "b")]
    plot_logs.main(["--ablation", "--target", "0", "--runs", *runs])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| # | change | val loss | held-out test | seeds | params | mean time | device |"
    assert lines[4].startswith("| 1 | step6 | 1.4100 ± 0.0200 | 1.3200 ± 0.0400 (2 of 3 seeds) | 3 |")
    assert lines[5].startswith("| 2 | step6 --lr 0.001 | 1.4000 | - | 1 |")
    (tmp_path / "a" / "evaluate.txt").write_text("Held-out test titles of t.txt\n")  # nothing was scored: no column
    plot_logs.main(["--ablation", "--target", "0", "--runs", *runs])
    assert "held-out test" not in capsys.readouterr().out


def test_figure_names_a_group_by_its_recipe(tmp_path, capsys, monkeypatch):
    for seed in (1, 2):
        fake_log(str(tmp_path / f"s{seed}" / "log.jsonl"), f"s{seed}", 1.4, preset="step6", t0=seed, seed=seed)
    fake_log(str(tmp_path / "one" / "log.jsonl"), "one", 1.3, preset="step6", t0=3, dropout=0.1)
    groups = runs_in(tmp_path)
    configs = [g[0]["config"]["config"] for g in groups]
    assert plot_logs.recipe_labels(configs) == ["step6", "step6 --dropout 0.1"]
    out = tmp_path / "figure.png"
    plot_logs.main(["--runs", str(tmp_path / "*" / "log.jsonl"), "--out", str(out)])
    assert capsys.readouterr().out == f"wrote {out} (3 runs, 2 recipes)\n"
    assert out.exists()

    figures, figure = [], plot_logs.figure
    monkeypatch.setattr(plot_logs, "figure", lambda groups, labels: figures.append(figure(groups, labels)) or
                        figures[-1])
    def legend(*args):
        plot_logs.main(["--runs", str(tmp_path / "*" / "log.jsonl"), *args])
        return [t.get_text().split("  ")[0] for t in figures[-1].axes[0].get_legend().get_texts()]  # less the loss
    assert legend() == ["step6 (2 seeds)", "one"]
    for seed in (1, 2):  # seeds named as make ablate names them: the group takes the name they share
        fake_log(str(tmp_path / f"a long name for a row-s{seed}" / "log.jsonl"), f"a long name for a row-s{seed}",
                 1.4 - seed / 1000, preset="step6", t0=4 + seed, seed=seed, lr=1e-4)
    assert legend() == ["step6 (2 seeds)", "one", "a long name for a row (2 seeds)"]
    assert legend("--labels", "base", "dropout", "low lr") == ["base (2 seeds)", "dropout", "low lr (2 seeds)"]
    with pytest.raises(SystemExit, match="--labels gives 1 names for 3 recipes"):
        legend("--labels", "base")


# -----------------------------------------------------------------------------
# evaluate.py


@pytest.fixture(scope="module")
def tiny_ckpt(study_titles, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    result = train.run(data=study_titles, num_titles=400, test_titles=100, vocab_size=300, n_layer=1, n_head=2,
                       d_model=32, block_size=16, batch_size=8, epochs=1, device="cpu", compile=False, amp=False,
                       out_dir=str(out), progress=False, sample=0, name="tiny")
    return result["ckpt"]


def test_evaluate_equals_the_metric_computed_by_hand(tiny_ckpt, study_titles, capsys):
    r = evaluate.evaluate(tiny_ckpt, device="cpu")
    model, tok, _ = evaluate.load_model(tiny_ckpt)
    with open(study_titles, encoding="utf-8") as f:
        test = [line.strip() for line in f][400:500]
    text = "<eos>".join(test) + "<eos>"
    ids = [tok.eos_id] + tok.encode_titles(test)
    # a plain loop: windows of 16 predictions tile the stream, each token scored once, no padding
    nats, T = 0.0, 16
    with torch.no_grad():
        for s in range(0, len(ids) - 1, T):
            y = torch.tensor(ids[s + 1:s + T + 1])
            logits, _ = model(torch.tensor(ids[s:s + len(y)])[None])
            nats += F.cross_entropy(logits[0], y, reduction="sum").item()
    assert r["test_titles"] == 100 and r["chars"] == len(text)
    assert r["loss"] == pytest.approx(nats / len(text), rel=1e-5)
    assert r["perplexity"] == pytest.approx(math.exp(nats / len(text)), rel=1e-5)
    assert r["tokens_per_char"] == pytest.approx((len(ids) - 1) / len(text))
    assert r["params"] == sum(p.numel() for p in model.parameters())
    evaluate.main([tiny_ckpt, "--device", "cpu"])
    row = f"| {tiny_ckpt} | {r['params']:,} | 100 | {r['loss']:.4f} | {r['perplexity']:.4f} |"
    assert row in capsys.readouterr().out


def test_evaluate_marks_a_checkpoint_saved_before_its_last_step(study_titles, tmp_path, capsys):
    cut = train.run(data=study_titles, num_titles=400, test_titles=100, vocab_size=300, n_layer=1, n_head=2,
                    d_model=32, block_size=16, batch_size=8, epochs=1, max_steps=3, device="cpu", compile=False,
                    amp=False, out_dir=str(tmp_path), progress=False, sample=0, name="cut")
    assert cut["steps"] == 3 < cut["total_steps"]
    evaluate.main([cut["ckpt"], "--device", "cpu"])
    out = capsys.readouterr().out
    assert f"| {cut['ckpt']} * |" in out and "unfinished" in out


def test_evaluate_scores_the_others_when_a_run_kept_no_test_titles(tiny_ckpt, tmp_path, capsys):
    notest = tmp_path / "notest"  # the same run, as if trained with --test_titles 0
    notest.mkdir()
    ckpt = torch.load(tiny_ckpt, weights_only=False)
    ckpt["config"]["test_titles"] = 0
    torch.save(ckpt, notest / "ckpt.pt")
    shutil.copy(os.path.join(os.path.dirname(tiny_ckpt), "tokenizer.json"), notest)
    with pytest.raises(SystemExit, match="1 of 2 checkpoints could not be scored"):
        evaluate.main([str(notest), tiny_ckpt, "--device", "cpu"])  # a run folder works as well as its ckpt.pt
    out, err = capsys.readouterr()
    assert "kept no test titles (it was trained with --test_titles 0)" in err and "--test_titles N" in err
    row = next(line for line in out.splitlines() if line.startswith(f"| {tiny_ckpt} |"))
    evaluate.main([str(notest), "--test_titles", "100", "--device", "cpu"])  # how to score it anyway
    again = next(line for line in capsys.readouterr().out.splitlines() if "notest" in line)
    assert again.split("|")[2:6] == row.split("|")[2:6]  # same model, same 100 titles: the same numbers


def test_evaluate_bad_input_is_one_clear_sentence(tiny_ckpt, study_titles, tmp_path, capsys):
    ckpt = torch.load(tiny_ckpt, weights_only=False)
    run_dir = os.path.dirname(tiny_ckpt)
    (tmp_path / "no_tok").mkdir()
    torch.save(ckpt, tmp_path / "no_tok" / "ckpt.pt")
    (tmp_path / "other_tok").mkdir()
    torch.save(ckpt, tmp_path / "other_tok" / "ckpt.pt")
    with open(os.path.join(run_dir, "tokenizer.json"), encoding="utf-8") as f:
        (tmp_path / "other_tok" / "tokenizer.json").write_text(f.read().replace("[", "[ ", 1), encoding="utf-8")
    (tmp_path / "no_config").mkdir()
    torch.save({k: v for k, v in ckpt.items() if k != "config"}, tmp_path / "no_config" / "ckpt.pt")
    with open(study_titles, encoding="utf-8") as f:
        lines = f.readlines()
    (tmp_path / "short.txt").write_text("".join(lines[:400]), encoding="utf-8")
    (tmp_path / "shifted.txt").write_text("".join(lines[1:]), encoding="utf-8")
    cases = [([str(tmp_path / "no_tok" / "ckpt.pt")], "is missing"),
             ([str(tmp_path / "other_tok" / "ckpt.pt")], "sha256 differs"),
             ([str(tmp_path / "no_config" / "ckpt.pt")], "not a version-1 nanorun checkpoint"),
             ([tiny_ckpt, "--data", str(tmp_path / "short.txt")], "has no titles after the first 400"),
             ([tiny_ckpt, "--data", str(tmp_path / "shifted.txt")], "does not begin with the 400 titles")]
    for argv, words in cases:
        with pytest.raises(SystemExit) as e:
            evaluate.main(argv + ["--device", "cpu"])
        err = capsys.readouterr().err
        assert str(e.value) == "error: 1 of 1 checkpoints could not be scored (see above)"
        assert "error: " in err and words in err, (argv, err)
        assert str(e.value).count("; ") <= 1 and "\n" not in str(e.value)


# -----------------------------------------------------------------------------
# README.md's numbers are the logs' numbers

TABLE = re.compile(r"<!-- table: python plot_logs\.py (.*?) -->\n(.*?)<!-- /table -->", re.S)


def readme_mismatches(text, capsys):
    """The README tables that differ from what plot_logs.py prints from records/ (each under its command)."""
    bad = []
    for args, shown in TABLE.findall(text):
        plot_logs.main(shlex.split(args))
        if capsys.readouterr().out.strip() != shown.strip():
            bad.append(args)
    return bad


def test_readme_tables_are_what_plot_logs_prints_from_the_records(capsys, monkeypatch):
    monkeypatch.chdir(HERE)  # the commands' globs are relative to the repository
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert len(TABLE.findall(text)) >= 2
    assert readme_mismatches(text, capsys) == []
    # and the check can fail: one number of a table edited in the last digit
    args, shown = TABLE.findall(text)[0]
    number = re.search(r"\d\.\d{4}", shown).group()
    edited = text.replace(shown, shown.replace(number, number[:-1] + str((int(number[-1]) + 1) % 10), 1))
    assert readme_mismatches(edited, capsys) == [args]


def test_mfu_yardstick_is_the_best_peak_seen_on_this_machine(tmp_path):
    path = str(tmp_path / "peaks.json")
    assert speed.best_peak_seen(path, "cpu", 100e9, "float32") == (100e9, "float32")  # first: what it measured
    assert speed.best_peak_seen(path, "cpu", 60e9, "float32") == (100e9, "float32")   # a slow start-up: the best
    assert speed.best_peak_seen(path, "cpu", 150e9, "bfloat16") == (150e9, "bfloat16")  # a faster one replaces it
    assert list(json.load(open(path)).values()) == [[150e9, "bfloat16"]]
    with open(path, "w") as f:
        f.write("{not json")
    assert speed.best_peak_seen(path, "cpu", 70e9, "float32") == (70e9, "float32")  # a damaged file starts again
    with open(path, "w") as f:
        json.dump([1, 2], f)
    assert speed.best_peak_seen(path, "cpu", 80e9, "float32") == (80e9, "float32")  # so does one that is no table
    assert speed.best_peak_seen(str(tmp_path / "no" / "such" / "dir.json"), "cpu", 5e9, "float32") == (5e9, "float32")


def test_readme_set_up_numbers_are_the_first_runs_logs():
    """The set-up's sentence on `make run` and `make test` is records/first-run/: the run's log, pytest's output."""
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
        text = " ".join(f.read().split())
    said = re.search(r"(\d+) steps to a validation loss of (\d\.\d{4}) in (\d+) s .*?step-0 evaluation done at "
                     r"(\d+) s.*?`make test` took (\d+) s", text)
    with open(os.path.join(HERE, "records", "first-run", "make-run", "log.jsonl"), encoding="utf-8") as f:
        events = [json.loads(line) for line in f]
    end = next(e for e in events if e["event"] == "end")
    step0 = next(e for e in events if e["event"] == "eval")  # logged when the step-0 evaluation is done
    with open(os.path.join(HERE, "records", "first-run", "make-test.txt"), encoding="utf-8") as f:
        tested = float(re.search(r"passed.* in ([\d.]+)s", f.read()).group(1))
    assert said is not None
    assert said.groups() == (str(end["steps"]), f"{end['final_val_loss']:.4f}", str(round(end["time_s"])),
                             str(round(step0["elapsed_s"])), str(round(tested)))


# -----------------------------------------------------------------------------
# tune.py


def test_the_nanorun_presets_take_the_changes_measured_for_them_and_step6_none():
    keys = ("window_offsets", "epochs", "attn_gate", "relu2", "ema")
    settings = lambda preset: [train.resolve_config({"preset": preset})[k] for k in keys]
    assert settings("nanorun") == [True, 6, True, True, 0.995]
    assert settings("nanorun12m") == [True, 5, True, True, 0.0]  # the average not measured at 12.2M with 3 seeds
    assert settings("step6") == [False, 7, False, False, 0.0]  # as the study ran it


def test_search_space_holds_the_untuned_recipe():
    # ranges hold the untuned recipe's values (step 2's block size 128, SGD's lr) so it can be trial 0
    space = tune.search_space(dict(train.defaults(), **train.PRESETS["step0"]["flags"]), set())
    assert space["lr"] == ("log", 1e-3, 1.0) and space["block_size"] == ("choice", [32, 64, 128])
    assert tune.search_space(train.defaults(), set())["rho"] == ("log", 0.05, 3.0)  # ASAM, the study's 0.05 inside


def test_tune_study_prunes_fails_and_resumes(study_titles, tmp_path, monkeypatch, capsys):
    db, out = f"sqlite:///{tmp_path}/tune.db", str(tmp_path / "runs")
    flags = ["--storage", db, "--study", "s", "--prune_after", "1", *tiny_flags(study_titles), "--out_dir", out]
    study = optuna.create_study(storage=db, study_name="s", direction="minimize")
    study.enqueue_trial({"lr": 1e-2})  # learns fast: the median to beat
    study.enqueue_trial({"lr": 1e-4})  # barely moves: behind trial 0 at the first evaluation, so pruned
    real_run = train.run

    def crash_trial_2(callback=None, **config):
        if config["name"] == "s-t2":
            raise RuntimeError("a crash")
        return real_run(callback=callback, **config)

    monkeypatch.setattr(train, "run", crash_trial_2)
    tune.main(["--trials", "3", *flags])
    S = optuna.trial.TrialState
    trials = optuna.load_study(study_name="s", storage=db).get_trials()
    assert [t.state for t in trials] == [S.COMPLETE, S.PRUNED, S.FAIL]
    with open(os.path.join(out, "s-t0", "log.jsonl")) as f:
        end = [json.loads(line) for line in f][-1]
    assert end["status"] == "done" and trials[0].value == end["final_val_loss"]
    with open(os.path.join(out, "s-t1", "log.jsonl")) as f:
        events = [json.loads(line) for line in f]
    assert events[-1]["status"] == "stopped" and sum(e["event"] == "eval" for e in events) == 2
    assert list(trials[1].intermediate_values) == [0, 1]  # reported by evaluation index
    printed = capsys.readouterr().out
    assert "3 trials, 1 complete, 1 pruned, 1 fail" in printed
    best = printed.split("repeat the best trial:\n")[1].split()
    assert best[:4] == ["python", "train.py", "--data", study_titles] and best[best.index("--lr") + 1] == "0.01"

    monkeypatch.setattr(train, "run", real_run)
    tune.main(["--trials", "1", *flags])  # the same command again: resumes, adds one trial
    trials = optuna.load_study(study_name="s", storage=db).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3] and trials[3].state in (S.COMPLETE, S.PRUNED)
    assert all(trials[3].params != t.params for t in trials[:3])
    assert os.path.isfile(os.path.join(out, "s-t3", "ckpt.pt"))
    with pytest.raises(SystemExit, match="was run with d_model=32, not d_model=64"):  # other flags: refused
        tune.main(["--trials", "1", *flags, "--d_model", "64"])


def test_diverged_trial_is_pruned_and_bad_input_stops_the_study(monkeypatch):
    def run(callback=None, **config):
        if config["name"] == "x-t0":
            raise train.Diverged("training loss became nan")
        raise tune.ConfigError("bad on purpose")

    monkeypatch.setattr(train, "run", run)
    study, bad_input = optuna.create_study(), []
    space = tune.search_space(train.defaults(), set())
    study.optimize(lambda t: tune.objective(t, {}, space, "x", "runs", bad_input), n_trials=5, catch=(Exception,))
    S = optuna.trial.TrialState
    assert [t.state for t in study.trials] == [S.PRUNED, S.FAIL]  # trials 2-4 never started
    assert [str(e) for e in bad_input] == ["bad on purpose"]


def two_tune_workers(storage, study, study_titles, out):
    """Start two tune.py processes at once on one study, 2 trials each; return their outputs."""
    cmd = [sys.executable, os.path.join(HERE, "tune.py"), "--storage", storage, "--study", study, "--trials", "2",
           "--pruner", "none", *tiny_flags(study_titles), "--out_dir", out]
    workers = [subprocess.Popen(cmd + ["--sampler_seed", str(seed)], cwd=HERE, env=ONE_THREAD,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for seed in (1, 2)]
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    return outputs


def test_two_workers_share_one_journal_study(study_titles, tmp_path):
    journal, out = str(tmp_path / "tune.log"), str(tmp_path / "runs")
    two_tune_workers(journal, "j", study_titles, out)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    trials = optuna.load_study(study_name="j", storage=storage).get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1  # one worker made the study
    runs = sorted(glob.glob(os.path.join(out, "j-t*", "log.jsonl")))
    assert [os.path.basename(os.path.dirname(p)) for p in runs] == ["j-t0", "j-t1", "j-t2", "j-t3"]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on a free local port, as a URL; stopped and deleted afterwards.

    Debian keeps the server programs in /usr/lib/postgresql/<version>/bin, off PATH. The server
    refuses to run as root (CI's user), so there it runs as `nobody`, in a directory of its own:
    pytest's tmp_path is mode 0700 under root, closed to nobody.
    """
    pytest.importorskip("psycopg2", reason="no PostgreSQL client: pip install psycopg2-binary")
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    initdb = found[-1] if found else shutil.which("initdb")
    pg_ctl = initdb and os.path.join(os.path.dirname(initdb), "pg_ctl")
    if not initdb or not os.path.isfile(pg_ctl):
        pytest.skip("no PostgreSQL server programs (initdb, pg_ctl): apt-get install postgresql")
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    root = tempfile.mkdtemp(prefix="nanorun-pg-")
    if as_user:
        shutil.chown(root, "nobody")
    data = os.path.join(root, "data")
    with socket.socket() as s:  # a port no one listens on now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def run(*cmd):
        r = subprocess.run(as_user + list(cmd), cwd=root, capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout + r.stderr

    try:
        rc, said = run(initdb, "-D", data, "--auth=trust", "-U", "postgres", "--no-sync")
        assert rc == 0, said
        # -l: the server's output goes to a file; on our pipe it would keep subprocess.run waiting
        log = os.path.join(root, "log")
        rc, said = run(pg_ctl, "-D", data, "-l", log, "-w", "start",
                       "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root}")
        assert rc == 0, said + (open(log).read() if os.path.exists(log) else "")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:  # also after a failed test or a server that never started
        run(pg_ctl, "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_start_together_on_one_postgresql_study(postgres_url, study_titles, tmp_path):
    # both start on an empty database: both create Optuna's tables, both try to create the study
    outputs = two_tune_workers(postgres_url, "p", study_titles, str(tmp_path / "runs"))
    storage = postgres_url.replace("postgresql://", "postgresql+psycopg2://")  # as tune.py opens it
    trials = optuna.load_study(study_name="p", storage=storage).get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert [t.number for t in trials if t.user_attrs.get("baseline")] == [0]  # one baseline, and it came first
    # each worker names the best trial it saw finished; the last to finish saw all four
    by_number = {t.number: t for t in trials}
    named = [int(re.search(r"best \(trial (\d+)\)", o).group(1)) for o in outputs]
    assert min(trials, key=lambda t: t.value).number in named
    for o, number in zip(outputs, named):
        command = o.split("repeat the best trial:\n")[1].split()
        assert command[:2] == ["python", "train.py"]
        assert all(command[command.index(f"--{k}") + 1] == str(v) for k, v in by_number[number].params.items())


@pytest.mark.parametrize("url", ["foo://ann:secret@host/db", "://bar", "postgresql://ann:secret@host:port/db"])
def test_tune_refuses_an_unknown_storage_in_one_sentence(url, tmp_path):
    with pytest.raises(SystemExit) as stop:
        tune.main(["--trials", "1", "--storage", url, "--out_dir", str(tmp_path)])
    said = str(stop.value.code)
    assert said.startswith(f"error: --storage {tune.without_password(url)} is not a storage tune.py can open; "
                           "pass sqlite:///FILE, postgresql://") and "\n" not in said and "secret" not in said


def test_tune_refuses_runs_left_from_another_storage(tmp_path):
    db, out = f"sqlite:///{tmp_path}/tune.db", str(tmp_path)
    os.makedirs(os.path.join(out, "s-t0"))  # trial 0's run, from a study kept somewhere else
    with pytest.raises(SystemExit, match="s-t0 exists but study 's' in .* has no trials; it is left from another"):
        tune.main(["--trials", "1", "--storage", db, "--study", "s", "--out_dir", out])
    assert optuna.get_all_study_names(db) == []  # no empty study left: once the runs move, the command starts afresh


def test_tune_passes_train_flags_that_start_a_tune_flag(tmp_path, monkeypatch):
    # argparse would read --sample as an abbreviation of --sampler_seed; tune.py's parser takes none
    seen = []

    def run(callback=None, **config):
        seen.append(config)
        return {"status": "done", "final_val_loss": 1.0, "time_s": 1.0}

    monkeypatch.setattr(train, "run", run)
    out = str(tmp_path)
    tune.main(["--trials", "1", "--storage", f"sqlite:///{out}/tune.db", "--out_dir", out, "--sample", "2"])
    assert [c["sample"] for c in seen] == [2]  # not tune.py's own default of 0: the flag went through


def test_tune_docstring_states_the_search_ranges():
    # --help prints the docstring: a user sees that a sampled rho of 2.7 is inside asam's range
    def stated(label):
        lo, hi = re.search(rf"(?<![\w-]){label}\s+([\d.e-]+)\.\.([\d.e-]+)", tune.__doc__).groups()
        return float(lo), float(hi)

    ranges = {**{k: v for k, v in tune.SPACE.items() if v[0] != "choice"}, "--opt sgd": tune.SGD_LR,
              **{f"--opt {opt}": r for opt, r in tune.RHO.items()}}
    assert {label: stated(label) for label in ranges} == {label: tuple(r[1:]) for label, r in ranges.items()}
    assert "block_size " + "/".join(map(str, tune.SPACE["block_size"][1])) in tune.__doc__


def test_tune_docstring_and_messages_name_only_flags_that_exist(capsys):
    with pytest.raises(SystemExit):
        tune.main(["--help"])
    options = capsys.readouterr().out.split("\noptions:\n")[1]
    accepted = set(re.findall(r"--[\w-]+", options))
    accepted |= {s for a in train.build_parser()._actions for s in a.option_strings}
    with open(tune.__file__, encoding="utf-8") as f:
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z_]*(?:-[a-z_]+)*(?![\w{-])", f.read()))
    assert named and named <= accepted, named - accepted


# ==================================================================================================
# bench.py: the side-by-side benchmark compares like with like
# ==================================================================================================

def test_bench_reads_another_codebase_s_classes_without_running_the_file(tmp_path):
    import bench
    other = tmp_path / "train.py"
    other.write_text("import a_package_nanorun_does_not_install\n"
                     "raise SystemExit('the file ran')\n"
                     "@dataclass\nclass Config:\n    width: int = 3\n    tok: Tokenizer = None\n"
                     "class Net(nn.Module):\n    def __init__(self, c: Config):\n        super().__init__()\n"
                     "        self.lin = nn.Linear(c.width, 1)\n")
    scope = bench.classes_from(str(other))
    assert scope["Net"](scope["Config"]()).lin.in_features == 3


def test_bench_names_the_missing_file_of_the_codebase_it_should_time():
    import bench
    args = argparse.Namespace(only="original adamw", original=None, nanogpt="model.py", shape="2.56M")
    with pytest.raises(SystemExit, match="needs --original PATH"):
        bench.other_step(args, "cpu")


def test_bench_asam_step_of_the_original_makes_nanorun_s_asam_update():
    # bench.py times the original's ASAM step with its own few lines around torch's AdamW; they must make the
    # update nanorun's SAM(adaptive=True) around optim.AdamW makes, or the comparison is of different work
    import bench
    torch.manual_seed(0)
    ours = GPT(TINY)
    theirs, start = copy.deepcopy(ours), copy.deepcopy(ours)
    x, y = torch.randint(32, (4, 16)), torch.randint(32, (4, 16))
    opt = optim.build_optimizer("asam", ours, lr=1e-2, weight_decay=0.0, rho=0.05)
    torch_opt = torch.optim.AdamW(theirs.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0)
    for _ in range(3):
        train.train_step(ours, opt, x, y, device="cpu", amp=False, grad_clip=1.0)
        bench.asam_step(theirs, torch_opt, x, y, rho=0.05)
    apart = max((a - b).abs().max().item() for a, b in zip(ours.parameters(), theirs.parameters()))
    moved = max((a - b).abs().max().item() for a, b in zip(ours.parameters(), start.parameters()))
    assert apart < 1e-5 and moved > 1e-2  # the same update, and not a step of nothing


def test_plot_logs_groups_a_log_from_before_a_flag_with_newer_runs_that_leave_it_off(tmp_path):
    # records/ holds nanorun seeds logged before --window_offsets existed and one logged after, with it off
    old, off, on = (str(tmp_path / n / "log.jsonl") for n in ("old", "off", "on"))
    fake_log(old, "old", 1.30, seed=1)
    fake_log(off, "off", 1.31, seed=2, window_offsets=False)
    fake_log(on, "on", 1.29, seed=3, window_offsets=True)
    with open(old) as f:
        events = [json.loads(line) for line in f]
    del events[0]["config"]["window_offsets"]
    write_log(old, "old", events)
    groups = plot_logs.group_runs([plot_logs.read_log(p) for p in (old, off, on)])
    assert [[r["name"] for r in g] for g in groups] == [["old", "off"], ["on"]]
