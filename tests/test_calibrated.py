"""Reading a trained exit policy at a calibrated threshold (``exitgym.agents.calibrated``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from exitgym.agents.calibrated import CalibratedExit
from exitgym.agents.mlp_policy import MLPPolicy, MLPPolicyConfig


def policy(action_space: spaces.Space | None = None, seed: int = 0) -> MLPPolicy:
    obs_space = spaces.Box(-5.0, 5.0, (4,), dtype=np.float32)
    config = MLPPolicyConfig.from_spaces(obs_space, action_space or spaces.Discrete(2), 16, 2,
                                         "features")
    return MLPPolicy(config, seed=seed)


def test_half_is_the_greedy_reading_and_thresholds_order_the_exits() -> None:
    pol = policy()
    with torch.no_grad():  # spread the exit probabilities over (0, 1)
        pol.net[-1].weight.mul_(20.0)
    obs = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    p = CalibratedExit(pol, 0.5).exit_probability(obs)
    assert 0.1 < p.mean() < 0.9 and p.min() < 0.2 and p.max() > 0.8
    assert np.array_equal(CalibratedExit(pol, 0.5).act(obs), pol.act(obs, deterministic=True))
    exits = [int(CalibratedExit(pol, tau).act(obs).sum()) for tau in (0.0, 0.1, 0.5, 0.9, 1.0)]
    assert exits == sorted(exits, reverse=True) and exits[0] == len(obs)
    assert exits[1] > exits[2] > exits[3]
    # The probability of action 1 (exit) computed by hand from the weights, without the policy's
    # code or a softmax: relu(W1 x + b1) -> logits (z_continue, z_exit), P = σ(z_exit − z_cont).
    w1, b1 = (t.detach().double().numpy() for t in (pol.net[0].weight, pol.net[0].bias))
    w2, b2 = (t.detach().double().numpy() for t in (pol.net[2].weight, pol.net[2].bias))
    z = np.maximum(obs.astype(np.float64) @ w1.T + b1, 0.0) @ w2.T + b2
    assert p == pytest.approx(1.0 / (1.0 + np.exp(z[:, 0] - z[:, 1])), abs=1e-6)


def test_bad_thresholds_and_non_exit_policies_are_refused() -> None:
    for tau in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="tau must be a number in"):
            CalibratedExit(policy(), tau)
    with pytest.raises(ValueError, match="one Discrete\\(2\\) exit decision"):
        CalibratedExit(policy(spaces.Discrete(3)), 0.5)
    with pytest.raises(ValueError, match="one Discrete\\(2\\) exit decision"):
        CalibratedExit(policy(spaces.MultiDiscrete([2, 2])), 0.5)
