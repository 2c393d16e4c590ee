"""``exitgym prepare``: train exit heads and build per-layer caches (:mod:`exitgym.data.prepare`).

One option per :class:`~exitgym.data.prepare.PrepareConfig` field, with that field's docstring as
its help, so the CLI and the API never drift apart.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from exitgym.cli.common import add_command, user_errors
from exitgym.data.config import SPLITS
from exitgym.data.prepare import PrepareConfig
from exitgym.utils.configs import option


@dataclass(frozen=True)
class PrepareArgs:
    """Train exit heads and build per-layer caches.

    Heads and caches go to the exitgym cache directory, keyed by fingerprints of what they were
    built from, and are reused when valid; the per-layer accuracy table is printed.
    """

    config: PrepareConfig = field(default_factory=PrepareConfig)
    """What to prepare (task, backbone, heads and how they are trained)."""
    splits: tuple[str, ...] = option(SPLITS, choices=SPLITS)
    """Splits to build caches for."""
    force: bool = False
    """Retrain the heads and rebuild every cache, even valid ones."""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``exitgym prepare`` (one option per :class:`PrepareArgs` field) to a CLI."""
    return add_command(sub, "prepare", run, PrepareArgs)


def run(args: PrepareArgs) -> int:
    """Run :func:`~exitgym.data.prepare.prepare` with the parsed arguments."""
    from exitgym.data.prepare import prepare

    with user_errors():
        prepare(args.config, splits=args.splits, force=args.force)
    return 0
