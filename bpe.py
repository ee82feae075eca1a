r"""
bpe.py: a byte-level BPE tokenizer in plain Python: learn merges from titles, encode, decode.

Byte pair encoding (Sennrich et al. 2016) gives the most frequent adjacent pair a new id, again and again;
byte-level BPE (GPT-2, Radford et al. 2019) starts from the 256 bytes of UTF-8, so nothing is unknown. Ids:
0..255 are the bytes, 256.. the merges in the order learned, then the special tokens (just "<eos>").

    >>> titles = ["Show HN: a tokenizer", "Ask HN: a tokenizer?"]
    >>> tok = Tokenizer.train(titles, vocab_size=268)  # 256 bytes + 11 merges + <eos>; train.py uses 4000
    >>> tok.pieces(tok.encode("Show HN: a tokenizer"))
    ['S', 'h', 'o', 'w', ' HN', ':', ' a', ' token', 'izer']
    >>> tok.decode(tok.encode_titles(titles))  # every title's ids, then the <eos> id, which decodes as text
    'Show HN: a tokenizer<eos>Ask HN: a tokenizer?<eos>'

    python -m pytest -q test_all.py -k "bpe or get_pairs or chunk or merges or basic or too_small or round_trip \
        or eos or encode or decode or specials or save_load or determinism or tokenizer_files"  # its tests
    python bench.py tokenizer --data data/hn_titles.txt  # its speed on real titles
"""

import contextlib
import gc
import heapq
import itertools
import json
import re
from collections import Counter, defaultdict

from common import atomic_file

FORMAT, VERSION = "nanorun-bpe", 1

# -----------------------------------------------------------------------------
# the textbook algorithm: cut text into chunks, count the pairs, merge the most frequent one, repeat

