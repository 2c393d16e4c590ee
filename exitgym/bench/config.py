"""What ``exitgym bench`` measures (:class:`BenchConfig`) and the constants of its output.

Kept apart from the suite (:mod:`exitgym.bench`) so that the measuring modules import the config
without importing the suite that imports them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from exitgym.data.config import DataConfig
from exitgym.utils.configs import option

SCHEMA = "exitgym-bench/1"
"""``bench.json["schema"]``; bumped only if an existing key changes meaning."""
GOALS = {"batch1": 0.8, "batched": 0.6}
"""Fraction of the FLOPs speed-up that wall-clock time must realise (issue 8)."""


def section_names() -> tuple[str, ...]:
    """The sections ``exitgym bench`` measures, in order (what ``--only`` accepts)."""
    return tuple(importlib.import_module("exitgym.bench").SECTIONS)


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
    alphas: tuple[float, ...] = option((0.1,), minimum=0)
    """Cost weights of those policies, one run each. The policy is deployed at its operating
    point (``max_loss``), not greedily, so α only has to give it a useful ranking of inputs:
    0.1 keeps most inputs past layer 4 when read greedily (cost 0.98 on validation), and its
    readings span the whole cost range. (α = 0.3, the old default, read greedily exits every
    test input at layer 1: 0.764 against 0.833 at full depth.)"""
    max_loss: float = option(0.01, minimum=0)
    """Deployed operating points: the cheapest reading (of the trained policy, and of the best
    rule: entropy, max-probability, patience) whose validation accuracy is at most this far below
    full depth's, chosen on validation and reported on ``inference_split``."""
    train_steps: int = option(150, minimum=1)
    """REINFORCE updates of each policy."""
    num_texts: int | None = option(300, minimum=1)
    """Texts of ``inference_split`` timed in each inference mode (its first ones; None: all of
    them). 300 keeps the whole bench under 10 minutes on a 2-core CPU (all 1,006 test texts of
    rt-polarity, timed best of three per mode for a policy and a rule, took about 6 minutes);
    the accuracy columns are then those texts' accuracy."""
    inference_split: str = option("test", choices=("validation", "test"))
    """Split the policies are deployed on (test: the α were chosen on validation)."""
    batch_size: int = option(32, minimum=1)
    """Batch size of the batched (compaction) mode."""
    repeats: int = option(3, minimum=1)
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
    prepare_fresh_rows: int = option(200, minimum=0)
    """Rows per split of the from-scratch ``prepare`` (0 skips it)."""
    generation_run: str | None = None
    """An ``exitgym train --env exitgym/TokenExit-v0`` run whose policy the generation section
    deploys (its decoder and heads; fingerprints checked); None trains one there (REINFORCE,
    ``generation_steps`` updates on the cached env, timed) into ``<out>/generation-run``."""
    generation_target: float = option(0.7, minimum=0)
    """Target cost of the budget-targeted REINFORCE policy the generation section trains."""
    generation_steps: int = option(30, minimum=1)
    """Its REINFORCE updates (16 episodes each, hardness reward, ``depth+hidden+prev`` view)."""
    only: tuple[str, ...] = option((), choices=lambda: section_names())
    """Measure only these sections (``machine`` always; ``inference`` brings ``timings``,
    whose trained runs it deploys). Empty: every section."""
    quick: bool = False
    """Tiny sizes everywhere (tests of the benchmark itself); numbers are not meaningful."""
