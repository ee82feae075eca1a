"""
Draw nanorun's run logs as one figure: validation loss, smoothed training loss and a table of
each run's recipe (the study's Fig. 1), or print the study ladder or an ablation as a Markdown table.

Every run writes runs/<name>/log.jsonl (one JSON object per line: a "config" event, then "train",
"eval" and finally "end" events; see train.py). This script only reads those logs. Runs whose
configs differ only in the seed (and in settings that do not change what is learned, such as the
run's name or device) are seeds of one recipe: the figure draws them as one mean curve in a shaded
min-max band, and the ablation table gives them one row, mean ± spread.

    python plot_logs.py                                   # runs/*/log.jsonl -> runs/figure.png
    python plot_logs.py --runs 'runs/ladder-*/*/log.jsonl' --out runs/ladder.png
    python plot_logs.py --table --runs 'runs/ladder-cpu-*/*/log.jsonl'   # Markdown ladder table
    python plot_logs.py --ablation --runs 'runs/ablate-*/*/log.jsonl'    # one row per recipe
"""

import argparse
import glob
import os
import sys

from checkpoint import final_val_loss, finished, read_log, run_time, time_to_loss

# -----------------------------------------------------------------------------
# helpers for the figure (reading a log is checkpoint.read_log, beside the code that writes it)


def smooth(values, beta=0.9):
    """Exponential moving average with bias correction (the first values are not pulled to 0).

    >>> smooth([2.0, 2.0, 2.0])
    [2.0, 2.0, 2.0]
    >>> smooth([0.0, 2.0], beta=0.5)
    [0.0, 1.3333333333333333]
    """
    out, ema = [], 0.0
    for t, x in enumerate(values, start=1):
        ema = beta * ema + (1 - beta) * x
        out.append(ema / (1 - beta**t))
    return out


def push_apart(ys, gap, lo=float("-inf")):
    """Label heights for values `ys`: each at least `gap` above the next lower one and at least `lo`.

    Labels only move up, so each stays level with or above its point.

    >>> push_apart([1.0, 1.01, 2.0], gap=0.1)
    [1.0, 1.1, 2.0]
    """
    out, last = [0.0] * len(ys), lo - gap
    for i in sorted(range(len(ys)), key=lambda i: ys[i]):
        out[i] = last = max(ys[i], last + gap)
    return out


# -----------------------------------------------------------------------------
# seeds of one recipe: one group, one mean curve, one row

# Settings that name, place, show or time a run, or pick how fast it runs, but never change what it
# learns: runs that differ only in these (and the seed) are seeds of one recipe. Evaluation only
# reads the model, so how often it runs does not count; only evaluate.py reads the test titles.
# The data file counts by its contents (its sha256, when the log has it), not by its path.
NOT_RECIPE = {"seed", "preset", "name", "out_dir", "resume", "progress", "sample", "log_every",
              "evals_per_epoch", "device", "compile", "test_titles", "data"}


def recipe(config, data_sha256=None):
    """What decides what a run learns: its config less NOT_RECIPE, plus its data by fingerprint.

    >>> recipe({"lr": 3e-4, "seed": 1, "name": "a", "data": "t.txt"}, data_sha256="9f2c")
    {'lr': 0.0003, 'data': '9f2c'}
    >>> recipe({"lr": 3e-4, "seed": 2, "name": "b", "data": "t.txt"})  # an older log: the path
    {'lr': 0.0003, 'data': 't.txt'}
    """
    out = {k: v for k, v in config.items() if k not in NOT_RECIPE}
    out["data"] = data_sha256 or config.get("data")
    return out


def group_by_recipe(recipes):
    """Indices of equal recipes, grouped, in the order each recipe first appears.

    >>> group_by_recipe([{"lr": 1e-3}, {"lr": 3e-3}, {"lr": 1e-3}, {"lr": 1e-3}])
    [[0, 2, 3], [1]]
    """
    keys, groups = [], []
    for i, r in enumerate(recipes):
        if r in keys:
            groups[keys.index(r)].append(i)
        else:
            keys.append(r)
            groups.append([i])
    return groups


def group_runs(runs, defaults=None):
    """The runs (read_log dicts) as lists of seeds of one recipe, in the order the runs are given. A setting
    newer than a log takes its value from `defaults` (train.defaults()), which is what older versions did."""
    recipes = [recipe({**(defaults or {}), **r["config"].get("config", {})},
                      (r["config"].get("data") or {}).get("sha256")) for r in runs]
    return [[runs[i] for i in group] for group in group_by_recipe(recipes)]