# Pre-tokenization: merges never cross a chunk boundary (no token spans "HN:" or "it's"). Like GPT-2's pattern,
# for the standard library's `re` (no \p{L}): contractions ('s 't 're 've 'm 'll 'd, with ' or ’); runs of letters,
# of digits or of punctuation (underscore too), each with one leading space; spaces (a word takes the last one).
PATTERN = r"""['’](?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""


def split_chunks(text):
    """Cut text into pre-tokenization chunks; joined back they give the text.
    >>> split_chunks("Show HN: it's 2024!")
    ['Show', ' HN', ':', ' it', "'s", ' 2024', '!']
    """
    return re.findall(PATTERN, text)


def get_pairs(ids):
    """Count adjacent pairs.
    >>> get_pairs([1, 2, 3, 1, 2])
    {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    """
    return dict(Counter(zip(ids, ids[1:])))


def merge(ids, pair, new_id):
    """Replace every occurrence of pair, scanning left to right, by new_id: what one merge means.
    >>> merge([1, 2, 3, 1, 2], (1, 2), 4)
    [4, 3, 4]
    >>> merge([5, 5, 5], (5, 5), 6)  # overlapping: the leftmost pair wins
    [6, 5]
    """
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_merges_basic(chunk_counts, num_merges):
    """Learn num_merges merges [(a, b), ...] from {chunk string: how often it occurs}: count every adjacent
    pair, give the most frequent one the next id (merge r gets 256 + r), merge() it in every chunk, repeat.
    Ties go to the smallest (a, b), so the result is deterministic. Each distinct chunk is kept once, with its count.
    >>> train_merges_basic({"aaab": 1, "ab": 2}, 2)  # "ab" 3 times, "aa" twice; then (97, 97) and (97, 256) tie
    [(97, 98), (97, 97)]
    """
    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    freqs = list(chunk_counts.values())
    merges = []
    while len(merges) < num_merges:
        counts = Counter()
        for word, f in zip(words, freqs):
            for pair, c in get_pairs(word).items():
                counts[pair] += c * f
        if not counts:  # every chunk is a single id: nothing is left to merge
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))  # highest count, then smallest pair
        words = [merge(word, best, 256 + len(merges)) for word in words]
        merges.append(best)
    return merges


def encode_chunk_basic(ids, ranks):
    """Apply the merges to one chunk's ids (ranks: {pair: its merge id}): merge() the pair learned earliest,
    again and again. Earliest first replays training: a merge can only create pairs that contain its new id,
    and any merge of such a pair was learned after it.
    >>> encode_chunk_basic(list(b"aaaaa"), {(97, 97): 256, (256, 256): 257})  # a a a a a -> aa aa a -> aaaa a
    [257, 97]
    """
    while len(ids) >= 2:
        pair = min(get_pairs(ids), key=lambda p: ranks.get(p, float("inf")))
        if pair not in ranks:  # no pair left that has a merge
            break
        ids = merge(ids, pair, ranks[pair])
    return ids


# -----------------------------------------------------------------------------
# the tokenizer: merges and special tokens; train, encode, decode, save, load

class Tokenizer:
    """Byte-level BPE: merges learned by train(), plus special tokens after them."""

    def __init__(self, merges, specials=("<eos>",), pattern=PATTERN):
        specials = self.specials = tuple(specials)
        ok = all(isinstance(s, str) and s for s in specials) and len(set(specials)) == len(specials)
        if not ok or "<eos>" not in specials:
            raise ValueError(f"special tokens must include '<eos>' and be distinct non-empty strings, got {specials}.")
        self.merges = []  # merges[r] = (a, b): that pair becomes id 256 + r
        for r, pair in enumerate(merges):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(type(x) is int for x in pair)
                    and all(0 <= x < 256 + r for x in pair)):
                raise ValueError(f"merge {r} is {pair!r}, but it must be a pair of ids below {256 + r}.")
            self.merges.append(tuple(pair))
        self.pattern, self._split = pattern, re.compile(pattern).findall
        self._ranks = {pair: 256 + r for r, pair in enumerate(self.merges)}  # pair -> its id: smaller is earlier
        self._bytes = [bytes([i]) for i in range(256)]  # id -> its bytes; a special token's are its own text
        for a, b in self.merges:
            self._bytes.append(self._bytes[a] + self._bytes[b])
        self._bytes += [s.encode("utf-8") for s in self.specials]
        self.vocab_size = len(self._bytes)  # 256 bytes + merges + special tokens
        self.eos_id = 256 + len(self.merges) + self.specials.index("<eos>")  # between titles in the stream
        self._cache = {}  # chunk -> its ids: each distinct chunk (~75k in 90k titles) is encoded once

    @classmethod
    def train(cls, texts, vocab_size, specials=("<eos>",)):
        """Learn vocab_size - 256 - len(specials) merges from an iterable of strings."""
        specials = cls([], specials).specials  # bad special tokens fail here, before the long part
        if isinstance(texts, str):
            raise ValueError("texts must be a list of strings, not one string.")
        if vocab_size < 256 + 1 + len(specials):
            raise ValueError(f"vocab_size {vocab_size} is too small: 256 bytes + at least 1 merge + {len(specials)} "
                             f"special token(s) needs vocab_size >= {256 + 1 + len(specials)}.")
        split = re.compile(PATTERN).findall  # split_chunks, without re's per-call pattern lookup
        chunk_counts = Counter(itertools.chain.from_iterable(map(split, texts)))
        if not chunk_counts:
            raise ValueError("the training set is empty: give train() at least one non-empty text.")
        num_merges = vocab_size - 256 - len(specials)
        with gc_paused():  # fast paths (below): train_merges_basic's merges, sooner
            merges = train_merges(chunk_counts, num_merges)
        if len(merges) < num_merges:
            raise ValueError(f"the training texts only have enough adjacent pairs for {len(merges)} merges: "
                             f"use more text or vocab_size <= {256 + len(merges) + len(specials)}.")
        return cls(merges, specials)

    def encode(self, text):
        """str -> list of ids. Special tokens are never parsed out of text: "<eos>" is 5 characters."""
        ids, cache = [], self._cache
        for chunk in self._split(text):
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:  # encode_chunk (below) gives encode_chunk_basic's ids, sooner
                chunk_ids = cache[chunk] = encode_chunk(list(chunk.encode("utf-8")), self._ranks)
            ids += chunk_ids
        return ids

    def encode_titles(self, titles):
        """The training stream: every title's ids followed by the <eos> id."""
        ids, eos = [], self.eos_id
        for title in titles:
            ids += self.encode(title)
            ids.append(eos)
        return ids

    def decode(self, ids):
        """list of ids -> str, specials as their text; bytes that are not UTF-8 (a cut character) become U+FFFD."""
        ids = [int(i) for i in ids]  # also accepts numpy or torch integers
        if ids and not (0 <= min(ids) and max(ids) < self.vocab_size):  # min() and max() run in C
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise ValueError(f"token id {bad} is out of range: this tokenizer has ids 0..{self.vocab_size - 1}.")
        return b"".join([self._bytes[i] for i in ids]).decode("utf-8", errors="replace")

    def pieces(self, ids):
        """Each id's text on its own, for showing how a string was cut.
        >>> Tokenizer([(97, 97)]).pieces([256, 97, 257])  # one merge "aa" = 256, then <eos> = 257
        ['aa', 'a', '<eos>']
        """
        return [self.decode([i]) for i in ids]

    def save(self, path):
        """Write the tokenizer as readable JSON, one merge per line; same tokenizer, same bytes."""
        head = {"format": FORMAT, "version": VERSION, "pattern": self.pattern, "specials": list(self.specials)}
        lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}," for k, v in head.items()]
        lines += ['  "merges": [', ",\n".join(f"    [{a}, {b}]" for a, b in self.merges), "  ]", "}", ""]
        with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(lines))

    @classmethod
    def load(cls, path):
        """Read a file written by save(); a bad one raises ValueError saying why (what to do is the caller's)."""
        def bad(why):
            return ValueError(f"{path} is not a {FORMAT} tokenizer file ({str(why).rstrip('.')}).")
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except ValueError as e:  # json.JSONDecodeError, or UnicodeDecodeError for bytes that are not UTF-8
            raise bad(f"not valid JSON: {e}") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise bad(f'it has no "format": "{FORMAT}"')
        if d.get("version") != VERSION:
            raise bad(f"it is format version {d.get('version')!r}, but this bpe.py reads only version {VERSION}")
        if not isinstance(d.get("pattern"), str) or not isinstance(d.get("merges"), list):
            raise bad("it lacks a 'pattern' string or a 'merges' list")
        try:
            return cls(d["merges"], d.get("specials", []), d["pattern"])
        except (ValueError, re.error) as e:  # bad merges or specials; re.error: a pattern that does not compile
            raise bad(f"its pattern: {e}" if isinstance(e, re.error) else e) from None


