"""The ``exitgym`` command line: one subcommand per thing users do.

Subcommands are small objects in :data:`COMMANDS` (name -> module path of a ``register(subparsers)``
function), so the CLI module never grows into an if-chain. Every command's flags are generated from
its arguments dataclass (:func:`exitgym.cli.common.add_command`), and a bad flag value fails while
parsing, before any work starts, with exit code 2 and a message naming the flag. Modules are
imported lazily: ``exitgym --help`` and ``exitgym envs`` stay fast and never load torch.

Ctrl-C and SIGTERM (what schedulers and ``kill`` send) end a command the same way: the run being
written records ``interrupted`` and the command prints how to continue; the exit code is 130
after Ctrl-C and 143 after SIGTERM (128 + the signal number, as shells report them).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

COMMANDS: dict[str, str] = {
    "envs": "exitgym.cli.envs",
    "prepare": "exitgym.cli.prepare",
    "train": "exitgym.cli.train",
    "evaluate": "exitgym.cli.evaluate",
    "compare": "exitgym.cli.compare",
    "replay": "exitgym.cli.replay",
    "export": "exitgym.cli.export",
    "demo": "exitgym.cli.demo",
    "bench": "exitgym.cli.bench",
}
"""Subcommand name -> module that defines ``register(subparsers)``; the parser it adds sets
``func`` (a callable taking the parsed args and returning an exit code)."""


INVOCATION: ContextVar[tuple[str, ...]] = ContextVar("exitgym_invocation", default=())
"""The arguments of the running ``exitgym`` command (to print the command that resumes it)."""


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, like Ctrl-C's ``KeyboardInterrupt``.

    Why a ``KeyboardInterrupt``: every run already records ``interrupted`` and cleans up for
    one; before, SIGTERM killed the process outright and left ``"status": "running"``.
    """


def interrupt_code(err: KeyboardInterrupt) -> int:
    """The exit code of an interrupted command: 143 after SIGTERM, 130 after Ctrl-C."""
    return 128 + (signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"terminated by signal {signum}")


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` while a command runs (main thread only: Python
    delivers signals there); the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_parser(names: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with every (or the named) subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="exitgym",
        description="Gymnasium environments over the layers of a pretrained transformer.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in names if names is not None else COMMANDS:
        importlib.import_module(COMMANDS[name]).register(sub)
    return parser


def _load_plugins(argv: Sequence[str], command: str) -> None:
    """Import the ``--import`` modules and load installed plug-ins before the parser is built.

    Why before: flag values are checked against the registries while parsing, so a plug-in's
    reward must be registered by then. An installed plug-in that fails to load is skipped with
    one ``exitgym <command>: warning:`` line: the command may not need it.
    """
    from exitgym.utils.plugins import PluginWarning, import_modules

    modules = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--import"]
    modules += [a.split("=", 1)[1] for a in argv if a.startswith("--import=")]
    if modules:
        import_modules(modules)
    from exitgym.experiments.plugins import load_all_plugins

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PluginWarning)
        load_all_plugins()
    for warning in caught:
        if issubclass(warning.category, PluginWarning):
            print(f"{f'exitgym {command}'.strip()}: warning: {warning.message}",
                  file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename,
                                 warning.lineno)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Register only the chosen subcommand when it is known: keeps start-up light.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    try:
        _load_plugins(argv, chosen or "")
    except ImportError as err:  # a plug-in that cannot be imported: say which, no traceback
        print(f"exitgym {chosen or ''}: error: {err}".replace("  ", " "), file=sys.stderr)
        return 2
    parser = build_parser([chosen] if chosen in COMMANDS else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        if not exit_.code:  # --help
            raise
        return int(exit_.code)  # argparse printed the usage and the error naming the flag
    token = INVOCATION.set(tuple(argv))
    try:
        with _sigterm_interrupts():
            return int(args.func(args) or 0)
    except CliError as err:
        print(f"exitgym {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print("interrupted" + (" (SIGTERM)" if isinstance(err, Terminated) else ""),
              file=sys.stderr)
        return interrupt_code(err)
    finally:
        INVOCATION.reset(token)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
