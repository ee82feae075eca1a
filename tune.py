"""
tune.py (off the reading path): search nanorun's recipe with Optuna (Akiba et al. 2019), one train.run() per trial;
the sampler is TPE (Bergstra et al. 2011), seeded. Trial 0 of a new study is train.py's untuned recipe (defaults,
or the --preset), so the table shows what tuning gained.

Searched, in ranges that are a guess, each widened to hold the untuned value: lr 1e-4..1e-2 log (with --opt sgd
1e-3..1 log; never below --min_lr), dropout 0..0.3, block_size 32/64/128, warmup_ratio 0..0.2, weight_decay
0..0.1; rho with --opt sam 0.01..0.3 log, with --opt asam 0.1..3 log (ASAM's rho is relative to |w|: Kwon et al.
2021 use 0.5). Every train.py flag passes through and is held fixed, a searched one too (--block_size 64).

    python tune.py --trials 30                                  # runs/tune.db, study "tune-asam"
    python tune.py --trials 30 --opt adamw --epochs 2 --num_titles 20000
    python tune.py --trials 30 --preset step6 --pruner hyperband --study small

The pruner stops a trial that is behind the others at the same evaluation; a diverged trial is pruned, a crashed
one is recorded as failed and the study goes on. Trial N's run is runs/<study>-tN; the same command resumes it.

Storage (--storage; each worker runs --trials trials): sqlite:///FILE (default runs/tune.db) for one process
(SQLite locks the whole file per write);
a journal file path for processes on one machine, each with its own --sampler_seed, e.g. in two terminals:
      python tune.py --storage runs/tune.log --study s1 --trials 15 --sampler_seed 1   # and --sampler_seed 2
postgresql://user:password@host/db (pip install psycopg2-binary) or mysql+pymysql://... (pip install pymysql):
many machines, one database server, the same command on every machine.
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
from common import ConfigError, seconds, typed_flags

# -----------------------------------------------------------------------------
# the search space (the docstring, so --help, lists its ranges), and the objective: one trial = one training run

SPACE = {
    "lr": ("log", 1e-4, 1e-2),             # AdamW, SAM/ASAM and Muon (which matches AdamW's update size)
    "dropout": ("float", 0.0, 0.3),
    "block_size": ("choice", [32, 64, 128]),
    "warmup_ratio": ("float", 0.0, 0.2),
    "weight_decay": ("float", 0.0, 0.1),
}
SGD_LR = ("log", 1e-3, 1.0)               # plain SGD needs a far larger step than Adam-style optimizers
RHO = {"sam": ("log", 0.01, 0.3), "asam": ("log", 0.1, 3.0)}
FREE = (train.RESUME_MAY_CHANGE - {"data", "max_steps"}) | {"amp"}  # settings that leave what a run learns


def search_space(cfg, fixed):
    """The ranges to search for resolved train config `cfg`, minus `fixed`, widened to hold cfg's values (trial 0).
    >>> search_space(dict(train.defaults(), opt="adamw"), {"lr", "block_size"})
    {'dropout': ('float', 0.0, 0.3), 'warmup_ratio': ('float', 0.0, 0.2), 'weight_decay': ('float', 0.0, 0.1)}
    """
    kind, lo, hi = SGD_LR if cfg["opt"] == "sgd" else SPACE["lr"]
    space = dict(SPACE, lr=(kind, max(lo, cfg["min_lr"]), hi))  # the schedule decays to min_lr: never below it
    if cfg["opt"] in RHO:
        space["rho"] = RHO[cfg["opt"]]
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


def objective(trial, explicit, space, study_name, out_dir, bad_input):
    """Train with the trial's settings; return the final val loss (nats per character)."""
    params = {name: trial.suggest_categorical(name, r[0]) if kind == "choice"
              else trial.suggest_float(name, r[0], r[1], log=(kind == "log"))
              for name, (kind, *r) in space.items()}
    name = f"{study_name}-t{trial.number}"
    trial.set_user_attr("run", os.path.join(out_dir, name))
    evals = []  # reported by evaluation index, not step: another block size takes other steps per epoch

    def report(step, val_loss):  # True stops the run: the pruner found it behind the others
        trial.report(val_loss, len(evals))
        evals.append(val_loss)
        return trial.should_prune()

    try:
        result = train.run(callback=report, **{"sample": 0, **explicit, **params, "name": name})
    except train.Diverged as e:
        raise optuna.TrialPruned(f"diverged: {e}") from None
    except ConfigError as e:  # bad input will not get better in the next trial: stop the study
        bad_input.append(e)
        trial.study.stop()
        return math.nan  # a failed trial, without a traceback from Optuna: main() prints the sentence
    finally:  # a 30-trial study must not hold 30 models (and their compiled graphs)
        gc.collect()
        torch.compiler.reset()
        torch.cuda.empty_cache()  # a no-op where CUDA was never used
    if result["status"] == "stopped":
        raise optuna.TrialPruned(f"val loss {result['last_val_loss']:.4f} at step {result['steps']} is behind "
                                 "the other trials")
    if result["status"] != "done":  # Ctrl-C: train.py saved the run; the trial ends here
        raise KeyboardInterrupt
    trial.set_user_attr("time_s", result["time_s"])
    return result["final_val_loss"]


