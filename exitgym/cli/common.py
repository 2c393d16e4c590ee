"""Helpers shared by the subcommands: list flags and turning library errors into CLI errors."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from exitgym.cli import CliError

T = TypeVar("T")


def parse_list(value: str, kind: Callable[[str], T], flag: str,
               allowed: Sequence[Any] | None = None) -> tuple[T, ...]:
    """``"a,b,c"`` -> a tuple, with an error naming the flag and the allowed values."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise CliError(f"{flag} needs at least one value (comma-separated)")
    out = []
    for item in items:
        try:
            parsed = kind(item)
        except ValueError as err:
            raise CliError(f"{flag}: {item!r} is not a valid {kind.__name__}") from err
        if allowed is not None and parsed not in allowed:
            names = ", ".join(map(str, allowed))
            raise CliError(f"{flag}: unknown value {item!r}; allowed: {names}")
        out.append(parsed)
    return tuple(out)


def choice(value: str, flag: str, allowed: Sequence[str]) -> str:
    """Check one value against a registry, naming the flag and the allowed values."""
    if value not in allowed:
        raise CliError(f"{flag}: unknown value {value!r}; allowed: {', '.join(sorted(allowed))}")
    return value


@contextmanager
def user_errors(context: str = "") -> Iterator[None]:
    """Re-raise errors caused by bad input (bad names, missing runs) as :class:`CliError`.

    ``exitgym.cli.main`` already prefixes the message with ``exitgym <command>: error:``, so
    ``context`` is only for extra detail.
    """
    from exitgym.experiments.runs import RunError

    try:
        yield
    except CliError:
        raise
    except (ValueError, KeyError, RunError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise CliError(f"{context}{message}") from err


def add_cache_options(parser: argparse.ArgumentParser) -> None:
    """--task / --backbone / --heads / --max-samples / --max-length (what the cache is made of)."""
    parser.add_argument("--task", default="rt-polarity",
                        help="task registry name or local CSV/JSONL/Parquet file "
                             "(default: rt-polarity)")
    parser.add_argument("--backbone", default="minilm-l6",
                        help="backbone short name or local model directory (default: minilm-l6)")
    parser.add_argument("--heads", default="frozen", choices=("frozen", "finetune"),
                        help="prepared exit heads (default: frozen)")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="keep the first n rows of every split (quick runs)")
    parser.add_argument("--max-length", type=int, default=128,
                        help="tokenizer truncation length (default: 128)")
