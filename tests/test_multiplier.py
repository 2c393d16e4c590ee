"""The budget-targeted multiplier (exitgym.agents.multiplier): its scale by hand, its bounded and
normalised step, and that a wound-up α comes back where the plain step stays stuck."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from exitgym.agents.multiplier import CostScale, cost_scale, multiplier_step
from exitgym.envs.rewards import make_reward


def tables(ce: list[list[float]], memorized: list[int]) -> SimpleNamespace:
    ce_arr = np.array(ce, dtype=np.float64)
    n, num_layers = ce_arr.shape
    cost = np.tile(np.arange(1, num_layers + 1) / num_layers, (n, 1))
    return SimpleNamespace(ce=ce_arr, correct=ce_arr < 0.7, cost=cost,
                           memorized=np.array(memorized), num_layers=num_layers)


def test_scale_is_the_per_sample_break_even_quantile_by_hand() -> None:
    # 3 layers, costs 1/3, 2/3, 1. Sample 0 gains 0.9 nats by layer 3 (price 2/3): 1.35;
    # layer 2 gains 0.6 at 1/3: 1.8, so its break-even is 1.8. Sample 1: 0.3 at 1/3 = 0.9.
    # Sample 2 gains nothing deeper: break-even <= 0.
    t = tables([[1.0, 0.4, 0.1], [0.5, 0.2, 0.2], [0.3, 0.3, 0.3]], [3, 2, 1])
    scale = cost_scale(t, make_reward("vanilla", 0.0))
    expected = np.quantile([1.8, 0.9, 0.0], 0.9)
    assert scale == CostScale(pytest.approx(expected), pytest.approx(2 * 1.8), pytest.approx(1 / 3),
                              pytest.approx(1.0))
    # hardness weighs sample 0 (m = L) by 0: it is left out, sample 1 by 1 − 2/3
    hard = cost_scale(t, make_reward("hardness", 0.0))
    assert hard.alpha_scale == pytest.approx(np.quantile([0.9 * 3, 0.0], 0.9))
    assert hard.alpha_max == pytest.approx(2 * 0.9 * 3)
    assert make_reward("hardness", 0.0).alpha == 0.0  # the shape's α is left as it was


def test_step_is_bounded_and_normalised_by_the_room_on_each_side() -> None:
    scale = CostScale(alpha_scale=2.0, alpha_max=2.0, low=0.2, high=1.0)
    # at full depth against target 0.4: error +1, one step of lr · alpha_scale, capped
    assert multiplier_step(0.0, 1.0, 0.4, scale, 0.1) == pytest.approx(0.2)
    assert multiplier_step(1.95, 1.0, 0.4, scale, 0.1) == 2.0
    # 0.1 above the target, the smaller room (0.4 − 0.2) normalises: error +0.5
    assert multiplier_step(0.0, 0.5, 0.4, scale, 0.1) == pytest.approx(0.1)
    # collapsed to layer 1 (cost 0.2 = low): error −1, α falls as fast as it rose
    assert multiplier_step(1.0, 0.2, 0.4, scale, 0.1) == pytest.approx(0.8)
    assert multiplier_step(0.1, 0.2, 0.4, scale, 0.1) == 0.0
    wide = CostScale(alpha_scale=1.0, alpha_max=5.0, low=0.2, high=1.0)  # unit 1, bound 5
    assert multiplier_step(4.0, 1.0, 0.4, wide, 0.5) == pytest.approx(4.5)
    assert multiplier_step(4.9, 1.0, 0.4, wide, 0.5) == 5.0
    # without a scale (no tables): the plain step
    assert multiplier_step(1.0, 0.2, 0.4, None, 2.0) == pytest.approx(0.6)


def test_a_wound_up_multiplier_recovers_where_the_plain_step_stays_stuck() -> None:
    """A policy that answers α with a lag of 20 updates (exits at layer 1 whenever α > 1):
    the plain step winds α far past 1 and then sits at layer 1; the scaled step oscillates
    within its bound and spends most updates at full depth-ish costs around the target."""
    def run(step: callable) -> tuple[float, float]:
        alpha, history = 0.0, [0.0] * 20
        at_layer_one = 0
        for _ in range(200):
            lagged = history[-20]
            cost = 0.2 if lagged > 1.0 else 1.0
            at_layer_one += cost == 0.2
            alpha = step(alpha, cost)
            history.append(alpha)
        return max(history), at_layer_one / 200

    plain_peak, plain_stuck = run(lambda a, c: multiplier_step(a, c, 0.4, None, 2.0))
    scale = CostScale(alpha_scale=2.0, alpha_max=2.0, low=0.2, high=1.0)
    new_peak, new_stuck = run(lambda a, c: multiplier_step(a, c, 0.4, scale, 0.1))
    assert plain_peak > 15 and plain_stuck > 0.7
    assert new_peak <= 2.0 and 0.2 < new_stuck < 0.6