# -----------------------------------------------------------------------------
# storage, study and the closing report

def open_study(url, study_name, pruner, sampler_seed, space, fingerprint, baseline, first_run):
    """Create or load study `study_name` in storage `url` (a URL or a journal file path), check it against
    `fingerprint` (the train settings that change what a run learns), and return (study, created, trials it
    had). A new study queues `baseline` (None: none) as trial 0. Every failure is a one-sentence ConfigError."""
    shown = without_password(url)
    try:
        if "://" not in url:  # a journal file: several processes on one machine
            os.makedirs(os.path.dirname(os.path.abspath(url)), exist_ok=True)
            lock = optuna.storages.journal.JournalFileOpenLock(url + ".lock")  # O_EXCL: any OS, unlike a symlink
            storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url, lock_obj=lock))
        else:
            db, engine_kwargs = url, None
            if url.startswith("postgresql://"):  # SQLAlchemy 2.1 reads this as psycopg 3; we install psycopg2
                db = "postgresql+psycopg2://" + url[len("postgresql://"):]
            if url.startswith("sqlite:///"):
                os.makedirs(os.path.dirname(url[len("sqlite:///"):]) or ".", exist_ok=True)
                engine_kwargs = {"connect_args": {"timeout": 60}}  # wait for another writer, not "database is locked"
            for attempt in range(5):  # workers started at once on an empty database race to make its tables
                try:
                    storage = optuna.storages.RDBStorage(db, engine_kwargs=engine_kwargs)
                    break
                except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):  # a loser retries
                    if attempt == 4:
                        raise
                    time.sleep(random.random())  # a random pause, so the retries do not collide again
    except ImportError:
        raise ConfigError(f"no database client for {shown.split('://')[0]}:// storages; install it (pip install "
                          "psycopg2-binary for postgresql://, pip install pymysql for mysql+pymysql://)") from None
    except (sqlalchemy.exc.ArgumentError, ValueError):  # NoSuchModuleError (foo://) is an ArgumentError
        raise ConfigError(f"--storage {shown} is not a storage tune.py can open; pass sqlite:///FILE, "
                          "postgresql://USER:PASSWORD@HOST/DB, mysql+pymysql://USER:PASSWORD@HOST/DB or a "
                          "journal file path") from None
    except sqlalchemy.exc.DBAPIError as e:  # server down; wrong host, port or password
        raise ConfigError(f"cannot open --storage {shown}: {str(e.orig).strip().splitlines()[0]}") from None
    except OSError as e:  # a folder that cannot be made, a journal file that cannot be written
        raise ConfigError(f"cannot open --storage {shown}: {e.strerror}") from None

    try:  # creating a study is atomic in every storage: of several workers started at once, one wins
        study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize", pruner=pruner,
                                    sampler=optuna.samplers.TPESampler(seed=sampler_seed))
        created, trials = True, []
    except optuna.exceptions.DuplicatedStudyError:
        # The creator saves its config, then queues the baseline (or starts a trial): a worker that finds a trial
        # finds the config, and runs no trial before the baseline. None in 10 s: made outside tune.py, or stopped.
        study, created = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner), False
        deadline = time.monotonic() + 10
        while not (trials := study.get_trials(deepcopy=False)) and time.monotonic() < deadline:
            time.sleep(0.2)
        study.sampler = optuna.samplers.TPESampler(seed=sampler_seed + len(trials))  # not its first points again
    saved = study.user_attrs.get("train_config")  # None: a new study, or one made outside tune.py
    if saved is not None and saved != fingerprint:
        k = next(k for k in sorted(set(saved) | set(fingerprint)) if saved.get(k, "?") != fingerprint.get(k, "?"))
        was, now = (f"{k}={d[k]!r}" if k in d else f"{k} searched" for d in (saved, fingerprint))
        raise ConfigError(f"study {study_name!r} in {shown} was run with {was}, not {now}; pass the same flags "
                          "to resume it, or name a new study with --study")
    if not trials and os.path.exists(first_run):
        if created:  # leave no empty study behind: once the runs are moved, the same command starts afresh
            optuna.delete_study(study_name=study_name, storage=storage)
        raise ConfigError(f"{first_run} exists but study {study_name!r} in {shown} has no trials; it is left from "
                          "another storage: name a new study with --study, or move those runs away")
    if saved is None:  # this worker's flags become the study's config
        study.set_user_attr("space", {k: list(v) for k, v in space.items()})
        study.set_user_attr("train_config", fingerprint)
    if created and baseline is not None:  # after the config (see above): one baseline trial, trial 0
        study.enqueue_trial(baseline, user_attrs={"baseline": True})
    return study, created, len(trials)


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
        lines.append(f"| {t.number}{tag} | {t.value:.4f} | " + " | ".join(cells) + " | "
                     f"{seconds(t.user_attrs.get('time_s'))} | {t.user_attrs.get('run', '-')} |")
    base = [t for t in done if t.user_attrs.get("baseline")]
    if base:
        lines += ["", f"untuned recipe (trial {base[0].number}): {base[0].value:.4f}; "
                      f"best (trial {done[0].number}): {done[0].value:.4f} nats/char"]
    lines += ["", "repeat the best trial:", "  " + train_command(explicit, done[0].params)]
    return "\n".join(lines)


