"""``compare`` on the skip environments: learned skip policies against the fixed ones, and against
exiting early on the same heads.

``exitgym compare --env exitgym/SkipBlock-v0`` (or ``SwitchableDecision-v0``) runs the protocol of
:mod:`exitgym.experiments.compare` (knobs chosen on the selection split, reported on test, seeds,
two-level bootstrap CIs, the budget table, categories, curves) with skip methods:

- **learned**: the ``--agent`` (REINFORCE family) per reward and α or target cost, lexicographic
  agents (``--drops``: Switchable Decision's own setting), cost-conditioned agents (read greedily
  at every α of their grid); each greedy (a skip action has no single exit probability to read
  at a threshold, so the calibrated readings of exit policies do not apply);
- **fixed skips** (:mod:`exitgym.agents.skip_baselines`, always): the best static pattern of each
  size chosen on the selection split, every other layer, random skipping at several rates;
- **exit references** (always): static truncation, random exit and the exit rules of ``--rules``
  on ``EarlyExit-v0`` with the *same* prepared heads and backbone, so a row answers "does
  skipping beat exiting at this cost?". Costs are the same fractions of the full model with its
  final head in both environments (``SkipExecutor.cost``, ``LayerCache.cost``).

The findings (:data:`~exitgym.reports.findings.SKIP_FINDINGS`) pair the learned policies with the
best static pattern and random skipping, the lexicographic constraint with a fixed weight, and
the best skip method with the best exit method and static truncation.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from exitgym.agents.registry import lookup, names
from exitgym.agents.skip_baselines import SWITCHABLE_ID, SkipTarget, search_evaluations
from exitgym.experiments.collect import Collected, select_and_collect
from exitgym.experiments.configs import CompareConfig
from exitgym.experiments.env_spec import SKIP_ENVS, EnvSpec
from exitgym.experiments.trajectories import evaluate_and_record

__all__ = ["SKIP_ENVS", "skip_baselines", "skip_readings"]


def skip_readings(config: CompareConfig, out: Path, caches: dict[str, Any], found: Collected,
                  policy: Any, spec: EnvSpec, method: str, knob: float | None, seed: int,
                  name: str, greedy: Any) -> None:
    """A trained skip policy's rows: its greedy evaluation (``greedy``, recorded by its run), or a
    cost-conditioned policy read greedily at every α of its grid (recorded here)."""
    from exitgym.agents.conditioned import CONDITIONED_ALPHAS, ConditionedPolicy

    if not isinstance(policy, ConditionedPolicy):
        select_and_collect(config, out, caches, found, policy, spec, method, knob, seed, greedy)
        return
    lo, hi = policy.config.alpha_range
    for alpha in (a for a in CONDITIONED_ALPHAS if lo <= a <= hi):
        acting = spec.with_kwargs(alpha=alpha)
        fixed = policy.at(alpha)
        result = evaluate_and_record(
            fixed, acting.with_split(config.eval_split), out, f"{name}-a{alpha:.4g}",
            method=method, knob=knob, seed=seed, num_envs=config.num_envs,
            meta={"alpha": alpha, "run": f"runs/{name}"})
        select_and_collect(config, out, caches, found, fixed, acting, method, knob, seed, result,
                           None, alpha)


def _target(config: CompareConfig, spec: EnvSpec) -> SkipTarget:
    """What the fixed baselines act in, with the selection split's world to search patterns on."""
    world = spec.with_split(config.selection_split).make_kwargs().get("world")
    if world is None:
        raise ValueError(f"compare on {config.env} needs an encoder backbone named by --backbone "
                         f"(a short name or local directory), got {spec.backbone!r}; train and "
                         f"evaluate decoder skip policies with exitgym train / evaluate")
    token_entry = config.env == SWITCHABLE_ID and world.token_strategies
    return SkipTarget(config.env, world.num_layers, token_entry, world)


def skip_baselines(config: CompareConfig, out: Path, caches: dict[str, Any], found: Collected,
                   progress: bool, timings: dict[str, float]) -> None:
    """Evaluate every ``skip`` method of the registry (static patterns, every other layer, random
    skipping; the seeded ones once per seed) on the selection and evaluation splits."""
    from tqdm.auto import tqdm

    tic = time.perf_counter()
    spec = config.train_config("vanilla", 0.2, 0).env_spec(config.eval_split).with_kwargs(
        alpha=None)
    target = _target(config, spec)
    jobs = [(n, s) for n in names("skip", plugins=False)
            for s in (config.seeds if lookup(n).seeded else config.seeds[:1])]
    with tqdm(total=search_evaluations(target.num_layers), desc="skip patterns (selection)",
              disable=not progress) as search_bar, \
            tqdm(total=len(jobs), desc="skip baselines", disable=not progress) as bar:
        for name, seed in jobs:
            bar.set_postfix_str(f"{name} seed {seed}")
            sweep = lookup(name, "skip").sweep
            assert sweep is not None
            for policy, knob in sweep(target, seed, search_bar):
                result = evaluate_and_record(
                    policy, spec, out, f"{name}-k{knob:g}-s{seed}", method=name, knob=knob,
                    seed=seed, num_envs=config.num_envs)
                select_and_collect(config, out, caches, found, policy, spec, name, knob, seed,
                                   result)
            bar.update(1)
    timings["skip_baselines"] = time.perf_counter() - tic
