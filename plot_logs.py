"""
plot_logs.py: run logs drawn as one figure or printed as Markdown tables (off the reading path).

It reads logs only, never the code that wrote them. Runs that differ only in the seed are one recipe: a
mean curve in a band, a table row with mean ± spread. An ablation adds held-out test losses from an
evaluate.txt beside the logs (`python evaluate.py runs/a runs/b > runs/evaluate.txt`).

    python plot_logs.py                                   # runs/*/log.jsonl -> runs/figure.png
    python plot_logs.py --runs 'runs/ladder-*/*/log.jsonl' --out runs/ladder.png
    python plot_logs.py --table --runs 'runs/ladder-cpu-*/*/log.jsonl'   # the study's ladder
    python plot_logs.py --ablation --runs 'runs/ablate-*/*/log.jsonl'    # one row per recipe
"""

import argparse
import glob
import json
import os
import re
import sys

from common import atomic_file, seconds

# -----------------------------------------------------------------------------
# reading a run's log back

def read_log(path):
    """One run's log.jsonl as {"name", "path", "config" (the config event), "train": [(epoch, nats/token)],
    "train_per_char": [(epoch, nats/char)], "evals": [(epoch, val_loss)], "eval_s": [seconds from the start
    to each evaluation], "elapsed_s" (to the last one, or None), "end" (or None)}. A "resume" event at step s
    drops what was logged before it for later steps (they are logged again)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    config, end, train, evals = None, None, [], []
    for i, line in enumerate(lines):
        try:
            event = json.loads(line) if line.strip() else {}
        except ValueError:
            event = None
        if not isinstance(event, dict) and i < len(lines) - 1:
            raise ValueError(f"{path} line {i + 1} is not JSON; is it a nanorun log.jsonl? (a run killed "
                             "mid-write, then resumed, leaves half a line: delete that line)")
        try:
            if not isinstance(event, dict):  # the last line, half written: the run was killed mid-write
                print(f"warning: {path} ends in a half-written line (a run killed mid-write); skipped", file=sys.stderr)
            elif event.get("event") == "config":
                config = event
            elif event.get("event") == "train":
                train.append((event["step"], event["epoch"], event["loss"], event["loss_per_char"]))
            elif event.get("event") == "eval":
                evals.append((event["step"], event["epoch"], event["val_loss"], event["elapsed_s"]))
            elif event.get("event") == "resume":
                train = [t for t in train if t[0] <= event["step"]]
                evals = [e for e in evals if e[0] <= event["step"]]
                end = None
            elif event.get("event") == "end":
                end = event
        except KeyError as e:
            raise ValueError(f"{path} line {i + 1} has no {e}; is it a log of this nanorun's train.py?") from None
    if config is None:
        raise ValueError(f"{path} has no config event; is it a nanorun log.jsonl?")
    config["config"] = {**ADDED_LATER, **config.get("config", {})}
    return {"name": config.get("name") or os.path.basename(os.path.dirname(path)), "path": path, "config": config,
            "train": [(epoch, loss) for _, epoch, loss, _ in train],
            "train_per_char": [(epoch, per_char) for _, epoch, _, per_char in train],
            "evals": [(epoch, loss) for _, epoch, loss, _ in evals], "eval_s": [e[3] for e in evals],
            "elapsed_s": evals[-1][3] if evals else None, "end": end}

# Flags train.py gained after some logs were written, with the value that does what the code did before them:
# an older log without the key ran that way, and groups with newer runs that set it so.
ADDED_LATER = {"window_offsets": False, "teacher": None, "distill": 0.5, "attn_gate": False, "relu2": False,
               "ema": 0.0}

def final_val_loss(run):
    """The run's final val loss: from its end event, else its last evaluation, else None."""
    end = (run["end"] or {}).get("final_val_loss")
    return end if end is not None else run["evals"][-1][1] if run["evals"] else None

def run_time(run):
    """Seconds the run took (a resumed run's clock goes on from its checkpoint), or None: not known."""
    return (run["end"] or {}).get("time_s") or run["elapsed_s"]

def finished(run):
    """Whether the run ended "done" at the config event's total_steps (--max_steps ends "done" earlier).

    >>> finished({"config": {"total_steps": 17}, "end": {"status": "done", "steps": 10}})
    False
    """
    end = run["end"] or {}
    return end.get("status") == "done" and end.get("steps", 0) >= (run["config"].get("total_steps") or 0)

