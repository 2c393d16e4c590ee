"""``exitgym bench --out DIR``: measure every speed claim in one run (see :mod:`exitgym.bench`)."""

from __future__ import annotations

import argparse

from exitgym.bench.config import BenchConfig
from exitgym.cli.common import add_command, user_errors


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from exitgym.bench import __doc__ as bench_doc

    return add_command(
        sub, "bench", run, BenchConfig,
        help="Benchmark env throughput, FLOPs accuracy and early-exit inference speed.",
        description=(bench_doc or "").split("\n\n")[0])


def run(cfg: BenchConfig) -> int:
    from exitgym.bench import run_bench

    with user_errors():
        run_bench(cfg)
    return 0
