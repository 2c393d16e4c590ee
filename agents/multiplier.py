"""The budget-targeted mode's multiplier: the reward's cost weight α adapted until the policy's
mean cost meets a target (``ReinforceConfig.target_cost``).

A plain Lagrange step ``α ← max(0, α + η·(c̄ − target))`` winds up: the policy answers α only
after many updates, so α keeps growing past any useful value while the cost is still high, the
policy then falls to exiting everything at layer 1, where samples equal greedy rollouts and the
self-critical advantage is zero, and α (error at most ``target − c_1`` there) needs hundreds of
updates to come back down. Measured on trec6 with joint heads (200 updates, targets 0.28 / 0.48 /
0.68, seeds 0-2): α peaked at 9-14 and 6 of 9 runs ended at layer 1 or full depth. The step here
(:func:`multiplier_step`) is bounded and scaled by the task, from the training tables
(:func:`cost_scale`):

- ``alpha_max``: the α at which exiting at layer 1 is the best exit of 90 % of the training
  samples whose cost the reward weighs (:data:`SAMPLE_QUANTILE` of the per-sample break-even
  ``α_i = max_l (q_il − q_i1) / (w_i·(c_il − c_i1))`` with the reward's quality ``q`` and
  per-unit cost weight ``w``); a larger α hardly moves the optimum, it only winds up, so α stays
  in ``[0, alpha_max]`` and steps are in units of it;
- the error is normalised by the room on its side of the target, ``(c̄ − t)/(t − c_1)`` below it
  and ``(c̄ − t)/(c_L − t)`` above (``c_1``, ``c_L``: mean cost of exiting at layer 1 / the last
  layer), so a policy collapsed to layer 1 pulls α down as hard as a full-depth one pushes it up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLE_QUANTILE = 0.9
"""Share of the weighed samples best exited at layer 1 when α = ``alpha_max``."""


@dataclass(frozen=True)
class CostScale:
    """The task's scale of α and of the reachable cost (from the training tables)."""

    alpha_max: float
    """The α beyond which exiting at layer 1 pays best for nearly every sample (module doc)."""
    low: float
    """Mean cost of exiting every sample at layer 1."""
    high: float
    """Mean cost of running every sample to the last layer."""


def cost_scale(tables: Any, shape: Any) -> CostScale | None:
    """:class:`CostScale` of the env's ``tables`` under reward ``shape`` (None when the tables
    cannot tell: no tables, or no deeper layer gains quality at a higher cost)."""
    if tables is None or not hasattr(shape, "alpha"):
        return None
    saved = shape.alpha
    shape.alpha = 1.0  # the per-unit weight w (built-in weights are linear in α)
    try:
        unit = np.broadcast_to(np.asarray(shape.cost_weight(tables.memorized, tables.num_layers),
                                          dtype=np.float64), tables.memorized.shape)
    finally:
        shape.alpha = saved
    quality = np.asarray(shape.quality(tables.ce, tables.correct), dtype=np.float64)
    pays = unit > 0  # samples no α moves (weight 0, e.g. hardness at m = L) do not count
    gain = quality[pays, 1:] - quality[pays, :1]
    price = unit[pays, None] * (tables.cost[pays, 1:] - tables.cost[pays, :1])
    with np.errstate(divide="ignore", invalid="ignore"):
        break_even = np.where(price > 0, gain / price, -np.inf).max(axis=1)
    if break_even.size == 0:
        return None
    alpha_max = float(np.quantile(break_even, SAMPLE_QUANTILE))
    if not np.isfinite(alpha_max) or alpha_max <= 0:
        return None
    cost = tables.cost.mean(axis=0)
    return CostScale(alpha_max, float(cost[0]), float(cost[-1]))


def multiplier_step(alpha: float, cost: float, target: float, scale: CostScale | None,
                    lr: float) -> float:
    """The next α after a batch of mean cost ``cost`` (module docstring); without a scale the
    plain step ``max(0, α + lr·(cost − target))``."""
    if scale is None:
        return max(0.0, alpha + lr * (cost - target))
    room = (target - scale.low) if cost < target else (scale.high - target)
    error = float(np.clip((cost - target) / max(room, 1e-9), -1.0, 1.0))
    return float(min(max(alpha + lr * scale.alpha_max * error, 0.0), scale.alpha_max))


__all__ = ["CostScale", "cost_scale", "multiplier_step"]
