"""
Draw nanorun's run logs as one figure: validation loss, smoothed training loss and a table of
each run's recipe (the study's Fig. 1), or print the study ladder as a Markdown table.

Every run writes runs/<name>/log.jsonl (one JSON object per line: a "config" event, then "train",
"eval" and finally "end" events; see train.py). This script only reads those logs.

    python plot_logs.py                                   # runs/*/log.jsonl -> runs/figure.png
    python plot_logs.py --runs 'runs/ladder-*/*/log.jsonl' --out runs/ladder.png
    python plot_logs.py --table --runs 'runs/ladder-cpu-*/*/log.jsonl'   # Markdown ladder table
"""

import argparse
import glob
import json
import os
import sys

# -----------------------------------------------------------------------------
# reading logs


def read_log(path):
    """Read one run's log.jsonl into a dict of plain lists.

    Returns {"name", "path", "config" (the config event), "train": [(epoch, loss)],
    "evals": [(epoch, val_loss)], "end" (the end event or None)}.
    A resumed run logs again the steps between its last checkpoint and the moment it was killed;
    a "resume" event at step s therefore drops what was logged before it for steps after s, so
    every step appears once. A half-written last line (a run killed mid-write) is skipped.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    config, end, train, evals = None, None, [], []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue  # the run was killed while writing this line
            raise ValueError(f"{path} line {i + 1} is not JSON; is this a nanorun log.jsonl?")
        kind = event.get("event")
        if kind == "config":
            config = event
        elif kind == "train":
            train.append((event["step"], event["epoch"], event["loss"]))
        elif kind == "eval":
            evals.append((event["step"], event["epoch"], event["val_loss"]))
        elif kind == "resume":
            train = [t for t in train if t[0] <= event["step"]]
            evals = [e for e in evals if e[0] <= event["step"]]
            end = None
        elif kind == "end":
            end = event
    if config is None:
        raise ValueError(f"{path} has no config event; is this a nanorun log.jsonl?")
    name = config.get("name") or os.path.basename(os.path.dirname(path))
    return {"name": name, "path": path, "config": config,
            "train": [(epoch, loss) for _, epoch, loss in train],
            "evals": [(epoch, loss) for _, epoch, loss in evals], "end": end}


def final_val_loss(run):
    """The run's final val loss: from its end event, else its last evaluation, else None."""
    if run["end"] is not None and run["end"].get("final_val_loss") is not None:
        return run["end"]["final_val_loss"]
    return run["evals"][-1][1] if run["evals"] else None


def smooth(values, beta=0.9):
    """Exponential moving average with bias correction (the first values are not pulled to 0).

    smooth([2.0, 2.0, 2.0]) -> [2.0, 2.0, 2.0];  smooth([0.0, 2.0], beta=0.5) -> [0.0, 1.3333...]
    """
    out, ema = [], 0.0
    for t, x in enumerate(values, start=1):
        ema = beta * ema + (1 - beta) * x
        out.append(ema / (1 - beta**t))
    return out


def spread(ys, gap, lo=float("-inf")):
    """Label heights for values `ys`: each at least `gap` above the next lower one and at least `lo`.

    Labels only move up, so each stays level with or above its point.
    spread([1.0, 1.01, 2.0], gap=0.1) -> [1.0, 1.1, 2.0]
    """
    out, last = [0.0] * len(ys), lo - gap
    for i in sorted(range(len(ys)), key=lambda i: ys[i]):
        out[i] = last = max(ys[i], last + gap)
    return out


# -----------------------------------------------------------------------------
# the meta table (one row per run)


def _g(x):
    """Compact number for a table cell: 0.0003 -> '3e-04', 0.2012 -> '0.2012', None -> '-'."""
    if x is None:
        return "-"
    if isinstance(x, float) and x != 0 and abs(x) < 1e-3:
        return f"{x:.0e}"
    return f"{x:g}"