# -----------------------------------------------------------------------------
# seeds of one recipe: one group, one mean curve, one row

# Settings that name, place, show or time a run but never change what it learns (evaluation only reads
# the model; only evaluate.py reads the test titles). The data counts by its sha256, not by its path.
NOT_RECIPE = {"seed", "preset", "name", "out_dir", "resume", "progress", "sample", "log_every",
              "evals_per_epoch", "device", "compile", "test_titles", "data"}

def group_runs(runs):
    """The runs as lists of seeds of one recipe (equal configs less NOT_RECIPE, equal data), in order.

    >>> run = lambda seed, lr: {"config": {"config": {"seed": seed, "lr": lr, "data": "t.txt"}}}
    >>> [[r["config"]["config"]["seed"] for r in g] for g in group_runs([run(1, 1e-3), run(1, 3e-3), run(2, 1e-3)])]
    [[1, 2], [1]]
    """
    keys = [dict({k: v for k, v in r["config"]["config"].items() if k not in NOT_RECIPE},
                 data=(r["config"].get("data") or {}).get("sha256") or r["config"]["config"].get("data")) for r in runs]
    return [[run for run, k in zip(runs, keys) if k == key] for i, key in enumerate(keys) if key not in keys[:i]]

def recipe_labels(configs):
    """Each recipe's preset ("defaults" without one) and the flags of train.py in which it differs from the
    first recipe of that preset, the row an ablation compares with (make ablate puts plain step6 first).

    >>> recipe_labels([{"preset": "step6", "opt": "asam", "rope": True}, {"preset": "step6", "opt": "adamw"}])
    ['step6', 'step6 --opt adamw']
    """
    first, labels = {}, []
    for c in configs:
        base = first.setdefault(c.get("preset"), c)
        changed = {k: v for k, v in c.items() if (k not in NOT_RECIPE or k == "data") and v != base.get(k, v)}
        labels.append(" ".join([c.get("preset") or "defaults"] + [
            f"--{k}" if v is True else f"--no-{k}" if v is False else f"--{k} {v}" for k, v in changed.items()]))
    return labels

def band(curves):
    """Mean, lowest and highest value across curves [(epoch, value), ...] at the epochs all of them reached.

    >>> band([[(0.5, 2.0), (1.0, 1.0)], [(0.5, 4.0), (1.0, 3.0), (1.5, 2.0)]])
    ([0.5, 1.0], [3.0, 2.0], [2.0, 1.0], [4.0, 3.0])
    """
    epochs = sorted(set.intersection(*[{e for e, _ in c} for c in curves]))
    values = [[dict(c)[e] for c in curves] for e in epochs]
    return epochs, [sum(v) / len(v) for v in values], [min(v) for v in values], [max(v) for v in values]

def smooth(values, beta=0.9):
    """Exponential moving average with bias correction (the first values are not pulled to 0).

    >>> smooth([0.0, 2.0], beta=0.5)
    [0.0, 1.3333333333333333]
    """
    out, ema = [], 0.0
    for t, x in enumerate(values, start=1):
        ema = beta * ema + (1 - beta) * x
        out.append(ema / (1 - beta**t))
    return out

# -----------------------------------------------------------------------------
# table cells

UNFINISHED = "* unfinished: the run stopped before its last step (interrupted, diverged or --max_steps); " \
             "its last evaluation is counted."

def _g(x):
    """A number or a count for a table cell.

    >>> _g(0.0003), _g(0.2012), _g(100000), _g(2560128), _g(None), _g("t.txt")
    ('3e-04', '0.2012', '100,000', '2.56M', '-', 't.txt')
    """
    if x is None or isinstance(x, (str, bool)):
        return "-" if x is None else str(x)
    return (f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x:,}") if isinstance(x, int) else \
        f"{x:.0e}" if 0 < abs(x) < 1e-3 else f"{x:g}"

def device_name(event):
    """The device a run trained on, by name, and whether its matmuls ran in bf16, from its config event.

    >>> device_name({"device": "cuda", "amp": True, "versions": {"gpu": "NVIDIA H200"}}), \\
    ...     device_name({"device": "cpu", "amp": False, "versions": {"gpu": None, "cpu": "AMD EPYC"}})
    ('NVIDIA H200 bf16', 'AMD EPYC fp32')
    """
    v, device = event.get("versions") or {}, str(event.get("device", "-"))
    name = (v.get("gpu") if device.startswith("cuda") else v.get("cpu")) or device  # older logs: "cpu"
    return name.replace("(R)", "") + {True: " bf16", False: " fp32"}.get(event.get("amp"), "")

