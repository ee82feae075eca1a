"""
common.py: the few small helpers every nanorun script shares (off the reading path).

    raise ConfigError("data file x.txt not found: pass --data FILE")   # bad input: one sentence
    with atomic_file("runs/a/figure.png") as tmp: fig.savefig(tmp)      # all of the file or none of it
    explicit = typed_flags(parser, sys.argv[1:])                        # only the flags that were typed
    seconds(150.0) -> "2.5 min"                                       # durations for people
"""

import argparse
import contextlib
import os


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help adds "(default: X)" to a flag's text, unless the text already says what happens by default."""

    def _get_help_string(self, action):
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class ConfigError(ValueError):
    """Bad input (a file, a flag, a checkpoint): the message is one sentence that says what was wrong
    and what to do. The command-line scripts print it as one line and exit with status 1."""


class Diverged(RuntimeError):
    """The training loss became NaN or infinite (train.py stops the run and says so in one line)."""


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary name beside `path`; when the block ends without an error, rename it to `path`.
    A reader (or a run killed mid-write) sees the old file or the new one, never half of one; the
    temporary file of a failed write is removed."""
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def typed_flags(parser, argv=None):
    """The flags typed on the command line, as {dest: value}, without the defaults argparse fills in.

    argparse sets a default only for an attribute the namespace lacks, so a namespace pre-filled with
    a marker keeps the marker wherever nothing was typed. Typed flags are the ones that may override a
    preset or a checkpoint.

    >>> p = argparse.ArgumentParser(); _ = p.add_argument("--lr", type=float, default=1.0)
    >>> typed_flags(p, []), typed_flags(p, ["--lr", "2"])
    ({}, {'lr': 2.0})
    """
    unset = object()
    ns = parser.parse_args(argv, argparse.Namespace(**{a.dest: unset for a in parser._actions if a.dest != "help"}))
    return {k: v for k, v in vars(ns).items() if v is not unset}


def seconds(t):
    """A duration for people: seconds up to two minutes, then minutes.

    >>> seconds(59.6), seconds(150.0), seconds(None)
    ('60 s', '2.5 min', '-')
    """
    return "-" if t is None else f"{t:.0f} s" if t < 120 else f"{t / 60:.1f} min"