def _count(n):
    """Parameter count for a table cell: 27172864 -> '27.17M', 24416 -> '24.4k', None -> '-'."""
    if not n:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def meta_row(run):
    """The study's Fig. 1 columns for one run, as strings."""
    c, ev = run["config"].get("config", {}), run["config"]
    shape = f"{c.get('n_layer')}L {c.get('n_head')}H {c.get('d_model')}d b{c.get('block_size')}"
    n_params = ev.get("n_params")
    final = final_val_loss(run)
    done = run["end"] is not None and run["end"].get("status") == "done"
    return [run["name"], c.get("opt", "-"), shape, _g(c.get("vocab_size")), _g(c.get("dropout")),
            _g(c.get("lr")), _g(c.get("weight_decay")), _g(c.get("min_lr")), _g(c.get("warmup_ratio")),
            _g(c.get("epochs")), _count(n_params), str(ev.get("device", "-")) + (" bf16" if ev.get("amp") else ""),
            "-" if final is None else f"{final:.4f}" + ("" if done else " *")]


META_COLUMNS = ["run", "opt", "shape", "vocab", "dropout", "lr", "wd", "min_lr", "warm-up", "epochs",
                "params", "device", "final val loss"]

# -----------------------------------------------------------------------------
# the figure


def plot(runs, out):
    """Draw val loss, smoothed train loss and the meta table of `runs`; write the PNG atomically."""
    import matplotlib
    matplotlib.use("Agg")  # headless: no display needed
    import matplotlib.pyplot as plt

    n = len(runs)
    # one colour per run in all three panels: tab20's ten dark shades first, then its light ones
    tab20 = plt.get_cmap("tab20").colors
    palette = tab20[0::2] + tab20[1::2]
    colors = [palette[i % 20] for i in range(n)]
    table_h = 0.2 * (n + 1) + 0.3
    fig = plt.figure(figsize=(15, 5.5 + table_h))
    grid = fig.add_gridspec(2, 2, height_ratios=[5.5, table_h], hspace=0.25, wspace=0.32)
    ax_val, ax_train = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ax_table = fig.add_subplot(grid[1, :])

    # the step-0 evaluation (an untrained model) would squash every curve into the bottom of the
    # plot, so the y range starts from the first evaluation after training began
    later = [v for run in runs for e, v in run["evals"] if e > 0] or [v for run in runs for _, v in run["evals"]]
    labels, train_lo, train_hi = [], [], []
    for run, color in zip(runs, colors):
        if run["evals"]:
            epochs, losses = zip(*run["evals"])
            ax_val.plot(epochs, losses, "o-", color=color, ms=3, lw=1.5)
            labels.append((run["name"], losses[-1], epochs[-1], color))
        if run["train"]:
            epochs, losses = zip(*run["train"])
            smoothed = smooth(losses)
            ax_train.plot(epochs, smoothed, color=color, lw=1.2)
            train_lo.append(min(smoothed))
            train_hi.append(smoothed[len(smoothed) // 10])  # again skip the first, steep tenth
    if train_lo:
        pad = 0.05 * (max(train_hi) - min(train_lo)) or 0.05
        ax_train.set_ylim(min(train_lo) - pad, max(train_hi) + pad)
    else:
        ax_train.text(0.5, 0.5, "no training loss logged\n(the runs are shorter than --log_every steps)",
                      transform=ax_train.transAxes, ha="center", va="center", color="gray")
    if later:
        lo, hi = min(later), max(later)
        pad = 0.08 * (hi - lo) or 0.05
        ax_val.set_ylim(lo - pad, hi + pad)
        # each run's final val loss, written at the right edge, its labels pushed apart so none
        # overlap: one text line is 8 pt * 1.25, turned into data units by the axes' height
        x_end = max(x for _, _, x, _ in labels)
        line_in = 8 * 1.25 / 72
        axes_in = ax_val.get_position().height * fig.get_figheight()
        gap = (hi - lo + 2 * pad) * line_in / axes_in
        y_text = spread([y for _, y, _, _ in labels], gap, lo=lo - pad + gap / 2)
        ax_val.set_ylim(top=max(hi + pad, max(y_text) + gap / 2))  # room for labels pushed to the top
        for yt, (name, y, x, color) in zip(y_text, labels):
            ax_val.annotate(f"{name}  {y:.4f}", xy=(x, y), xytext=(x_end * 1.03, yt),
                            color=color, fontsize=8, va="center", annotation_clip=False,
                            arrowprops=dict(arrowstyle="-", color=color, lw=0.6, alpha=0.6))
        # widen the x axis so the longest label (about 0.6 em per character) fits inside it
        label_in = max(len(name) + 8 for name, _, _, _ in labels) * 8 * 0.6 / 72
        width_in = ax_val.get_position().width * fig.get_figwidth()
        ax_val.set_xlim(0, x_end * 1.03 / max(0.3, 1 - label_in / width_in - 0.02))
    ax_val.set(title="validation loss (nats per character)", xlabel="epoch", ylabel="val loss")
    ax_train.set(title="training loss (nats per token, smoothed)", xlabel="epoch", ylabel="train loss")
    for ax in (ax_val, ax_train):
        ax.grid(alpha=0.3)

    ax_table.axis("off")
    rows = [meta_row(run) for run in runs]
    columns = list(META_COLUMNS)
    if any(row[-1].endswith("*") for row in rows):
        columns[-1] = "final val loss (* unfinished)"
    table = ax_table.table(cellText=rows, colLabels=columns, loc="upper center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(META_COLUMNS))))
    for i, color in enumerate(colors):
        table[i + 1, 0].set_text_props(color=color, fontweight="bold")  # the run's name in its colour
    for j in range(len(META_COLUMNS)):
        table[0, j].set_text_props(fontweight="bold")

    # atomic write: a reader (or a browser tab reloading) never sees half a PNG
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp{os.getpid()}"
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


# -----------------------------------------------------------------------------
# the ladder table


def ladder_table(runs, presets):
    """Markdown table of the study's ladder: one row per run that used a preset, in preset order.

    `presets` is train.PRESETS ({"step0": {"change", "study_val_loss", "flags"}, ...}).
    The title states the scale the runs were trained at, read from their configs.
    """
    order = list(presets)
    steps = [r for r in runs if r["config"].get("config", {}).get("preset") in presets]
    steps.sort(key=lambda r: (order.index(r["config"]["config"]["preset"]), r["config"].get("time", 0)))
    if not steps:
        return None
    def scale(key, fmt="{:,}"):
        return ", ".join(sorted({fmt.format(r["config"]["config"].get(key)) for r in steps}))
    epochs = scale("epochs")
    lines = [f"nanorun ladder: {scale('num_titles')} titles x {epochs} epoch{'' if epochs == '1' else 's'} "
             f"of {scale('data', '{}')} (the study: 100,000 titles x 7 epochs)", "",
             "| step | change | nanorun val loss | study val loss | time |",
             "|---|---|---|---|---|"]
    for run in steps:
        preset = run["config"]["config"]["preset"]
        final = final_val_loss(run)
        done = run["end"] is not None and run["end"].get("status") == "done"
        loss = "-" if final is None else f"{final:.4f}" + ("" if done else " (unfinished)")
        t = run["end"].get("time_s") if run["end"] else None
        time = "-" if t is None else f"{t:.0f} s" if t < 120 else f"{t / 60:.1f} min"
        study = presets[preset].get("study_val_loss")
        lines.append(f"| {preset} | {presets[preset]['change']} | {loss} | {_g(study)} | {time} |")
    return "\n".join(lines)


# -----------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/*/log.jsonl", help="glob of run logs (default: %(default)s)")
    parser.add_argument("--out", default="runs/figure.png", help="PNG to write (default: %(default)s)")
    parser.add_argument("--table", action="store_true",
                        help="print the ladder as a Markdown table (runs made with --preset) instead of drawing")
    args = parser.parse_args(argv)

    paths = sorted(glob.glob(args.runs))
    if not paths:
        sys.exit(f"error: no log matches --runs {args.runs!r}; train a run first (python train.py) "
                 "or pass the glob of your logs.")
    try:
        runs = [read_log(p) for p in paths]
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    runs.sort(key=lambda r: r["config"].get("time", 0))  # oldest first: colours follow the order runs were made

    if args.table:
        import train  # only the ladder needs the study's numbers (train.PRESETS)
        table = ladder_table(runs, train.PRESETS)
        if table is None:
            sys.exit(f"error: none of the {len(runs)} runs matching {args.runs!r} was made with --preset; "
                     "run `make ladder` first.")
        print(table)
        return
    empty = [r["name"] for r in runs if not r["evals"]]
    runs = [r for r in runs if r["evals"]]
    if empty:
        print(f"skipping {len(empty)} run(s) with no evaluation yet: {', '.join(empty)}")
    if not runs:
        sys.exit("error: no run has an evaluation to plot yet.")
    plot(runs, args.out)
    print(f"wrote {args.out} ({len(runs)} runs)")


if __name__ == "__main__":
    main()