# -----------------------------------------------------------------------------
# fast paths: the same results as the textbook functions above, sooner (timed on a 2-core AMD EPYC)

def train_merges(chunk_counts, num_merges):
    """train_merges_basic's merges, counted incrementally: a merge visits only the chunks that hold its pair.
    >>> train_merges({"aaab": 1, "ab": 2}, 2)
    [(97, 98), (97, 97)]
    """
    # 500 merges from 5,000 synthetic titles (3,245 distinct chunks): 0.07 s of CPU, 7 s with train_merges_basic.
    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    freqs = list(chunk_counts.values())
    # counts: pair -> how often it occurs; where: pair -> the words that may hold it (the others are skipped)
    counts, where = defaultdict(int), defaultdict(set)
    for i, (word, f) in enumerate(zip(words, freqs)):
        for pair, c in get_pairs(word).items():
            counts[pair] += c * f
            where[pair].add(i)
    # A max-heap of (-count, a, b), updated lazily: a popped entry whose count changed is pushed again. Only pairs
    # holding the new id gain count, pushed as they appear: the first live entry is the best (ties: smallest (a, b)).
    heap = [(-c, a, b) for (a, b), c in counts.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < num_merges and heap:
        neg_count, a, b = heapq.heappop(heap)
        pair, count = (a, b), counts[a, b]
        if count != -neg_count:  # stale entry
            if count > 0:
                heapq.heappush(heap, (-count, a, b))
            continue
        new_id = 256 + len(merges)
        merges.append(pair)
        # Rewrite each word holding the pair; per merge site (left = new[-1], already rewritten) only 3 pairs change:
        # (left, a) -> (left, new_id), (a, b) -> gone, (b, right) -> (new_id, right).
        fresh = set()  # pairs that contain new_id
        for i in where.pop(pair):
            word, f = words[i], freqs[i]
            new, j, n = [], 0, len(word)
            while j < n:
                if j + 1 < n and word[j] == a and word[j + 1] == b:
                    counts[pair] -= f
                    if new:
                        left = new[-1]
                        counts[left, a] -= f
                        counts[left, new_id] += f
                        fresh.add((left, new_id))
                        where[left, new_id].add(i)
                    if j + 2 < n:
                        right = word[j + 2]
                        counts[b, right] -= f
                        counts[new_id, right] += f
                        fresh.add((new_id, right))
                        where[new_id, right].add(i)
                    new.append(new_id)
                    j += 2
                else:
                    new.append(word[j])
                    j += 1
            words[i] = new
        for p in fresh:
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], *p))
    return merges


