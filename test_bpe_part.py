"""Tests for bpe.py: known answers, a naive reference trainer, round trips and clear errors."""

import doctest
import json
import random
import re

import pytest

import bpe
from bpe import Tokenizer

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


# -----------------------------------------------------------------------------
# a deliberately naive reference: recount every pair in every chunk occurrence, every merge


def naive_train(texts, num_merges):
    """Merges by brute force: same pre-tokenizer, same tie-break (highest count, then smallest pair)."""
    words = [list(chunk.encode("utf-8")) for text in texts for chunk in re.findall(bpe.PATTERN, text)]
    merges = []
    while len(merges) < num_merges:
        counts = {}
        for word in words:
            for pair in zip(word, word[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))
        new_id = 256 + len(merges)
        merges.append(best)
        words = [bpe.merge(word, best, new_id) for word in words]
    return merges


def naive_encode(merges, text):
    """Apply every merge, in the order learned, to every chunk."""
    ids = []
    for chunk in re.findall(bpe.PATTERN, text):
        word = list(chunk.encode("utf-8"))
        for r, pair in enumerate(merges):
            word = bpe.merge(word, pair, 256 + r)
        ids += word
    return ids


# -----------------------------------------------------------------------------
# small helpers, exactly as their docstrings say


def test_docstring_examples():
    result = doctest.testmod(bpe)
    assert result.attempted >= 5 and result.failed == 0


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
# training: a textbook example by hand, then equality with the naive reference


def test_textbook_merges_by_hand():
    # a=97 b=98 c=99 d=100. Counts: aa 4, ab 2, the rest 1 -> aa becomes 256: [256 97 98 100 256 97 98 97 99].
    # Now (97, 98) and (256, 97) both occur twice; the tie goes to the smaller pair: ab becomes 257:
    # [256 257 100 256 257 97 99]. Now (256, 257) occurs twice: it becomes 258 ("aaab").
    tok = Tokenizer.train([TEXTBOOK], vocab_size=256 + 3 + 1)
    assert tok.merges == [(97, 97), (97, 98), (256, 257)]
    assert tok.encode(TEXTBOOK) == [258, 100, 258, 97, 99]
    assert tok.pieces([256, 257, 258]) == ["aa", "ab", "aaab"]
    assert tok.vocab_size == 260 and tok.eos_id == 259
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
def test_merges_match_naive_reference(texts):
    reference = naive_train(texts, 60)
    tok = Tokenizer.train(texts, vocab_size=256 + len(reference) + 1)
    assert tok.merges == reference
    for text in texts + HARD_STRINGS + ["abcabc aaab unseen words"]:
        assert tok.encode(text) == naive_encode(reference, text)


def test_merges_do_not_depend_on_text_order():
    # chunks are counted once with their frequency, so the order they were seen in must not matter
    texts = small_corpus()
    shuffled = texts[:]
    random.Random(1).shuffle(shuffled)
    assert Tokenizer.train(texts, 320).merges == Tokenizer.train(shuffled, 320).merges


# -----------------------------------------------------------------------------
# encoding and decoding


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(small_corpus(), vocab_size=400)


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
    Tokenizer.train(list(texts), 350).save(tmp_path / "b.json")
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
        ("[1, 2, 3]", "is not a nanorun-bpe tokenizer file"),
        (json.dumps({**good, "format": "something-else"}), "is not a nanorun-bpe tokenizer file"),
        (json.dumps({**good, "version": 2}), "format version 2, but this bpe.py reads only version 1"),
        (json.dumps({**good, "merges": [[97, 98], [300, 1]]}), "merge 1 is \\[300, 1\\]"),
        (json.dumps({**good, "merges": [[97, "b"]]}), "merge 0 is"),
        (json.dumps({**good, "specials": []}), "must include '<eos>'"),
        (json.dumps({k: v for k, v in good.items() if k != "merges"}), "lacks a 'pattern' string or a 'merges' list"),
        (json.dumps({**good, "pattern": "(unclosed"}), "broken tokenizer file"),
    ]
    for text, message in cases:
        with pytest.raises(ValueError, match=message):
            Tokenizer.load(write(text))
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        Tokenizer.load(path)
