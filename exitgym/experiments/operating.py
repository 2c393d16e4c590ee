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

from exitgym.experiments.binding import bound_cache
from exitgym.experiments.policies import load_exit_run, open_training_run
from exitgym.experiments.readings import reading, readings, spec_for

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
                    tau: float | None = None, num_envs: int = 64,
                    max_loss: float | None = None) -> OperatingPoint:
    """The run's policy read at ``tau``; at the validation-best reading within ``budget``; or at
    the cheapest reading whose validation accuracy is at most ``max_loss`` below full depth's
    (what the bench deploys: "1 point of accuracy for the most speed").

    Raises:
        ValueError: not exactly one of ``budget`` / ``tau`` / ``max_loss``; a budget that is not
            > 0 or a negative loss; a run that is not an exit policy; no reading within the
            budget (the message gives the cheapest reachable validation cost).
    """
    if sum(x is not None for x in (budget, tau, max_loss)) != 1:
        raise ValueError("give exactly one of budget= (chosen on validation), max_loss= "
                         "(accuracy below full depth, chosen on validation) or tau= (a "
                         "threshold on P(exit))")
    policy, spec = load_exit_run(run_dir)
    run = open_training_run(run_dir)
    if tau is not None:
        return OperatingPoint(reading(policy, tau).policy, {"tau": float(tau)})
    for name, value in (("budget", budget), ("max_loss", max_loss)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not (value > 0 if name == "budget" else value >= 0)):
            raise ValueError(f"{name} must be " + ("a FLOPs fraction > 0 (1 = the full model)"
                                                   if name == "budget" else "an accuracy >= 0")
                             + f", got {value!r}")
    key = f"{float(budget):g}" if budget is not None else f"loss<={float(max_loss):g}"
    table = run.read_json(OPERATING_FILE) if run.file(OPERATING_FILE).is_file() else {}
    if key in table:  # chosen before: deploy the recorded point, nothing is re-evaluated
        recorded = table[key]
        return OperatingPoint(reading(policy, recorded["tau"], recorded.get("alpha")).policy,
                              recorded)
    val = spec.with_split(SELECTION_SPLIT)
    cache = bound_cache(run.path, val)
    seed = int(run.config["config"].get("seed", 0))
    options = readings(policy, lambda _: val.make(num_envs, cache), seed)
    if not options:
        raise ValueError(f"{run.path}: its policy is not a single exit decision; it has no "
                         f"threshold to choose")
    candidates = [(r, spec_for(val, r)) for r in options]
    chosen, record = choose(candidates, cache, num_envs, seed, budget=budget,
                            max_loss=max_loss, what=str(run.path))
    record.update({"tau": chosen.tau, "alpha": chosen.alpha})
    run.write_json(OPERATING_FILE, {**table, key: record})
    return OperatingPoint(chosen.policy, record)


def choose(candidates: list[tuple[Any, Any]], cache: Any, num_envs: int, seed: int, *,
           budget: float | None = None, max_loss: float | None = None,
           what: str = "the method") -> tuple[Any, dict[str, Any]]:
    """Evaluate each ``(candidate, validation spec)`` on ``cache`` (a candidate is a policy or
    has one as ``.policy``) and choose: the most accurate within ``budget``, or the cheapest
    within ``max_loss`` of full depth's accuracy (``cache.correct[:, -1]``).

    Returns:
        ``(candidate, record)`` with ``val_cost``, ``val_accuracy``, ``split``, ``readings``,
        ``chosen_at`` and the criterion.

    Raises:
        ValueError: no candidate meets the criterion (the message gives the closest one).
    """
    from exitgym.agents.rollout import evaluate

    scored = []
    for candidate, spec in candidates:
        env = spec.make(num_envs, cache)
        try:
            result = evaluate(getattr(candidate, "policy", candidate), env, seed=seed)
        finally:
            env.close()
        scored.append((candidate, float(result.cost), float(result.accuracy)))
    full = float(cache.correct[:, -1].mean())
    if budget is not None:
        fits = [s for s in scored if s[1] <= budget + 1e-12]
        if not fits:
            raise ValueError(f"no reading of {what} meets budget {budget:g} on "
                             f"{SELECTION_SPLIT}: its cheapest costs "
                             f"{min(s[1] for s in scored):.3f}")
        pick = max(fits, key=lambda s: (s[2], -s[1]))
        criterion: dict[str, Any] = {"budget": float(budget)}
    else:
        assert max_loss is not None
        fits = [s for s in scored if s[2] >= full - max_loss - 1e-12]
        if not fits:
            raise ValueError(f"no reading of {what} is within {max_loss:g} of full depth's "
                             f"{SELECTION_SPLIT} accuracy {full:.4f}: its best is "
                             f"{max(s[2] for s in scored):.4f}")
        pick = min(fits, key=lambda s: (s[1], -s[2]))
        criterion = {"max_loss": float(max_loss), "full_depth_val_accuracy": full}
    return pick[0], {**criterion, "val_cost": pick[1], "val_accuracy": pick[2],
                     "split": SELECTION_SPLIT, "readings": len(scored),
                     "chosen_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


__all__ = ["OPERATING_FILE", "OperatingPoint", "choose", "operating_point"]