def band(curves):
    """Mean, lowest and highest value across curves [(epoch, value), ...] at the epochs all of them
    reached (a run that stopped early shortens its group's curve).

    >>> band([[(0.5, 2.0), (1.0, 1.0)], [(0.5, 4.0), (1.0, 3.0), (1.5, 2.0)]])
    ([0.5, 1.0], [3.0, 2.0], [2.0, 1.0], [4.0, 3.0])
    """
    common = set.intersection(*[{e for e, _ in c} for c in curves]) if curves else set()
    epochs = sorted(common)
    at = [dict(c) for c in curves]
    values = [[a[e] for a in at] for e in epochs]
    return epochs, [sum(v) / len(v) for v in values], [min(v) for v in values], [max(v) for v in values]


def mean_spread(values):
    """A few seeds' results as one cell: mean ± spread, the spread being max - min; one seed as it is.

    >>> mean_spread([1.40, 1.42, 1.41])
    '1.4100 ± 0.0200'
    >>> mean_spread([1.3])
    '1.3000'
    """
    mean = sum(values) / len(values)
    return f"{mean:.4f}" if len(values) == 1 else f"{mean:.4f} ± {max(values) - min(values):.4f}"


def flags(config, base):
    """The settings in which `config` differs from `base`, written as the flags of train.py that
    give them, in config order; settings in NOT_RECIPE are left out, except the data file.

    >>> flags({"opt": "adamw", "lr": 3e-4, "wd_all": False, "seed": 7},
    ...       {"opt": "asam", "lr": 3e-4, "wd_all": True})
    ['--opt adamw', '--no-wd_all']
    """
    out = []
    for k, v in config.items():
        if (k in NOT_RECIPE and k != "data") or k not in base or v == base[k]:
            continue
        value = _g(v) if isinstance(v, float) else str(v)
        out.append(f"--{k}" if v is True else f"--no-{k}" if v is False else f"--{k} {value}")
    return out


def preset_of(config, presets, defaults):
    """The preset whose recipe `config` is (whatever data it read), else the preset it was started from.

    >>> presets = {"step6": {"flags": {"opt": "asam"}}, "nanorun": {"flags": {"opt": "muon"}}}
    >>> preset_of({"preset": "step6", "opt": "muon", "data": "t.txt"}, presets, {"data": "d.txt"})
    'nanorun'
    """
    for name, p in presets.items():
        if not [f for f in flags(config, dict(defaults, **p["flags"])) if not f.startswith("--data ")]:
            return name
    return config.get("preset")


def recipe_labels(configs, presets, defaults):
    """Name each recipe by its preset (preset_of; "defaults" without one) and the flags that differ from it.

    Flags that every recipe has (the scale the runs were trained at, say) would repeat on every
    label: they are left out of the labels and returned once. `presets` is train.PRESETS and
    `defaults` train.defaults().

    >>> base = {"opt": "asam", "rho": None, "epochs": 7}
    >>> recipe_labels([{"preset": "step6", "opt": "asam", "rho": None, "epochs": 1},
    ...                {"preset": "step6", "opt": "adamw", "rho": 0.5, "epochs": 1}],
    ...               {"step6": {"flags": base}}, {})
    (['step6', 'step6 + --opt adamw --rho 0.5'], ['--epochs 1'])
    """
    names = [preset_of(c, presets, defaults) for c in configs]
    changed = [flags(c, dict(defaults, **presets[name]["flags"]) if name in presets else defaults)
               for c, name in zip(configs, names)]
    shared = [f for f in changed[0] if all(f in ch for ch in changed)] if changed else []
    labels = []
    for name, ch in zip(names, changed):
        own = " ".join(f for f in ch if f not in shared)
        name = name or "defaults"
        labels.append(f"{name} + {own}" if own else name)
    return labels, shared


def seeds_name(group):
    """The name a group's runs share when each is named NAME-sSEED, as make ablate names them; else None.

    >>> run = lambda name, seed: {"name": name, "config": {"config": {"seed": seed}}}
    >>> seeds_name([run("rope-s1337", 1337), run("rope-s1338", 1338)]), seeds_name([run("a-s1", 1), run("b-s2", 2)])
    ('rope', None)
    """
    named = [(run["name"], f"-s{run['config'].get('config', {}).get('seed')}") for run in group]
    bases = {name[:-len(suffix)] for name, suffix in named}
    return bases.pop() if len(bases) == 1 and all(n.endswith(s) and n != s for n, s in named) else None


