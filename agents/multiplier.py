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

- ``alpha_scale``: the typical α at which exiting at layer 1 becomes a sample's best exit,
  :data:`SAMPLE_QUANTILE` of the per-sample break-even ``α_i = max_l (q_il − q_i1) /
  (w_i·(c_il − c_i1))`` over the training samples whose cost the reward weighs (``q``: the
  reward's quality, ``w``: its per-unit cost weight); steps are in units of it;
- ``alpha_max``: :data:`BOUND_MARGIN` times the largest break-even (at the largest break-even
  every weighed sample is indifferent between layer 1 and its best deeper layer; beyond it layer
  1 is strictly best for all, so more α cannot move the optimum, it only winds up): α stays in
  ``[0, alpha_max]`` and every target from the layer-1 cost up stays reachable;
- the error is normalised by the smaller room around the target,
  ``(c̄ − t)/min(t − c_1, c_L − t)`` clipped to ``[−1, 1]`` (``c_1``, ``c_L``: mean cost of
  exiting at layer 1 / the last layer), so a policy collapsed to layer 1 pulls α down as hard as
  a full-depth one pushes it up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLE_QUANTILE = 0.9
"""Quantile of the per-sample break-even α that sets the step unit ``alpha_scale``."""
BOUND_MARGIN = 2.0
"""``alpha_max`` over the largest break-even α (strictly past every tie)."""


@dataclass(frozen=True)
class CostScale:
    """The task's scale of α and of the reachable cost (from the training tables)."""

    alpha_scale: float
    """Typical per-sample break-even α: the unit of the steps (module docstring)."""
    alpha_max: float
    """The bound: :data:`BOUND_MARGIN` × the largest per-sample break-even α (module doc)."""
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
    alpha_scale = float(np.quantile(break_even, SAMPLE_QUANTILE))
    alpha_max = BOUND_MARGIN * float(break_even.max())
    if not (np.isfinite(alpha_max) and alpha_scale > 0):
        return None
    cost = tables.cost.mean(axis=0)
    return CostScale(alpha_scale, alpha_max, float(cost[0]), float(cost[-1]))


def multiplier_step(alpha: float, cost: float, target: float, scale: CostScale | None,
                    lr: float) -> float:
    """The next α after a batch of mean cost ``cost`` (module docstring); without a scale the
    plain step ``max(0, α + lr·(cost − target))``."""
    if scale is None:
        return max(0.0, alpha + lr * (cost - target))
    room = min(target - scale.low, scale.high - target)
    error = float(np.clip((cost - target) / max(room, 1e-9), -1.0, 1.0))
    return float(min(max(alpha + lr * scale.alpha_scale * error, 0.0), scale.alpha_max))


__all__ = ["CostScale", "cost_scale", "multiplier_step"]
