"""The budget-targeted mode's multiplier rules (plain, PID) and the trainers' random streams."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import exitgym  # noqa: F401
from exitgym.agents.mlp_policy import MLPPolicy, MLPPolicyConfig
from exitgym.agents.multiplier import PIDGains, PIDMultiplier, PlainMultiplier, make_multiplier
from exitgym.agents.reinforce import Reinforce, ReinforceConfig
from exitgym.agents.rollout import evaluate
from exitgym.agents.seeding import children
from exitgym.data.synthetic import synthetic_cache
from tests.test_reinforce import two_group_cache

torch.set_num_threads(1)


def test_pid_update_by_hand() -> None:
    """Kp·e + Ki·I + Kd·max(0, ė) with e the EMA of the error, I the clamped integral of the
    raw error, started at α₀ / Ki (values worked out by hand)."""
    pid = PIDMultiplier(0.5, PIDGains(kp=1.0, ki=0.5, kd=2.0, smoothing=0.5), alpha=0.2)
    assert pid.integral == pytest.approx(0.4)  # Ki·I = α₀
    expected = [  # (cost, smoothed error, integral, alpha)
        (0.9, 0.4, 0.8, 0.8),  # first error taken raw; no derivative yet
        (0.7, 0.3, 1.0, 0.8),  # e = .5·.4 + .5·.2; error falling: no derivative term
        (1.0, 0.4, 1.5, 0.4 + 0.75 + 2.0 * 0.1),  # rising by 0.1: derivative 0.2
        (0.0, -0.05, 1.0, -0.05 + 0.5),
        (0.0, -0.275, 0.5, 0.0),  # -0.275 + 0.25 < 0: α clamped at 0
        (0.0, -0.3875, 0.0, 0.0),
        (0.0, -0.44375, 0.0, 0.0),  # the integral stays at 0, not -0.5
        (0.6, -0.171875, 0.1, -0.171875 + 0.05 + 2.0 * (0.44375 - 0.171875)),
    ]
    for cost, error, integral, alpha in expected:
        assert pid.step(cost) == pytest.approx(alpha)
        assert (pid.error, pid.integral, pid.alpha) == pytest.approx((error, integral, alpha))


def test_integral_clamp_makes_the_multiplier_respond_at_once() -> None:
    """Under budget for a long time, an unclamped integral would sink far below 0 and α would
    need as long over budget to rise again; the clamped one rises on the first error."""
    pid = PIDMultiplier(0.5, PIDGains(kp=0.0, ki=1.0, kd=0.0, smoothing=0.0), alpha=0.0)
    for _ in range(50):
        pid.step(0.1)
    assert pid.integral == 0.0
    assert pid.step(0.7) == pytest.approx(0.2)


def test_plain_rule_is_the_earlier_update() -> None:
    plain = make_multiplier("plain", 0.4, alpha=0.3, lr=2.0, gains=PIDGains())
    assert isinstance(plain, PlainMultiplier)
    assert plain.step(0.5) == pytest.approx(0.5)
    assert plain.step(0.1) == 0.0  # 0.5 + 2·(−0.3) < 0
    with pytest.raises(ValueError, match="unknown multiplier"):
        make_multiplier("pd", 0.4, 0.0, 2.0, PIDGains())
    with pytest.raises(ValueError, match="unknown multiplier"):
        ReinforceConfig(multiplier="pd")
    with pytest.raises(ValueError, match="gains"):
        PIDGains(ki=-1.0)


def budget_agent(multiplier: str, seed: int, target: float = 0.5,
                 lr: float = 1e-2) -> tuple[Reinforce, Any]:
    env = gym.make_vec("exitgym/EarlyExit-v0", num_envs=64, cache=two_group_cache(),
                       reward="hardness", alpha=0.0, vectorization_mode="vector_entry_point")
    cfg = ReinforceConfig(seed=seed, lr=lr, target_cost=target, multiplier=multiplier)
    return Reinforce(env, cfg), env


@pytest.mark.parametrize("seed", [0, 1])
def test_pid_multiplier_meets_the_budget_from_zero(seed: int) -> None:
    """Made with α = 0 the policy has no reason to exit (test_reinforce: cost > 0.6); with the
    default PID gains α rises until the sampled cost meets target 0.5, where the cheapest
    accurate policy (easy inputs at layer 1, hard ones at 4, cost about 0.42) fits. (Whether PID
    lands closer than the plain rule depends on the learning rate on this toy cache: at 1e-2 the
    plain rule overshoots to layer 1 on 2 of 4 seeds and PID stalls at full depth on 1; at 3e-3
    both land. The comparison is measured on real data: ``PIDGains``.)"""
    agent, env = budget_agent("pid", seed, lr=3e-3)
    result = evaluate(agent.learn(150).policy, env, deterministic=False)
    assert 0.4 < result.cost <= 0.5 and result.accuracy > 0.95, result.summary()


@pytest.mark.parametrize("multiplier", ["pid", "plain"])
def test_budget_targeted_resume_is_bit_identical(multiplier: str) -> None:
    """The multiplier's state (α, integral, smoothed error) is in the checkpoint: 3 + 3 updates
    through a JSON round trip equal 6 uninterrupted ones."""
    full, _ = budget_agent(multiplier, seed=1)
    full.learn(6)
    first, _ = budget_agent(multiplier, seed=1)
    tensors, meta = first.learn(3).state_dict()
    resumed, env = budget_agent(multiplier, seed=1)
    resumed.load_state_dict(tensors, json.loads(json.dumps(meta)))
    resumed.learn(3)
    for a, b in zip(full.policy.parameters(), resumed.policy.parameters(), strict=True):
        assert torch.equal(a, b)
    assert full.history[3:] == resumed.history
    assert full.multiplier is not None and resumed.multiplier is not None
    assert full.multiplier.state() == resumed.multiplier.state()
    assert env.unwrapped.reward_shape.alpha == full.multiplier.alpha


def test_sample_draws_action_sampling_and_init_are_independent_streams() -> None:
    """One seed, independent streams: the trainer's draws and the policy's action sampling were
    the same ``default_rng(seed)`` stream (correlation 0.9999998); now children of the seed."""
    env = gym.make_vec("exitgym/EarlyExit-v0", num_envs=64, cache=synthetic_cache(num_samples=64),
                       reward="hardness", alpha=0.5, vectorization_mode="vector_entry_point")
    agent = Reinforce(env, ReinforceConfig(seed=0))
    draws, actions = agent.rng.random(2000), agent.policy._rng.random(2000)
    assert abs(np.corrcoef(draws, actions)[0, 1]) < 0.1
    again = Reinforce(env, ReinforceConfig(seed=0))  # still fixed by the seed
    assert np.array_equal(again.rng.random(2000), draws)
    assert np.array_equal(again.policy._rng.random(2000), actions)
    for a, b in zip(agent.policy.parameters(), again.policy.parameters(), strict=True):
        assert torch.equal(a, b)
    # the policy's init and sampling streams differ from the trainer's, and reseeding a policy
    # with its seed restarts its sampling stream
    cfg = MLPPolicyConfig(obs_dim=6, nvec=(2,))
    policy = MLPPolicy(cfg, seed=children(0, 4)[1])
    first = policy._rng.random(5)
    policy.seed(children(0, 4)[1])
    assert np.array_equal(policy._rng.random(5), first)
    assert [c.spawn_key for c in children(7, 3)] == [(0,), (1,), (2,)]
