"""Deploying a trained exit policy at an operating point: a budget, chosen on validation.

A trained exit policy is a curve (:mod:`exitgym.experiments.readings`): read at a threshold ``τ``
on ``P(exit)`` (and, for a cost-conditioned policy, at a cost weight α). A user deploying it asks
for a budget, not a threshold: ``exitgym.infer(run, texts, budget=0.4)``, ``exitgym evaluate RUN
--budget 0.4``. :func:`operating_point` evaluates every reading of the run's policy on the
**validation** split (the ordinary evaluation, the same as ``compare``'s) and keeps the most
accurate one whose validation cost is within the budget (ties: the cheaper); the choice is
recorded in the run's ``operating_points.json`` (atomically, keyed by budget, with the validation
cost and accuracy, the threshold and α, and the date), so a later call, a report or a colleague
reads the same point. ``tau=`` reads the policy at a given threshold instead.

Unlike the budget table, no mixture of two points is deployed: one reading, one policy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exitgym.agents.calibrated import CalibratedExit
from exitgym.experiments.binding import bound_cache
from exitgym.experiments.policies import load_exit_run, open_training_run
from exitgym.experiments.readings import readings, spec_for

OPERATING_FILE = "operating_points.json"
"""Where a run records the operating points chosen for it."""
SELECTION_SPLIT = "validation"
"""The split operating points are chosen on (never the reported one)."""


@dataclass(frozen=True)
class OperatingPoint:
    """A reading of a trained policy chosen for a budget."""

    policy: Any
    """The policy to deploy (a :class:`~exitgym.agents.calibrated.CalibratedExit`)."""
    record: dict[str, Any]
    """``budget``, ``tau``, ``alpha``, ``val_cost``, ``val_accuracy``, ``split``, ``chosen_at``,
    ``readings`` (how many were compared)."""


def operating_point(run_dir: str | Path, budget: float | None = None,
                    tau: float | None = None, num_envs: int = 64) -> OperatingPoint:
    """The run's policy read at ``tau``, or at the validation-best reading within ``budget``.

    Raises:
        ValueError: both or neither of ``budget`` / ``tau``; a budget that is not > 0; a run
            that is not an exit policy; no reading within the budget (the message gives the
            cheapest reachable validation cost).
    """
    if (budget is None) == (tau is None):
        raise ValueError("give exactly one of budget= (chosen on validation) or tau= (a "
                         "threshold on P(exit))")
    policy, spec = load_exit_run(run_dir)
    run = open_training_run(run_dir)
    if tau is not None:
        return OperatingPoint(CalibratedExit(policy, tau), {"tau": float(tau)})
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise ValueError(f"budget must be a FLOPs fraction > 0 (1 = the full model), got "
                         f"{budget!r}")
    recorded = _recorded(run.path).get(f"{float(budget):g}")
    val = spec.with_split(SELECTION_SPLIT)
    cache = bound_cache(run.path, val)
    seed = int(run.config["config"].get("seed", 0))

    def make_env(_: Any) -> Any:
        return val.make(num_envs, cache)

    options = readings(policy, make_env, seed)
    if not options:
        raise ValueError(f"{run.path}: its policy is not a single exit decision; it has no "
                         f"threshold to choose")
    if recorded is not None:  # the same point as before (the choice is deterministic)
        for reading in options:
            if (reading.tau, reading.alpha) == (recorded["tau"], recorded.get("alpha")):
                return OperatingPoint(reading.policy, recorded)
    from exitgym.agents.rollout import evaluate

    scored = []
    for reading in options:
        env = spec_for(val, reading).make(num_envs, cache)
        try:
            result = evaluate(reading.policy, env, seed=seed)
        finally:
            env.close()
        scored.append((reading, result.mean_cost, result.accuracy))
    fits = [s for s in scored if s[1] <= budget + 1e-12]
    if not fits:
        cheapest = min(s[1] for s in scored)
        raise ValueError(f"no reading of {run.path} meets budget {budget:g} on "
                         f"{SELECTION_SPLIT}: its cheapest costs {cheapest:.3f}")
    reading, cost, accuracy = max(fits, key=lambda s: (s[2], -s[1]))
    record = {"budget": float(budget), "tau": reading.tau, "alpha": reading.alpha,
              "val_cost": float(cost), "val_accuracy": float(accuracy),
              "split": SELECTION_SPLIT, "readings": len(scored),
              "chosen_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    table = {**_recorded(run.path), f"{float(budget):g}": record}
    run.write_json(OPERATING_FILE, table)
    return OperatingPoint(reading.policy, record)


def _recorded(path: Path) -> dict[str, Any]:
    file = Path(path) / OPERATING_FILE
    if not file.is_file():
        return {}
    import json

    return json.loads(file.read_text())


__all__ = ["OPERATING_FILE", "OperatingPoint", "operating_point"]
