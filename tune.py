"""
tune.py: search nanorun's training recipe with Optuna (Akiba et al. 2019), one train.run() per trial.

Searched: lr (log scale), dropout, block_size, warmup_ratio, weight_decay and, with --opt sam/asam,
rho. The sampler is TPE (Bergstra et al. 2011), seeded. Every train.py flag passes through and is held
fixed; a searched setting given as a flag (--block_size 64) is held fixed too. Trial 0 of a new study
is train.py's untuned recipe (defaults, or the --preset), so the table shows what tuning gained.

    python tune.py --trials 30                                  # runs/tune.db, study "tune-asam"
    python tune.py --trials 30 --opt adamw --epochs 2 --num_titles 20000
    python tune.py --trials 30 --preset step6 --pruner hyperband --study small

Every evaluation reports its val loss to the trial; the pruner stops a trial that is behind the others
at the same evaluation (median of earlier trials, or Hyperband). A trial whose loss diverges is pruned;
a trial that crashes is recorded as failed and the study goes on. Trial N's run is runs/<study>-tN.
Running the same command again resumes the study and adds --trials more trials.

Storage, and several workers on one study:
- default sqlite:///runs/tune.db: one process at a time. SQLite locks the whole file for every write;
  a busy timeout rides out a short overlap, not a crowd.
- several processes on one machine: Optuna's journal file (a file path instead of a URL). Start the
  same command once per worker, each with its own --sampler_seed (the same seed would propose the
  same first trials), e.g. in two terminals:
      python tune.py --storage runs/tune.log --study s1 --trials 15 --sampler_seed 1
      python tune.py --storage runs/tune.log --study s1 --trials 15 --sampler_seed 2
- many machines: a database server, --storage postgresql://user:password@host/db (pip install
  psycopg2-binary) or mysql+pymysql://..., and the same commands on every machine.
Each worker runs --trials trials; trial numbers are unique across workers.
"""

import argparse
import gc
import math
import os
import random
import re
import shlex
import sys
import time

import optuna
import sqlalchemy.exc
import torch

import optim
import train

# -----------------------------------------------------------------------------
# the search space: wide ranges around the study's values (a guess, not a tuned choice)

SPACE = {
    "lr": ("log", 1e-4, 1e-2),             # AdamW, SAM/ASAM and Muon (which matches AdamW's update size)
    "dropout": ("float", 0.0, 0.3),
    "block_size": ("choice", [32, 64, 128]),
    "warmup_ratio": ("float", 0.0, 0.2),
    "weight_decay": ("float", 0.0, 0.1),
}
SGD_LR = ("log", 1e-3, 1.0)               # plain SGD needs a far larger step than Adam-style optimizers
RHO = {"sam": ("log", 0.01, 0.3), "asam": ("log", 0.1, 3.0)}  # ASAM's rho is relative to |w|: ~10x SAM's
# settings that do not change what a run learns: they may differ between workers of one study
FREE = (train.RESUME_MAY_CHANGE - {"data"}) | {"amp"}


def search_space(cfg, fixed):
    """The ranges to search for a resolved train config `cfg`, minus the settings in `fixed`.

    Each range is widened to hold cfg's own value, so the untuned recipe can be trial 0.
    >>> search_space(dict(train.defaults(), opt="adamw"), {"lr", "block_size"})
    {'dropout': ('float', 0.0, 0.3), 'warmup_ratio': ('float', 0.0, 0.2), 'weight_decay': ('float', 0.0, 0.1)}
    """
    space = dict(SPACE, lr=SGD_LR if cfg["opt"] == "sgd" else SPACE["lr"])
    if cfg["opt"] in RHO:
        space["rho"] = RHO[cfg["opt"]]
    # the schedule decays to min_lr, so the lr may not go below it (train.py refuses lr < min_lr)
    kind, lo, hi = space["lr"]
    space["lr"] = (kind, max(lo, cfg["min_lr"]), hi)
    for name, (kind, *r) in list(space.items()):
        v = baseline_value(cfg, name)
        if kind == "choice":
            space[name] = (kind, sorted(set(r[0]) | {v}))
        else:
            space[name] = (kind, min(r[0], v), max(r[1], v))
    return {k: v for k, v in space.items() if k not in fixed}


