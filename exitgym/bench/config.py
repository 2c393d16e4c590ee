"""What ``exitgym bench`` measures (:class:`BenchConfig`) and the constants of its output.

Kept apart from the suite (:mod:`exitgym.bench`) so that the measuring modules import the config
without importing the suite that imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exitgym.data.config import DataConfig
from exitgym.utils.configs import option

SCHEMA = "exitgym-bench/1"
"""``bench.json["schema"]``; bumped only if an existing key changes meaning."""
GOALS = {"batch1": 0.8, "batched": 0.6}
"""Fraction of the FLOPs speed-up that wall-clock time must realise (issue 8)."""


@dataclass(frozen=True)
class BenchConfig:
    """What ``exitgym bench`` measures (its flags are generated from these fields)."""

    out: str = "runs/bench"
    """Output directory for ``bench.json``, ``bench.md`` and the benchmark's training run."""
    data: DataConfig = field(default_factory=DataConfig)
    """The task and backbone deployed (live, layer by layer) and their prepared heads."""
    run: str | None = None
    """A trained ``exitgym train`` run to deploy; None trains one (and times it)."""
    reward: str = "vanilla"
    """Reward of the policies trained when ``run`` is None."""
    alphas: tuple[float, ...] = option((0.01, 0.2), minimum=0)
    """Cost weights of those policies, one run each: on the frozen MiniLM heads 0.01 exits at
    mixed layers (mean about 5 of 6) and 0.2 always at layer 1 (the cheapest possible policy)."""
    train_steps: int = option(150, minimum=1)
    """REINFORCE updates of each policy."""
    num_texts: int = option(200, minimum=1)
    """Validation texts timed in each inference mode."""
    batch_size: int = option(32, minimum=1)
    """Batch size of the batched (compaction) mode."""
    repeats: int = option(5, minimum=1)
    """Timed repetitions per chunk of texts (best-of, back to back with the full-depth
    baseline)."""
    threads: int = option(1, minimum=1)
    """torch threads (1: stable numbers on a shared machine, and the usual batch-1 serving)."""
    env_seconds: float = option(1.0, minimum=0)
    """Wall time per env-throughput measurement."""
    flops_lengths: tuple[int, ...] = option((16, 64, 128), minimum=1)
    """Sequence lengths of the FLOPs check."""
    finetune_steps: int = option(20, minimum=1)
    """Training steps timed for exitgym's fine-tuning and for the plain HF step."""
    repeats_finetune: int = option(2, minimum=1)
    """Timed runs of each (best-of)."""
    prepare_fresh_rows: int = option(300, minimum=0)
    """Rows per split of the from-scratch ``prepare`` (0 skips it)."""
    quick: bool = False
    """Tiny sizes everywhere (tests of the benchmark itself); numbers are not meaningful."""
