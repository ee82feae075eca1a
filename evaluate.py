"""
Score trained checkpoints on the held-out test titles and print the study's Table 1 in Markdown.

The test titles are the ones right after each run's first num_titles titles (its training and validation
titles) in the run's data file: train.py never trains, validates or tunes on them. The metric is the
study's: summed cross-entropy of every test token (nats) / characters of "<eos>".join(titles) + "<eos>",
so models with different tokenizers compare; perplexity is exp(loss) per character.

    python evaluate.py runs/step5/ckpt.pt runs/step6           # a checkpoint, or a run folder
    python evaluate.py runs/step6 --sample 5 --prompt "Show HN:" --temperature 0.8 --top_k 50
"""

import argparse
import math
import os
import sys
import time

import torch

import speed
from bpe import Tokenizer
from checkpoint import check_teacher, checkpoint_path, file_sha256, load_checkpoint
from common import ConfigError
from dataset import read_titles, split_titles, stream_nats, text_chars, title_stream, titles_sha256
from gpt import GPT, GPTConfig, sample_titles, visible

# -----------------------------------------------------------------------------
# loading a checkpoint with its tokenizer and its test titles


def load_model(path, device="cpu"):
    """(model, tokenizer, checkpoint) from a run's ckpt.pt (or its folder), its tokenizer checked against it."""
    path = checkpoint_path(path)
    ckpt = load_checkpoint(path)
    for key in ("model", "model_config", "tokenizer", "tokenizer_sha256"):
        if key not in ckpt:
            raise ConfigError(f"checkpoint {path} has no {key!r} entry; it was not written by this "
                              "train.py, so retrain it")
    tok_path = os.path.join(os.path.dirname(os.path.abspath(path)), ckpt["tokenizer"])
    if not os.path.isfile(tok_path):
        raise ConfigError(f"tokenizer {tok_path} of checkpoint {path} is missing; keep the run folder "
                          "whole (ckpt.pt and tokenizer.json side by side)")
    if file_sha256(tok_path) != ckpt["tokenizer_sha256"]:
        raise ConfigError(f"tokenizer {tok_path} is not the one checkpoint {path} was trained with "
                          "(its sha256 differs); restore the run's own tokenizer.json")
    try:
        tok = Tokenizer.load(tok_path)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    mconf = GPTConfig(**ckpt["model_config"])
    if tok.vocab_size != mconf.vocab_size:
        raise ConfigError(f"tokenizer {tok_path} has {tok.vocab_size} tokens but the model in {path} "
                          f"has {mconf.vocab_size}; they belong to different runs")
    model = GPT(mconf)
    try:
        model.load_state_dict(ckpt["model"])  # strict: every name and shape must match
    except RuntimeError:
        raise ConfigError(f"the weights in checkpoint {path} do not fit its own model_config; "
                          "the file was edited or mixed up, so retrain it") from None
    speed.use_fast_modules(model, device)
    model.to(device).eval()
    return model, tok, ckpt


def load_teacher(cfg, data, device, amp, compile, rows):
    """Distillation's teacher: a finished run's model, frozen. check_teacher makes sure it learnt from exactly
    this run's training titles through the same tokenizer, so it cannot leak validation or test titles."""
    teacher, _, ckpt = load_model(cfg["teacher"], device)
    check_teacher(ckpt, cfg, data.sha256, file_sha256(data.tok_path))
    teacher.requires_grad_(False)
    if compile:  # compiled, and its graph built now, not in the first (timed) step
        teacher, _ = speed.compile_with_warm_up(teacher, device, rows, cfg["block_size"], amp, frozen=True)
    return teacher


def held_out_titles(ckpt, path, data=None, test_titles=None):
    """The checkpoint's held-out test titles: the ones after its run's train + validation titles.

    `data` overrides the data file the run was trained on; it must begin with the same titles.
    `test_titles` overrides how many to take (the run's --test_titles by default).
    """
    c = ckpt["config"]
    data = data or c["data"]
    n_test = c["test_titles"] if test_titles is None else test_titles
    if n_test == 0:
        raise ConfigError(f"run {path} kept no test titles (it was trained with --test_titles 0); the titles "
                          f"after its first {c['num_titles']:,} were never trained on, so score it on them "
                          "with --test_titles N")
    titles = read_titles(data, limit=c["num_titles"] + n_test)
    if len(titles) < c["num_titles"]:
        raise ConfigError(f"{data} has {len(titles):,} titles, but run {path} trained and validated on the first "
                          f"{c['num_titles']:,} of its data and tests on the ones after; pass --data with that "
                          "run's data file, or a longer file that begins with the same titles")
    train_titles, val_titles, test = split_titles(titles, c["num_titles"], c["val_frac"], n_test)
    # the same fingerprint train.py stores: proof that the test titles were never trained on
    if "data_sha256" in ckpt:
        if titles_sha256(train_titles + val_titles) != ckpt["data_sha256"]:
            raise ConfigError(f"{data} does not begin with the {c['num_titles']:,} titles checkpoint "
                              f"{path} was trained on; pass --data with that run's data file")
    if not test:
        raise ConfigError(f"{data} has no titles after the first {c['num_titles']:,} (training and "
                          f"validation) to test {path} on; use a file with more titles")
    return test, data


