"""What a comparison keeps of every evaluated point: the test row (reported), the selection row
(for choosing knobs) and the per-sample test outcomes (for the budget table and the findings).

Shared by the exit comparison (:mod:`exitgym.experiments.compare`) and the skip environments'
(:mod:`exitgym.experiments.skip_compare`), so both select and report every method the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exitgym.experiments.configs import CompareConfig
from exitgym.experiments.env_spec import EnvSpec
from exitgym.reports.budget import Evaluation
from exitgym.reports.comparison import row_from_eval


@dataclass
class Collected:
    """Test rows (reported), selection rows and per-sample outcomes (for the budget table)."""

    rows: list[dict[str, Any]]
    selection_rows: list[dict[str, Any]]
    evaluations: list[Evaluation]


def select_and_collect(config: CompareConfig, out: Path, caches: dict[str, Any],
                       found: Collected, policy: Any, spec: EnvSpec, method: str,
                       knob: float | None, seed: int, test_result: Any,
                       tau: float | None = None, alpha: float | None = None) -> None:
    """Evaluate ``policy`` on the selection split (with the spec's own heads, if any, from
    ``out``); keep both splits' outcomes (``tau`` / ``alpha``: the reading of a trained
    policy)."""
    from exitgym.agents.rollout import evaluate

    env = selection_env(config, out, caches, spec)
    try:
        val = evaluate(policy, env, seed=seed)
    finally:
        env.close()
    found.rows.append(row_from_eval(method, knob, seed, test_result, tau, alpha))
    found.selection_rows.append(row_from_eval(method, knob, seed, val, tau, alpha))
    found.evaluations.append(Evaluation(
        method, knob, seed, val.cost, val.accuracy, test_result.cost,
        test_result.correctness, tau, alpha))


def selection_env(config: CompareConfig, out: Path, caches: dict[str, Any],
                  spec: EnvSpec) -> Any:
    split = config.selection_split
    spec = spec.with_split(split)
    return spec.make(config.num_envs, spec.own_heads(caches[split], out))


__all__ = ["Collected", "select_and_collect", "selection_env"]
