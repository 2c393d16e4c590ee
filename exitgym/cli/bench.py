"""``exitgym bench --out DIR``: measure every speed claim in one run (see :mod:`exitgym.bench`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from exitgym.bench import __doc__ as bench_doc
    from exitgym.bench import add_arguments

    parser = sub.add_parser(
        "bench", help="benchmark env throughput, FLOPs accuracy and early-exit inference speed",
        description=(bench_doc or "").split("\n\n")[0],
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from exitgym.bench import config_from_args, run_bench
    from exitgym.cli.common import user_errors

    with user_errors():
        run_bench(config_from_args(args))
    return 0