@torch.no_grad()
def evaluate(path, data=None, device="cpu", batch_size=None, amp=False, test_titles=None, progress=False):
    """Score one checkpoint on its test titles: a dict of the table's columns."""
    path = checkpoint_path(path)  # a checkpoint, or a run folder
    model, tok, ckpt = load_model(path, device)
    titles, data = held_out_titles(ckpt, path, data, test_titles)
    block_size = model.config.block_size
    t0 = time.time()
    stream = title_stream(tok, titles)  # <eos> + every title's ids and <eos>: encoded once
    chars = text_chars(titles)
    with speed.autocast(device, amp):
        nats = stream_nats(model, stream, block_size, batch_size or ckpt["config"]["batch_size"], device,
                           progress=progress)
    loss = nats / chars
    seconds = time.time() - t0
    return {"checkpoint": path, "data": data, "params": model.num_params(), "test_titles": len(titles),
            "chars": chars, "loss": loss, "perplexity": math.exp(loss),
            "tokens_per_char": (len(stream) - 1) / chars, "val_loss": ckpt.get("val_loss"),
            # a checkpoint saved before its run's last step (interrupted, or train.py --max_steps N) is marked unfinished
            "unfinished": ckpt["step"] < ckpt.get("total_steps", ckpt["step"]),
            "time_s": seconds, "model": model, "tokenizer": tok}


def markdown_table(rows):
    """The study's Table 1 for a list of evaluate() results."""
    lines = ["| checkpoint | parameters | test titles | test loss (nats/char) | perplexity | tokens/char "
             "| val loss | time |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        val = "-" if r["val_loss"] is None else f"{r['val_loss']:.4f}"
        lines.append(f"| {r['checkpoint']}{' *' if r.get('unfinished') else ''} | {r['params']:,} | {r['test_titles']:,} | {r['loss']:.4f} "
                     f"| {r['perplexity']:.4f} | {r['tokens_per_char']:.4f} | {val} | {r['time_s']:.1f} s |")
    if any(r.get("unfinished") for r in rows):
        lines.append("\n\\* unfinished: the checkpoint was saved before its run's last step (interrupted, or "
                     "stopped by train.py --max_steps N); resume it with python train.py --resume RUN")
    return "\n".join(lines)


# -----------------------------------------------------------------------------


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", metavar="CKPT", help="checkpoints (runs/NAME/ckpt.pt) or run folders")
    parser.add_argument("--data", default=None, help="titles file (default: each run's own --data)")
    parser.add_argument("--device", default="auto", choices=speed.DEVICES,
                        help="auto: CUDA, then MPS, then CPU (default: %(default)s)")
    parser.add_argument("--test_titles", type=int, default=None,
                        help="score on this many titles after each run's training and validation titles "
                             "(default: the run's own --test_titles)")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="sequences per forward pass; the loss does not depend on it (default: the run's)")
    parser.add_argument("--amp", default=False, action=argparse.BooleanOptionalAction,
                        help="bf16 autocast; off scores in fp32 like train.py's validation (default: %(default)s)")
    parser.add_argument("--sample", type=int, default=0, help="titles to generate per checkpoint (default: 0)")
    parser.add_argument("--prompt", default="", help="text every generated title starts with (default: none)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="sampling temperature; 0 is greedy (default: %(default)s)")
    parser.add_argument("--top_k", type=int, default=None, help="sample from the k likeliest tokens (default: all)")
    parser.add_argument("--seed", type=int, default=1337, help="seed for sampling (default: %(default)s)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    for bad, msg in ((args.batch_size is not None and args.batch_size < 1, "--batch_size must be at least 1"),
                     (args.sample < 0, "--sample must not be negative"),
                     (args.test_titles is not None and args.test_titles < 1, "--test_titles must be at least 1"),
                     (args.temperature < 0, "--temperature must be >= 0 (0 is greedy)"),
                     (args.top_k is not None and args.top_k < 1, "--top_k must be at least 1")):
        if bad:
            sys.exit(f"error: {msg}.")

    try:
        device = speed.pick_device(args.device)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    rows, skipped = [], []
    interrupted = False
    try:
        for path in args.checkpoints:  # a checkpoint that cannot be scored is reported; the others still are
            try:
                r = evaluate(path, args.data, device, args.batch_size, args.amp, args.test_titles, progress=True)
            except ConfigError as e:
                print(f"error: {e}", file=sys.stderr)
                skipped.append(path)
                continue
            model, tok = r.pop("model"), r.pop("tokenizer")
            rows.append(r)
            if args.sample:
                print(f"{path}:")
                torch.manual_seed(args.seed)
                for title in sample_titles(model, tok, args.sample, device, args.prompt, args.temperature, args.top_k):
                    print("  " + visible(title))
            del model  # one model in memory at a time
    except KeyboardInterrupt:  # Ctrl-C: show what was scored so far, then stop like an interrupted program
        interrupted = True
    if rows:
        print(f"Held-out test titles of {', '.join(sorted({r['data'] for r in rows}))}; loss in nats per character.\n")
        print(markdown_table(rows))
    if interrupted:
        print(f"\ninterrupted after scoring {len(rows)} of {len(args.checkpoints)} checkpoints", file=sys.stderr)
        sys.exit(130)
    if skipped:
        sys.exit(f"error: {len(skipped)} of {len(args.checkpoints)} checkpoints could not be scored (see above)")


if __name__ == "__main__":
    main()