# -----------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Every other flag is a train.py flag (python train.py --help).",
                                     allow_abbrev=False)  # --sample is train.py's flag, not a start of --sampler_seed
    parser.add_argument("--trials", type=int, default=30, help="trials this command runs (default: %(default)s)")
    parser.add_argument("--storage", default=None, help="Optuna storage URL, or a journal file path for several "
                        "workers on one machine (default: sqlite:///<out_dir>/tune.db)")
    parser.add_argument("--study", default=None, help="study name; reuse it to resume (default: tune-<opt>)")
    parser.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"],
                        help="how hopeless trials are stopped early (default: %(default)s)")
    parser.add_argument("--prune_after", type=int, default=5,
                        help="the median pruner waits for this many finished trials (default: %(default)s)")
    parser.add_argument("--sampler_seed", "--sampler-seed", type=int, default=1337,
                        help="TPE sampler seed; one per worker, or they draw the same trials (default: %(default)s)")
    parser.add_argument("--timeout", type=float, help="start no trial after this many seconds (default: none)")
    parser.add_argument("--baseline", default=True, action=argparse.BooleanOptionalAction,
                        help="trial 0 of a new study is the untuned recipe (default: %(default)s)")
    args, rest = parser.parse_known_args(argv)
    train_parser = train.build_parser()
    train_parser.usage = "tune.py [tune.py flags] [train.py flags] (see python train.py --help)"
    explicit = typed_flags(train_parser, rest)  # the train.py flags typed: these are held fixed
    try:  # every bad flag, storage or study fails here, before any trial starts
        if args.trials < 1 or args.prune_after < 0:
            raise ConfigError("--trials must be at least 1 and --prune_after at least 0")
        for key in ("name", "resume"):
            if key in explicit:
                raise ConfigError(f"tune.py names every trial's run <study>-t<number> itself; drop --{key}")
        cfg = train.resolve_config(explicit)
        space = search_space(cfg, set(explicit))
        if not space:
            raise ConfigError("every searched setting is fixed by a flag; drop one of --"
                              + ", --".join(search_space(cfg, set())))
        study_name = args.study or f"tune-{cfg['opt']}"
        url = args.storage or f"sqlite:///{cfg['out_dir']}/tune.db"
        fingerprint = {k: v for k, v in sorted(cfg.items()) if k not in FREE and k not in space}
        baseline = {k: baseline_value(cfg, k) for k in space} if args.baseline else None
        # the pruners' resources are evaluation indices, 0 being the untrained model (never pruned)
        pruner = {"median": optuna.pruners.MedianPruner(n_startup_trials=args.prune_after, n_warmup_steps=1),
                  "hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=train.n_evals(cfg)),
                  "none": optuna.pruners.NopPruner()}[args.pruner]
        study, created, n_trials = open_study(url, study_name, pruner, args.sampler_seed, space, fingerprint,
                                              baseline, first_run=os.path.join(cfg["out_dir"], f"{study_name}-t0"))
    except ConfigError as e:
        sys.exit(f"error: {e}")
    print(f"study {study_name} in {without_password(url)} ({'new' if created else f'{n_trials} trials so far'}); "
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