def group_val(group):
    """A group's final val loss, mean ± spread (max - min) over its seeds, * when one is unfinished.

    >>> run = lambda loss, status: {"evals": [], "config": {}, "end": {"status": status, "final_val_loss": loss}}
    >>> group_val([run(1.40, "done"), run(1.42, "done")]), group_val([run(1.3, "interrupted")])
    ('1.4100 ± 0.0200', '1.3000 *')
    """
    finals = [final_val_loss(r) for r in group]
    if None in finals:
        return "-"
    return mean_spread(finals) + ("" if all(map(finished, group)) else " *")

def mean_spread(values):
    mean = sum(values) / len(values)
    return f"{mean:.4f}" if len(values) == 1 else f"{mean:.4f} ± {max(values) - min(values):.4f}"

def held_out_loss(run):
    """The held-out test loss evaluate.py printed for the run's last checkpoint, kept as evaluate.txt in the
    run's folder or the folder above it, or None. A row is the run's when its checkpoint's folder has the
    run's name and its val loss the run's final one (two runs may share a name)."""
    folder = os.path.dirname(run["path"])
    for path in (os.path.join(folder, "evaluate.txt"), os.path.join(os.path.dirname(folder), "evaluate.txt")):
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in f if line[0] == "|"]
            columns = ("checkpoint", "test loss (nats/char)", "val loss")
            if not rows or not set(columns) <= set(rows[0]):
                continue  # not evaluate.py's table, or an empty file: nothing was scored
            ckpt, test, val = map(rows[0].index, columns)
            for row in rows[2:]:
                if (os.path.basename(os.path.dirname(row[ckpt].rstrip(" *"))) == run["name"]
                        and row[val] == f"{final_val_loss(run) or 0:.4f}"):
                    return float(row[test])
    return None

def group_test(tests):
    """A group's held-out test loss over the seeds evaluated, from its runs' held_out_loss (None: not evaluated)."""
    tests, n = [t for t in tests if t is not None], len(tests)
    return mean_spread(tests) + f" ({len(tests)} of {n} seeds)" * (len(tests) < n) if tests else "-"

# -----------------------------------------------------------------------------
# the figure

