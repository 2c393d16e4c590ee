"""What ``exitgym bench`` measures (:class:`BenchConfig`) and the constants of its output.

Kept apart from the suite (:mod:`exitgym.bench`) so that the measuring modules import the config
without importing the suite that imports them.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA = "exitgym-bench/1"
"""``bench.json["schema"]``; bumped only if an existing key changes meaning."""
GOALS = {"batch1": 0.8, "batched": 0.6}
"""Fraction of the FLOPs speed-up that wall-clock time must realise (issue 8)."""


@dataclass(frozen=True)
class BenchConfig:
    """What ``exitgym bench`` measures (flags map one to one onto these fields)."""

    out: str = "runs/bench"
    """Output directory for ``bench.json``, ``bench.md`` and the benchmark's training run."""
    task: str = "rt-polarity"
    """Task whose prepared heads and cache the inference benchmark uses."""
    backbone: str = "minilm-l6"
    """Backbone of the inference benchmark (live, layer by layer)."""
    run: str | None = None
    """A trained ``exitgym train`` run to deploy; None trains one (and times it)."""
    reward: str = "vanilla"
    """Reward of the policies trained when ``run`` is None."""
    alphas: tuple[float, ...] = (0.01, 0.2)
    """Cost weights of those policies, one run each: on the frozen MiniLM heads 0.01 exits at
    mixed layers (mean about 5 of 6) and 0.2 always at layer 1 (the cheapest possible policy)."""
    train_steps: int = 150
    """REINFORCE updates of each policy."""
    num_texts: int = 200
    """Validation texts timed in each inference mode."""
    batch_size: int = 32
    """Batch size of the batched (compaction) mode."""
    repeats: int = 5
    """Timed repetitions per chunk of texts (best-of, back to back with the full-depth
    baseline)."""
    threads: int = 1
    """torch threads (1: stable numbers on a shared machine, and the usual batch-1 serving)."""
    env_seconds: float = 1.0
    """Wall time per env-throughput measurement."""
    flops_lengths: tuple[int, ...] = (16, 64, 128)
    """Sequence lengths of the FLOPs check."""
    prepare_fresh_rows: int = 300
    """Rows per split of the from-scratch ``prepare`` (0 skips it)."""
    quick: bool = False
    """Tiny sizes everywhere (tests of the benchmark itself); numbers are not meaningful."""