def group_val(group):
    """A group's final val loss as mean ± spread, marked * when one of its runs is unfinished."""
    done = all(map(finished, group))
    return mean_spread([final_val_loss(r) for r in group]) + ("" if done else " *")


# -----------------------------------------------------------------------------
# the meta table (one row per run)


def _g(x):
    """Compact number for a table cell.

    >>> _g(0.0003), _g(0.2012), _g(None)
    ('3e-04', '0.2012', '-')
    """
    return "-" if x is None else f"{x:.0e}" if isinstance(x, float) and 0 < abs(x) < 1e-3 else f"{x:g}"


def _count(n):
    """Parameter count for a table cell.

    >>> _count(27172864), _count(24416), _count(None)
    ('27.17M', '24.4k', '-')
    """
    return "-" if not n else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _time(t):
    """Seconds for a table cell.

    >>> _time(59.6), _time(150.0), _time(None)
    ('60 s', '2.5 min', '-')
    """
    return "-" if t is None else f"{t:.0f} s" if t < 120 else f"{t / 60:.1f} min"


def meta_row(run):
    """The study's Fig. 1 columns for one run, as strings."""
    c, ev = run["config"].get("config", {}), run["config"]
    shape = f"{c.get('n_layer')}L {c.get('n_head')}H {c.get('d_model')}d b{c.get('block_size')}"
    n_params = ev.get("n_params")
    final = final_val_loss(run)
    return [run["name"], c.get("opt", "-"), shape, _g(c.get("vocab_size")), _g(c.get("dropout")),
            _g(c.get("lr")), c.get("schedule", "-"), _g(c.get("weight_decay")), _g(c.get("min_lr")),
            _g(c.get("warmup_ratio")), _g(c.get("epochs")), _count(n_params),
            str(ev.get("device", "-")) + (" bf16" if ev.get("amp") else ""),
            "-" if final is None else f"{final:.4f}" + ("" if finished(run) else " *")]


META_COLUMNS = ["run", "opt", "shape", "vocab", "dropout", "lr", "schedule", "wd", "min_lr", "warm-up", "epochs",
                "params", "device", "final val loss"]

# -----------------------------------------------------------------------------
# the figure


