"""``exitgym prepare``: train exit heads and build per-layer caches (:mod:`exitgym.prepare`)."""

from __future__ import annotations

import argparse

from exitgym.commands._common import user_errors


def register(sub: argparse._SubParsersAction) -> None:
    from exitgym.prepare import add_prepare_parser

    parser = add_prepare_parser(sub)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from exitgym.prepare import run_prepare

    with user_errors("prepare: "):
        return run_prepare(args)
