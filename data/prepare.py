"""
data/prepare.py: build data/hn_titles.txt, the study's sample of Hacker News titles.

Downloads the Hugging Face dataset julien040/hacker-news-posts at the revision the study used,
shuffles its train split with seed 1337 exactly as the study did, and writes the titles one per
line (each stripped, inner line breaks turned into spaces). The first 100,000 lines are the study's
train + validation sample; the lines after them are its held-out test titles.

    pip install datasets          # optional: only this script needs it
    python data/prepare.py        # or: make data

Any other file with one title per line works too: python train.py --data my_titles.txt
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository: common.py
from common import atomic_file  # noqa: E402

REPO = "julien040/hacker-news-posts"
REVISION = "9e21b0f3c36bd7ce50b741ce966297a7f73cae38"  # the June 2023 snapshot the study sampled


def clean(title):
    """One title on one line: clean("  Show HN:\\nfoo ") -> "Show HN: foo"."""
    return " ".join((title or "").split())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "hn_titles.txt"), help="output file")
    p.add_argument("--limit", type=int, default=200_000, help="titles to write (0: all ~4M)")
    args = p.parse_args()
    if os.path.exists(args.out):
        sys.exit(f"error: {args.out} already exists; delete it first or pass --out elsewhere")
    try:
        from datasets import load_dataset
    except ImportError:
        sys.exit("error: this script needs the `datasets` package: pip install datasets")
    try:
        ds = load_dataset(REPO, split="train", revision=REVISION)
    except Exception as e:  # noqa: BLE001 - offline, hub down, proxy...
        sys.exit(f"error: could not download {REPO} ({type(e).__name__}: {e}); "
                 "check the network, or use any file with one title per line: make run DATA=FILE "
                 "(or python train.py --data FILE)")
    ds = ds.shuffle(seed=1337)  # the study's order: same seed, same library call
    n = len(ds) if args.limit == 0 else min(args.limit, len(ds))
    with atomic_file(args.out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for title in ds.select(range(n))["title"]:
            f.write(clean(title) + "\n")
    print(f"wrote {n:,} titles to {args.out}")


if __name__ == "__main__":
    main()