def figure(groups, labels):
    """Draw val loss, smoothed train loss and the meta table; return the matplotlib figure.

    `groups` are lists of runs, each list the seeds of one recipe (group_runs), and `labels` their
    names. A group of one run is drawn as a line; a larger group as its mean line in a shaded band
    from the lowest to the highest of its seeds.
    """
    import matplotlib.pyplot as plt
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import Patch

    n = len(groups)
    runs = [run for group in groups for run in group]
    # one colour per group in all three panels: tab20's ten dark shades first, then its light ones
    tab20 = plt.get_cmap("tab20").colors
    palette = tab20[0::2] + tab20[1::2]
    colors = [palette[i % 20] for i in range(n)]
    table_h = 0.2 * (n + 1) + 0.3
    fig = plt.figure(figsize=(15, 5.5 + table_h))
    grid = fig.add_gridspec(2, 2, height_ratios=[5.5, table_h], hspace=0.25, wspace=0.32)
    ax_val, ax_train = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ax_table = fig.add_subplot(grid[1, :])

    # the training loss in nats per character, the unit of the validation loss, when every run logged
    # it; logs from before train.py did have only nats per token, and one panel holds one unit
    per_char = all(r["train_per_char"] is not None for r in runs if r["train"])
    key, unit, words = ("train_per_char", "nats/char", "nats per character") if per_char else \
        ("train", "nats/token", "nats per token")
    # the step-0 evaluation (an untrained model) would squash every curve into the bottom of the
    # plot, so the y range starts from the first evaluation after training began
    later = [v for run in runs for e, v in run["evals"] if e > 0] or [v for run in runs for _, v in run["evals"]]
    finals, train_lo, train_hi = [], [], []
    for group, label, color in zip(groups, labels, colors):
        epochs, mean, lo, hi = band([run["evals"] for run in group])
        if epochs:
            ax_val.plot(epochs, mean, "o-", color=color, ms=3, lw=1.5)
            if len(group) > 1:
                ax_val.fill_between(epochs, lo, hi, color=color, alpha=0.25, lw=0)
            noise = f" ± {hi[-1] - lo[-1]:.4f}" if len(group) > 1 else ""
            finals.append((f"{label}  {mean[-1]:.4f}{noise}", mean[-1], epochs[-1], color))
        curves = [run[key] for run in group if run[key]]
        if not curves:
            continue
        # An average over the last ~1/(1 - beta) points: at most a tenth of the curve, so a short
        # run's few points are drawn as they are (beta 0) instead of being smoothed flat.
        n_points = min(len(c) for c in curves)
        beta = min(0.9, max(0.0, 1 - 10 / n_points))
        smoothed = [list(zip([e for e, _ in c], smooth([v for _, v in c], beta))) for c in curves]
        epochs, mean, lo, hi = band(smoothed)
        ax_train.plot(epochs, mean, color=color, lw=1.2, marker="o" if len(epochs) < 20 else None, ms=3,
                      label=label)
        if len(group) > 1:
            ax_train.fill_between(epochs, lo, hi, color=color, alpha=0.25, lw=0)
        train_lo.append(min(lo))
        train_hi.append(hi[len(hi) // 10])  # again skip the first, steep tenth
    if train_lo:
        pad = 0.05 * (max(train_hi) - min(train_lo)) or 0.05
        ax_train.set_ylim(min(train_lo) - pad, max(train_hi) + pad)
        handles, _ = ax_train.get_legend_handles_labels()
        if any(len(group) > 1 for group in groups):
            handles.append(Patch(color="gray", alpha=0.25, label="lowest to highest seed"))
        ax_train.legend(handles=handles, fontsize=7, loc="best")
    else:
        ax_train.text(0.5, 0.5, "no training loss logged\n(the runs are shorter than --log_every steps)",
                      transform=ax_train.transAxes, ha="center", va="center", color="gray")
    # the epochs axis ends where the longest run ended (matplotlib would add a margin past it)
    x_last = max((e for run in runs for e, _ in run["train"] + run["evals"]), default=0)
    if x_last > 0:
        ax_train.set_xlim(0, x_last)
    if finals:
        lo, hi = min(later), max(later)
        pad = 0.08 * (hi - lo) or 0.05
        ax_val.set_ylim(lo - pad, hi + pad)
        # each group's final val loss, written at the right edge, its labels pushed apart so none
        # overlap: one text line is 8 pt * 1.25, turned into data units by the axes' height
        x_end = max(x for _, _, x, _ in finals)
        line_in = 8 * 1.25 / 72
        axes_in = ax_val.get_position().height * fig.get_figheight()
        gap = (hi - lo + 2 * pad) * line_in / axes_in
        y_text = push_apart([y for _, y, _, _ in finals], gap, lo=lo - pad + gap / 2)
        ax_val.set_ylim(top=max(hi + pad, max(y_text) + gap / 2))  # room for labels pushed to the top
        for yt, (text, y, x, color) in zip(y_text, finals):
            ax_val.annotate(text, xy=(x, y), xytext=(x_end * 1.03, yt),
                            color=color, fontsize=8, va="center", annotation_clip=False,
                            arrowprops=dict(arrowstyle="-", color=color, lw=0.6, alpha=0.6))
        # widen the x axis so the longest label fits inside it, measured as the renderer will draw it
        renderer, font = fig.canvas.get_renderer(), FontProperties(size=8)
        label_in = max(renderer.get_text_width_height_descent(text, font, ismath=False)[0]
                       for text, _, _, _ in finals) / fig.dpi
        width_in = ax_val.get_position().width * fig.get_figwidth()
        ax_val.set_xlim(0, x_end * 1.03 / max(0.3, 1 - label_in / width_in - 0.02))
        ax_val.set_xticks([t for t in ax_val.get_xticks() if 0 <= t <= x_end])  # no epochs past the runs
    ax_val.set(title="validation loss (nats per character)", xlabel="epoch", ylabel="val loss (nats/char)")
    ax_train.set(title=f"training loss ({words}, smoothed)", xlabel="epoch", ylabel=f"train loss ({unit})")
    for ax in (ax_val, ax_train):
        ax.grid(alpha=0.3)

    ax_table.axis("off")
    rows = []
    for group, label in zip(groups, labels):
        row = meta_row(group[0])
        if len(group) > 1:  # the settings are the group's; the name and the val loss its seeds'
            row[0], row[-1] = label, group_val(group)
        rows.append(row)
    columns = list(META_COLUMNS)
    if any(row[-1].endswith("*") for row in rows):
        columns[-1] = "final val loss (* unfinished)"
    table = ax_table.table(cellText=rows, colLabels=columns, loc="upper center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(META_COLUMNS))))
    for i, color in enumerate(colors):
        table[i + 1, 0].set_text_props(color=color, fontweight="bold")  # the group's name in its colour
    for j in range(len(META_COLUMNS)):
        table[0, j].set_text_props(fontweight="bold")
    return fig


def save_png(fig, out):
    """Write the figure to `out` and close it. Atomic: a reader (or a browser tab reloading) never
    sees half a PNG."""
    import matplotlib.pyplot as plt
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
# the ladder table and the ablation table


def ladder_table(runs, presets):
    """Markdown table of the study's ladder: one row per run that used a preset, in preset order.

    `presets` is train.PRESETS ({"step0": {"change", "study_val_loss", "flags"}, ...}).
    The title states the scale the runs were trained at, read from their configs; the run column
    tells apart several runs of one step.
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
             "| step | run | change | nanorun val loss | study val loss | time |",
             "|---|---|---|---|---|---|"]
    for run in steps:
        preset = run["config"]["config"]["preset"]
        final = final_val_loss(run)
        loss = "-" if final is None else f"{final:.4f}" + ("" if finished(run) else " (unfinished)")
        study = presets[preset].get("study_val_loss")
        lines.append(f"| {preset} | {run['name']} | {presets[preset]['change']} | {loss} | {_g(study)} "
                     f"| {_time(run_time(run))} |")
    return "\n".join(lines)


def ablation_table(groups, labels, shared, target=None):
    """Markdown table of an ablation: one row per recipe (a group of seeds), in the order given.

    `labels` name each group by what it changed and `shared` lists the flags all of them share
    (recipe_labels). The val loss is the final one, as mean ± spread over the group's seeds. With a
    `target` loss, a last column gives the mean time to the first evaluation at or below it.
    """
    n_runs = sum(len(group) for group in groups)
    lines = [f"ablation: {len(groups)} recipe{'s' * (len(groups) > 1)}, {n_runs} run{'s' * (n_runs > 1)}"
             + (f"; every run also had {' '.join(shared)}" if shared else ""), "",
             "| # | change | val loss | seeds | params | mean time |" + (f" time to {target:g} |" if target else ""),
             "|---|---|---|---|---|---|" + ("---|" if target else "")]
    vals = [group_val(group) for group in groups]
    for i, (group, label, val) in enumerate(zip(groups, labels, vals), start=1):
        times = [t for t in map(run_time, group) if t is not None]
        mean_time = _time(sum(times) / len(times)) if times else "-"
        if 0 < len(times) < len(group):
            mean_time += f" ({len(times)} of {len(group)} seeds)"  # the others' clocks are not known
        lines.append(f"| {i} | {label} | {val} | {len(group)} | {_count(group[0]['config'].get('n_params'))} "
                     f"| {mean_time} |" + (f" {time_to_cell(group, target)} |" if target else ""))
    lines += ["", "val loss: final validation loss in nats per character, mean ± spread (max − min) over a "
                  "row's seeds (one seed: its value); a difference between rows smaller than twice the "
                  "spread is noise."]
    if any(val.endswith("*") for val in vals):
        lines.append("* a run of this row did not finish; its last evaluation is counted.")
    if target:
        lines.append(f"time to {target:g}: seconds from a run's start (tokenizer and compilation included) to "
                     f"its first evaluation at or below {target:g}, mean over the seeds that reached it.")
    return "\n".join(lines)


def time_to_cell(group, target):
    """Mean time to `target` over a group's seeds, saying how many of them reached it when not all.

    >>> run = lambda *pairs: {"evals": [(0, loss) for loss, _ in pairs], "eval_s": [s for _, s in pairs]}
    >>> time_to_cell([run((1.5, 10), (1.3, 100)), run((1.3, 140))], 1.32)
    '2.0 min'
    >>> time_to_cell([run((1.5, 10), (1.3, 100)), run((1.4, 140))], 1.32), time_to_cell([run((1.4, 1))], 1.32)
    ('100 s (1 of 2 seeds)', 'not reached')
    """
    reached = [run for run in group if any(loss <= target for _, loss in run["evals"])]
    times = [time_to_loss(run, target) for run in reached]
    if None in times:
        return "-"  # reached at an evaluation whose time is not known (an older log)
    if not times:
        return "not reached"
    cell = _time(sum(times) / len(times))
    return cell if len(times) == len(group) else f"{cell} ({len(times)} of {len(group)} seeds)"


# -----------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=["runs/*/log.jsonl"],
                        help="globs of run logs; rows and colours follow the globs' order, then the order the "
                             "runs were made (default: runs/*/log.jsonl)")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="the figure's name for each recipe, in the rows' order (default: the name its seeds "
                             "share, else its preset and the flags it changes)")
    parser.add_argument("--out", default="runs/figure.png", help="PNG to write (default: %(default)s)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--table", action="store_true",
                      help="print the ladder as a Markdown table (runs made with --preset) instead of drawing")
    what.add_argument("--ablation", action="store_true",
                      help="print one Markdown row per recipe (its seeds: mean ± spread) instead of drawing")
    parser.add_argument("--target", type=float, default=None,
                        help="with --ablation, add the time to this val loss (default: the study's step-6 "
                             "result, 1.3206; 0 leaves the column out)")
    args = parser.parse_args(argv)

    # Rows and colours: one glob after another, and within a glob the order the runs were made, oldest
    # first. Runs made at once (make ablate JOBS=...) start in any order, so make ablate gives a glob a row.
    runs, seen = [], set()
    for pattern in args.runs:
        matched = sorted(glob.glob(pattern))
        if not matched:
            sys.exit(f"error: no log matches --runs {pattern!r}; train a run first (python train.py) "
                     "or pass the glob of your logs.")
        paths = [p for p in matched if p not in seen]  # a log two globs match keeps the first one's place
        seen.update(paths)
        try:
            logs = [read_log(p) for p in paths]
        except (OSError, ValueError) as e:
            sys.exit(f"error: {e}")
        runs += sorted(logs, key=lambda r: r["config"].get("time", 0))

    import train  # the study's presets (train.PRESETS) and the flags' defaults
    if args.table:
        table = ladder_table(runs, train.PRESETS)
        if table is None:
            sys.exit(f"error: none of the {len(runs)} runs matching {' '.join(args.runs)!r} was made with "
                     "--preset; run `make ladder` first.")
        print(table)
        return
    empty = [r["name"] for r in runs if not r["evals"]]
    runs = [r for r in runs if r["evals"]]
    if empty:
        print(f"skipping {len(empty)} run(s) with no evaluation yet: {', '.join(empty)}", file=sys.stderr)
    if not runs:
        sys.exit("error: no run has an evaluation to plot yet.")
    defaults = train.defaults()
    groups = group_runs(runs, defaults)  # a setting newer than a log: its default
    labels = [group[0]["name"] for group in groups]  # a run alone keeps its own name
    if args.ablation or len(groups) < len(runs):
        names, shared = recipe_labels([g[0]["config"].get("config", {}) for g in groups], train.PRESETS, defaults)
        if args.ablation:
            target = train.PRESETS["step6"]["study_val_loss"] if args.target is None else args.target
            print(ablation_table(groups, names, shared, target))
            return
        # a group of seeds is named by the name its runs share (make ablate's row), else by its recipe
        labels = [label if len(group) == 1 else seeds_name(group) or name
                  for group, label, name in zip(groups, labels, names)]
    if args.labels and len(args.labels) != len(groups):
        sys.exit(f"error: --labels gives {len(args.labels)} names for {len(groups)} recipes; give one a recipe.")
    labels = args.labels or labels
    labels = [label if len(group) == 1 else f"{label} ({len(group)} seeds)" for label, group in zip(labels, groups)]
    import matplotlib
    matplotlib.use("Agg")  # headless: no display needed
    try:
        save_png(figure(groups, labels), args.out)
    except OSError as e:  # a folder that cannot be written: say so, in one line
        sys.exit(f"error: cannot write {args.out} ({e.filename}: {e.strerror}); pass --out with a path you can "
                 "write to")
    print(f"wrote {args.out} ({len(runs)} runs, {len(groups)} recipes)")


if __name__ == "__main__":
    main()