def baseline_value(cfg, name):
    """cfg's value of a searched setting; rho None means the optimizer's own default."""
    if name == "rho" and cfg["rho"] is None:
        return optim.ASAM_RHO if cfg["opt"] == "asam" else optim.SAM_RHO
    return cfg[name]


def suggest(trial, space):
    """One point of the search space, drawn by the study's sampler."""
    params = {}
    for name, (kind, *r) in space.items():
        if kind == "choice":
            params[name] = trial.suggest_categorical(name, r[0])
        else:
            params[name] = trial.suggest_float(name, r[0], r[1], log=(kind == "log"))
    return params


# -----------------------------------------------------------------------------
# one trial = one training run


def objective(trial, explicit, space, study_name, out_dir, bad_input):
    """Train with the trial's settings; return the final val loss (nats per character)."""
    params = suggest(trial, space)
    name = f"{study_name}-t{trial.number}"
    trial.set_user_attr("run", os.path.join(out_dir, name))
    n_evals = 0

    def report(step, val_loss):
        """Tell the trial; True (stop the run) when the pruner finds it behind the others."""
        nonlocal n_evals
        # Trials with another block size take another number of steps per epoch, so trials are
        # compared at the same evaluation (the same fraction of training), not at the same step.
        trial.report(val_loss, n_evals)
        n_evals += 1
        return trial.should_prune()

    try:
        result = train.run(callback=report, **{"sample": 0, **explicit, **params, "name": name})
    except train.Diverged as e:
        raise optuna.TrialPruned(f"diverged: {e}") from None
    except train.ConfigError as e:  # bad input will not get better in the next trial: stop the study
        bad_input.append(e)
        trial.study.stop()
        raise
    finally:
        # a 30-trial study must not hold 30 models: free this one (and its compiled graphs) now
        gc.collect()
        torch.compiler.reset()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if result["status"] == "stopped":
        raise optuna.TrialPruned(f"val loss {result['last_val_loss']:.4f} at step {result['steps']} is behind "
                                 "the other trials")
    if result["status"] != "done":  # Ctrl-C: train.py saved the run; the trial ends here
        raise KeyboardInterrupt
    trial.set_user_attr("time_s", result["time_s"])
    return result["final_val_loss"]


# -----------------------------------------------------------------------------
# storage, study and the closing report


def open_storage(storage):
    """An Optuna storage: a URL (sqlite:///..., postgresql://...) or a journal file path."""
    if "://" not in storage:
        os.makedirs(os.path.dirname(os.path.abspath(storage)), exist_ok=True)
        # JournalFileOpenLock takes an exclusive open(O_CREAT | O_EXCL) of a lock file: it works on
        # every OS and file system, where the default symlink lock does not (Windows)
        lock = optuna.storages.journal.JournalFileOpenLock(storage + ".lock")
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage, lock_obj=lock))
    engine_kwargs = None
    if storage.startswith("postgresql://"):
        # SQLAlchemy 2.1 reads a bare postgresql:// as the psycopg 3 client; requirements.txt installs
        # psycopg2 (pip install psycopg2-binary), so name that driver
        storage = "postgresql+psycopg2://" + storage[len("postgresql://"):]
    if storage.startswith("sqlite:///"):
        folder = os.path.dirname(storage[len("sqlite:///"):])
        if folder:
            os.makedirs(folder, exist_ok=True)
        # wait up to a minute for another writer's lock instead of failing with "database is locked"
        engine_kwargs = {"connect_args": {"timeout": 60}}
    # Workers started at once on an empty database all create Optuna's tables: on PostgreSQL each
    # checks that a table is missing, then creates it, and all but one fail with a duplicate key.
    # Once the first has committed, the tables exist and a second try only reads them.
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(random.random())  # a random pause, so the retries do not collide again


def wait_for_first_trial(study, seconds=10):
    """The study's trials, once it has one; waits at most `seconds` for another worker's first trial.

    The worker that creates a study saves its train config first, then queues the baseline trial (or,
    with --no-baseline, starts a trial): a worker that finds a trial finds the config to check its flags
    against, and runs no trial before the baseline. No trial after the wait: the study was made outside
    tune.py, or its creator stopped early.
    """
    deadline = time.monotonic() + seconds
    trials = study.get_trials(deepcopy=False)
    while not trials and time.monotonic() < deadline:
        time.sleep(0.2)
        trials = study.get_trials(deepcopy=False)
    return trials