@contextlib.contextmanager
def gc_paused():
    """Pause Python's cycle collector for the block: Tokenizer.train makes many small objects that form no cycles."""
    # 4,000 tokens from 90,000 HN titles: 2.5 s of CPU paused, 4.1 s with the collector on (medians of 4, interleaved).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


LONG_CHUNK = 64  # bytes; longer chunks take encode_long_chunk (the two cost about the same at 30 to 60 bytes)


def encode_chunk(ids, ranks):
    """The same ids as encode_chunk_basic, fast for chunks of any length; what Tokenizer.encode uses.
    >>> encode_chunk(list(b"aaaaa"), {(97, 97): 256, (256, 256): 257})
    [257, 97]
    """
    # pair_ids[k]: the merge id of (ids[k], ids[k + 1]), or inf. A round merges the smallest at its leftmost place
    # and looks up only the two pairs now touching it. In 90,000 HN titles 99% of distinct chunks have <= 15 bytes:
    # there this takes half encode_long_chunk's time (min(), index() run in C), but n bytes cost ~n^2 (40k a's: 16 s).
    if len(ids) > LONG_CHUNK:
        return encode_long_chunk(ids, ranks)
    ids, inf = list(ids), float("inf")
    pair_ids = [ranks.get(pair, inf) for pair in zip(ids, ids[1:])]
    while pair_ids:
        new_id = min(pair_ids)
        if new_id == inf:  # no pair left that has a merge
            break
        i = pair_ids.index(new_id)
        ids[i : i + 2] = [new_id]
        del pair_ids[i]
        if i > 0:
            pair_ids[i - 1] = ranks.get((ids[i - 1], new_id), inf)
        if i < len(pair_ids):
            pair_ids[i] = ranks.get((new_id, ids[i + 1]), inf)
    return ids


def encode_long_chunk(ids, ranks):
    """The same ids as encode_chunk_basic, in O(n log n) steps for a chunk of n bytes.
    >>> encode_long_chunk(list(b"aaaaa"), {(97, 97): 256, (256, 256): 257})
    [257, 97]
    """
    # The merges apply earliest first, each everywhere left to right, as in encode_chunk_basic, with no rescan:
    # 1. The symbols form a doubly linked list over byte positions (each at its first byte's): unlinking is O(1).
    # 2. where[merge id] lists the positions where that pair stands; a min-heap holds the merge ids waiting.
    #    Pop the smallest, merge at its positions in sorted order (one sort per id, not a heap push and pop per
    #    position: 200,000 a's encode ~4x faster). New pairs hold the new id, a larger one: the list never grows.
    # 3. Positions are never removed from `where`: one that no longer holds the pair is skipped ("lazy deletion").
    ids, n = list(ids), len(ids)
    prev = list(range(-1, n - 1))  # prev[i]: the position of the symbol before i, -1 at the start
    next_ = list(range(1, n + 1))  # next_[i]: the position of the symbol after i, n at the end
    where = defaultdict(list)
    for i, pair in enumerate(zip(ids, ids[1:])):
        if pair in ranks:
            where[ranks[pair]].append(i)
    heap = sorted(where)  # a sorted list is already a min-heap

    def add(pair, i):  # the pair now standing at position i may merge later
        new_id = ranks.get(pair)
        if new_id is not None:
            if new_id not in where:
                heapq.heappush(heap, new_id)
            where[new_id].append(i)

    while heap:
        new_id = heapq.heappop(heap)
        for i in sorted(where.pop(new_id)):
            j = next_[i]
            if j == n or ranks.get((ids[i], ids[j])) != new_id:
                continue  # stale: i was merged into the symbol before it (ids[i] is None) or a side changed
            ids[i], ids[j] = new_id, None  # the pair becomes one symbol at i; position j is empty from now on
            k = next_[j]
            next_[i] = k
            if k < n:
                prev[k] = i
                add((new_id, ids[k]), i)
            if prev[i] >= 0:
                add((ids[prev[i]], new_id), prev[i])
    return [x for x in ids if x is not None]