def figure(groups, labels):
    """The study's Fig. 1: val loss and smoothed train loss of `groups` (group_runs) named `labels`, a colour a
    group, seeds as their mean in a band from the lowest to the highest; the legend gives the final val loss."""
    import matplotlib
    from matplotlib.figure import Figure  # not pyplot: no window, no global list of open figures

    runs = [run for group in groups for run in group]
    tab20 = matplotlib.colormaps["tab20"].colors  # its ten dark colours first, then the light ones
    colors = [tab20[2 * i % 20 + i // 10 % 2] for i in range(len(groups))]
    fig = Figure(figsize=(15, 5.5))
    ax_val, ax_train = fig.subplots(1, 2)
    train_ys = []
    for group, label, color in zip(groups, labels, colors):
        epochs, mean, lo, hi = band([run["evals"] for run in group])
        ax_val.plot(epochs, mean, "o-", color=color, ms=3, label=f"{label}  {group_val(group)}")
        if len(group) > 1:
            ax_val.fill_between(epochs, lo, hi, color=color, alpha=0.25, lw=0)
        curves = [run["train_per_char"] for run in group if run["train_per_char"]]  # the val loss's unit
        if not curves:
            continue
        # an average over the last ~1/(1 - beta) points, at most a tenth of the curve: a short run's
        # few points are drawn as they are (beta 0) instead of being smoothed flat
        beta = min(0.9, max(0.0, 1 - 10 / min(map(len, curves))))
        epochs, mean, lo, hi = band([list(zip([e for e, _ in c], smooth([v for _, v in c], beta))) for c in curves])
        ax_train.plot(epochs, mean, "o-" if len(epochs) < 20 else "-", color=color, ms=3)
        if len(group) > 1:
            ax_train.fill_between(epochs, lo, hi, color=color, alpha=0.25, lw=0)
        train_ys += [min(lo), hi[len(hi) // 10]]  # the first, steep tenth would squash the rest to the bottom
    # likewise the step-0 evaluation (an untrained model): the val range starts after training began
    val_ys = [v for run in runs for e, v in run["evals"] if e > 0] or [v for run in runs for _, v in run["evals"]]
    for ax, ys in [(ax_val, val_ys), (ax_train, train_ys or [0, 1])]:
        pad = 0.08 * (max(ys) - min(ys)) or 0.05
        ax.set(ylim=(min(ys) - pad, max(ys) + pad), xlabel="epoch",  # the epochs end where the longest run ended
               xlim=(0, max(e for run in runs for e, _ in run["train"] + run["evals"]) or 1))
        ax.grid(alpha=0.3)
    ax_val.set(title="validation loss (nats per character)", ylabel="val loss (nats/char)")
    ax_train.set(title="training loss (nats/char, smoothed)", ylabel="train loss (nats/char)")
    notes = ["final val loss"] + ["band: lowest to highest seed"] * any(len(g) > 1 for g in groups) + \
        ["* unfinished: stopped before its last step"] * (not all(map(finished, runs)))
    ax_val.legend(fontsize=8, title="\n".join(notes), title_fontsize=8)
    if not train_ys:  # every run was shorter than its --log_every
        ax_train.text(0.5, 0.5, "no training loss logged", transform=ax_train.transAxes, ha="center", color="gray")
    return fig

# -----------------------------------------------------------------------------
# the ladder table and the ablation table

def scale(runs):
    """The titles, epochs and data the runs were trained on, for a table's title."""
    titles, epochs, data = (", ".join(sorted({_g(r["config"]["config"].get(k)) for r in runs}))
                            for k in ("num_titles", "epochs", "data"))
    return f"{titles} titles x {epochs} epoch{'s' * (epochs != '1')} of {data}"

def markdown(title, header, rows, notes=()):
    """A Markdown table under its title, with its notes below it and what * means when a cell has one."""
    notes = [*notes] + [UNFINISHED] * any(cell.endswith(" *") for row in rows for cell in row)
    return "\n".join([title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(row) + " |" for row in rows] + [""] * bool(notes) + notes)

def ladder_table(runs):
    """The study's ladder: a row per run made with a preset, step0 .. step6 then the others; the change and
    the study's number are the log's own (older logs have neither)."""
    preset = lambda r: r["config"]["config"].get("preset")  # noqa: E731
    steps = sorted((r for r in runs if preset(r)),
                   key=lambda r: (not preset(r).startswith("step"), preset(r), r["config"].get("time", 0)))
    study = [r["config"].get("preset") or {} for r in steps]
    rows = [[preset(r), r["name"], s.get("change") or "-", group_val([r]), _g(s.get("study_val_loss")),
             seconds(run_time(r)), device_name(r["config"])] for r, s in zip(steps, study)]
    return markdown(f"nanorun ladder: {scale(steps)} (the study: 100,000 titles x 7 epochs)", ["step", "run",
                    "change", "nanorun val loss", "study val loss", "time", "device"], rows) if steps else None

def time_to_cell(group, target):
    """Mean time to a group's first evaluation at or below `target`, saying how many seeds reached it.

    >>> run = lambda loss, s: {"evals": [(0, 1.5), (1, loss)], "eval_s": [10, s]}
    >>> [time_to_cell(g, 1.32) for g in ([run(1.3, 100), run(1.3, 140)], [run(1.3, 100), run(1.4, 1)], [run(1.4, 1)])]
    ['2.0 min', '100 s (1 of 2 seeds)', 'not reached']
    """
    times = [next(s for (_, loss), s in zip(run["evals"], run["eval_s"]) if loss <= target)
             for run in group if any(loss <= target for _, loss in run["evals"])]
    cell = seconds(sum(times) / len(times)) if times else "not reached"
    return cell if len(times) in (0, len(group)) else f"{cell} ({len(times)} of {len(group)} seeds)"

def ablation_table(groups, labels, target=None):
    """An ablation: a row per recipe (group_runs) named by `labels` (recipe_labels); with a `target`, the time to it."""
    tests = [list(map(held_out_loss, group)) for group in groups]
    held_out = any(t is not None for row in tests for t in row)  # a column of its own where any run was evaluated
    header, rows = ["#", "change", "val loss"] + ["held-out test"] * held_out + \
        ["seeds", "params", "mean time", "device"], []
    for i, (group, label, row_tests) in enumerate(zip(groups, labels, tests), start=1):
        times = [t for t in map(run_time, group) if t is not None]  # None: killed before its first evaluation
        mean_time = seconds(sum(times) / len(times)) if times else "-"
        rows.append([str(i), label, group_val(group)] + [group_test(row_tests)] * held_out +
                    [str(len(group)), _g(group[0]["config"].get("n_params")),
                     mean_time, ", ".join(sorted({device_name(run["config"]) for run in group}))]
                    + [time_to_cell(group, target)] * bool(target))
    header += [f"time to {target:g}"] * bool(target)
    notes = ["change: the row's preset, and the flags in which it differs from that preset's first row.",
             "val loss: final validation loss, nats per character, mean ± spread (max − min) over the seeds; a "
             "difference between rows under twice the spread is noise."]
    notes += ["held-out test: evaluate.py's test loss of each run's last checkpoint (evaluate.txt beside the "
              "logs), mean ± spread over the seeds evaluated."] * held_out
    notes += [f"time to {target:g}: from a run's start (tokenizer and compilation included) to its first "
              f"evaluation at or below {target:g}, mean over the seeds that reached it."] * bool(target)
    n = sum(map(len, groups))
    title = f"ablation: {len(groups)} recipe{'s' * (len(groups) > 1)}, {n} run{'s' * (n > 1)}, {scale(sum(groups, []))}"
    return markdown(title, header, rows, notes)

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=["runs/*/log.jsonl"], help="globs of run logs; rows and "
                        "colours follow the globs, then the order the runs were made (default: runs/*/log.jsonl)")
    parser.add_argument("--labels", nargs="+", help="the figure's name for each recipe, in the rows' order (default: "
                        "the name its runs share, less make ablate's -sSEED, else its preset and changed flags)")
    parser.add_argument("--out", default="runs/figure.png", help="PNG to write (default: %(default)s)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--table", action="store_true", help="print the ladder (runs made with --preset) as Markdown")
    what.add_argument("--ablation", action="store_true", help="print a Markdown row per recipe (seeds: mean ± spread)")
    parser.add_argument("--target", type=float, default=1.3206, help="with --ablation, add the time to this val "
                        "loss (default: %(default)s, the study's step-6 result; 0 leaves the column out)")
    args = parser.parse_args(argv)

    # rows and colours: glob after glob (make ablate gives a glob a row), then the order the runs were made
    runs = []
    for pattern in args.runs:
        if not glob.glob(pattern):
            sys.exit(f"error: no log matches --runs {pattern!r}; train a run first or pass the glob of your logs.")
        paths = [p for p in sorted(glob.glob(pattern)) if p not in {r["path"] for r in runs}]  # once, the first time
        try:
            runs += sorted((read_log(p) for p in paths), key=lambda r: r["config"].get("time", 0))
        except (OSError, ValueError) as e:
            sys.exit(f"error: {e}")
    if args.table:
        if (table := ladder_table(runs)) is None:
            sys.exit(f"error: none of the {len(runs)} runs matching {' '.join(args.runs)!r} was made with "
                     "--preset; run `make ladder` first.")
        return print(table)
    if empty := [r["name"] for r in runs if not r["evals"]]:
        print(f"skipping {len(empty)} run(s) with no evaluation yet: {', '.join(empty)}", file=sys.stderr)
    if not (runs := [r for r in runs if r["evals"]]):
        sys.exit("error: no run has an evaluation to plot yet.")
    groups = group_runs(runs)
    names = recipe_labels([group[0]["config"]["config"] for group in groups])
    if args.ablation:
        return print(ablation_table(groups, names, args.target))
    if args.labels and len(args.labels) != len(groups):
        sys.exit(f"error: --labels gives {len(args.labels)} names for {len(groups)} recipes; give one a recipe.")
    # a group's name: the one its runs share, less the -sSEED that make ablate appends, else its recipe's
    bases = [{re.sub(r"-s\d+$", "", run["name"]) for run in group} for group in groups]
    labels = args.labels or [b.pop() if len(b) == 1 else name for b, name in zip(bases, names)]
    labels = [label if len(g) == 1 else f"{label} ({len(g)} seeds)" for g, label in zip(groups, labels)]
    try:  # all of the PNG or none of it: a browser tab reloading never sees half of one
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with atomic_file(args.out) as tmp:
            figure(groups, labels).savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    except OSError as e:  # a folder that cannot be written: say so, in one line
        sys.exit(f"error: cannot write {args.out} ({e.filename}: {e.strerror}); pass --out with a path you can "
                 "write to")
    print(f"wrote {args.out} ({len(runs)} runs, {len(groups)} recipes)")


if __name__ == "__main__":
    main()