def make_pruner(name, max_evals, prune_after):
    """The pruner; resources are evaluation indices, 0 being the untrained model (never pruned)."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=prune_after, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_evals, reduction_factor=3)
    return optuna.pruners.NopPruner()


def without_password(url):
    """The storage URL as printed: a database password stays off the screen and out of logs.

    >>> without_password("postgresql://ann:secret@db.example:5432/tune")
    'postgresql://ann:***@db.example:5432/tune'
    """
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def train_command(explicit, params):
    """The train.py command line that repeats a trial.

    >>> train_command({"opt": "asam", "compile": False}, {"lr": 0.00123})
    'python train.py --opt asam --no-compile --lr 0.00123'
    """
    args = []
    for k, v in {**explicit, **params}.items():
        if isinstance(v, bool):
            args.append(f"--{k}" if v else f"--no-{k}")
        elif v is not None:
            args += [f"--{k}", str(v)]  # str(float) is the shortest text that reads back exactly
    return shlex.join(["python", "train.py", *args])


def report_table(study, explicit, top=10):
    """The best trials as a Markdown table, the counts, and the command that repeats the best."""
    trials = study.get_trials(deepcopy=False)
    S = optuna.trial.TrialState
    done = sorted((t for t in trials if t.state == S.COMPLETE), key=lambda t: t.value)
    counts = ", ".join(f"{sum(t.state == state for t in trials)} {state.name.lower()}"
                       for state in (S.COMPLETE, S.PRUNED, S.FAIL))
    lines = [f"study {study.study_name}: {len(trials)} trials, {counts}"]
    if not done:
        return "\n".join(lines + ["no trial has finished yet"])
    names = sorted({k for t in done for k in t.params})
    lines += ["", "| trial | val loss | " + " | ".join(names) + " | time | run |",
              "|---|---|" + "---|" * len(names) + "---|---|"]
    for t in done[:top]:
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in (t.params.get(k, "-") for k in names)]
        tag = " (untuned)" if t.user_attrs.get("baseline") else ""
        s = t.user_attrs.get("time_s", math.nan)
        time = f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"
        lines.append(f"| {t.number}{tag} | {t.value:.4f} | " + " | ".join(cells) + f" | {time} | "
                     f"{t.user_attrs.get('run', '-')} |")
    base = [t for t in done if t.user_attrs.get("baseline")]
    if base:
        lines += ["", f"untuned recipe (trial {base[0].number}): {base[0].value:.4f}; "
                      f"best (trial {done[0].number}): {done[0].value:.4f} nats/char"]
    lines += ["", "repeat the best trial:", "  " + train_command(explicit, done[0].params)]
    return "\n".join(lines)


# -----------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Every other flag is a train.py flag (python train.py --help).")
    parser.add_argument("--trials", type=int, default=30, help="trials this command runs (default: %(default)s)")
    parser.add_argument("--storage", default=None, help="Optuna storage URL, or a journal file path for several "
                        "workers on one machine (default: sqlite:///<out_dir>/tune.db)")
    parser.add_argument("--study", default=None, help="study name; reuse it to resume (default: tune-<opt>)")
    parser.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"],
                        help="how hopeless trials are stopped early (default: %(default)s)")
    parser.add_argument("--prune_after", type=int, default=5,
                        help="the median pruner waits for this many finished trials (default: %(default)s)")
    parser.add_argument("--sampler_seed", "--sampler-seed", type=int, default=1337,
                        help="TPE sampler seed; give each worker its own (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop starting new trials after this many seconds (default: none)")
    parser.add_argument("--baseline", default=True, action=argparse.BooleanOptionalAction,
                        help="trial 0 of a new study is the untuned recipe (default: %(default)s)")
    args, rest = parser.parse_known_args(argv)
    if args.trials < 1 or args.prune_after < 0:
        sys.exit("error: --trials must be at least 1 and --prune_after at least 0.")

    # the train.py flags actually typed: argparse fills in a default only where the namespace has
    # no value yet, so a namespace pre-filled with a marker tells typed flags from defaults
    unset = object()
    train_parser = train.build_parser()
    train_parser.usage = "tune.py [tune.py flags] [train.py flags] (see python train.py --help)"
    typed = vars(train_parser.parse_args(rest, argparse.Namespace(**dict.fromkeys(train.defaults(), unset))))
    explicit = {k: v for k, v in typed.items() if v is not unset}
    for key in ("name", "resume"):
        if key in explicit:
            sys.exit(f"error: tune.py names every trial's run <study>-t<number> itself; drop --{key}.")
    try:
        cfg = train.resolve_config(explicit)  # bad flags fail here, before any trial starts
    except train.ConfigError as e:
        sys.exit(f"error: {e}")
    space = search_space(cfg, set(explicit))
    if not space:
        sys.exit("error: every searched setting is fixed by a flag; drop one of --" + ", --".join(SPACE) + ".")
    study_name = args.study or f"tune-{cfg['opt']}"
    url = args.storage or f"sqlite:///{cfg['out_dir']}/tune.db"
    storage_url = without_password(url)  # the URL as printed from here on

    try:
        storage = open_storage(url)
    except ImportError:
        sys.exit(f"error: no database client for {storage_url.split('://')[0]}:// storages; install it "
                 "(pip install psycopg2-binary for postgresql://).")
    except sqlalchemy.exc.OperationalError as e:  # server down, wrong host, port or password
        sys.exit(f"error: cannot open {storage_url}: {str(e.orig).strip().splitlines()[0]}")
    pruner = make_pruner(args.pruner, max(1, round(cfg["epochs"] * cfg["evals_per_epoch"])), args.prune_after)
    fingerprint = {k: v for k, v in sorted(cfg.items()) if k not in FREE and k not in space}
    first_run = os.path.join(cfg["out_dir"], f"{study_name}-t0")
    stale_runs = (f"error: {first_run} exists but study {study_name!r} in {storage_url} has no trials; it is left "
                  "from another storage: name a new study with --study, or move those runs away.")
    try:  # creating a study is atomic in every storage: of several workers started at once, one wins
        study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize", pruner=pruner,
                                    sampler=optuna.samplers.TPESampler(seed=args.sampler_seed))
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        n = len(optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False))
        # seed + trials already made: a resumed study draws new points instead of repeating its first ones
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner,
                                  sampler=optuna.samplers.TPESampler(seed=args.sampler_seed + n))
        created = False
    if created:  # only this worker sets the study up, so there is one baseline trial, and it is trial 0
        if os.path.exists(first_run):
            sys.exit(stale_runs)
        study.set_user_attr("space", {k: list(v) for k, v in space.items()})
        study.set_user_attr("train_config", fingerprint)
        if args.baseline:  # after the config: the other workers wait for a first trial (wait_for_first_trial)
            study.enqueue_trial({k: baseline_value(cfg, k) for k in space}, user_attrs={"baseline": True})
    else:
        trials = wait_for_first_trial(study)
        saved = study.user_attrs.get("train_config")
        if saved is None:  # a study made outside tune.py: this worker's flags become its config
            study.set_user_attr("space", {k: list(v) for k, v in space.items()})
            study.set_user_attr("train_config", fingerprint)
        elif saved != fingerprint:
            k = next(k for k in sorted(set(saved) | set(fingerprint)) if saved.get(k, "?") != fingerprint.get(k, "?"))
            def setting(d):
                return f"{k}={d[k]!r}" if k in d else f"{k} searched"
            sys.exit(f"error: study {study_name!r} in {storage_url} was run with {setting(saved)}, not "
                     f"{setting(fingerprint)}; pass the same flags to resume it, or name a new study with --study.")
        if not trials and os.path.exists(first_run):
            sys.exit(stale_runs)
    print(f"study {study_name} in {storage_url} ({'new' if created else f'{len(trials)} trials so far'}); "
          f"searching {', '.join(space)}; {args.trials} trials, pruner {args.pruner}")

    bad_input = []
    try:
        study.optimize(lambda t: objective(t, explicit, space, study_name, cfg["out_dir"], bad_input),
                       n_trials=args.trials, timeout=args.timeout, catch=(Exception,), gc_after_trial=True)
    except KeyboardInterrupt:
        print("\ninterrupted; the study so far:")
    if bad_input:
        sys.exit(f"error: {bad_input[0]}")
    print(report_table(study, explicit))


if __name__ == "__main__":
    main()
