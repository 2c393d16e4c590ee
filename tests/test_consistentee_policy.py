"""ConsistentEE's per-layer exit policy (the official code's architecture) and its trainer.

Each test fails on the old architecture (one shared Linear-ReLU-Linear MLP on the hidden state,
trained with the self-critical baseline) or on a routing / probability defect of the new one.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import exitgym  # noqa: F401  (registers the environments)
from exitgym.agents.calibrated import CalibratedExit
from exitgym.agents.consistentee import ConsistentEEConfig
from exitgym.agents.consistentee_policy import (
    PerLayerExitPolicy,
    PerLayerPolicyConfig,
    PerLayerReinforce,
    official_reinforce,
    rollouts_per_sample,
)
from exitgym.agents.mlp_policy import chain_flops
from exitgym.backbones.flops import mlp_flops
from exitgym.data.synthetic import synthetic_cache

LAYERS, HIDDEN = 6, 8
"""The synthetic cache's depth and pooled width."""


def make_env(num_envs: int = 16):
    return gym.make_vec("exitgym/EarlyExit-v0", num_envs=num_envs,
                        cache=synthetic_cache(num_samples=64), reward="hardness", alpha=0.5,
                        observation="hidden+depth", vectorization_mode="vector_entry_point")


def observations(layer: int, rows: int = 5, seed: int = 0) -> np.ndarray:
    """``hidden+depth`` rows at 1-based ``layer``: random ``h``, fraction ``l/L``, some cost."""
    rng = np.random.default_rng(seed)
    obs = np.zeros((rows, HIDDEN + 2), dtype=np.float32)
    obs[:, :HIDDEN] = rng.normal(size=(rows, HIDDEN))
    obs[:, HIDDEN] = layer / LAYERS
    obs[:, HIDDEN + 1] = rng.uniform(0, 1, rows)
    return obs


@pytest.fixture
def policy() -> PerLayerExitPolicy:
    return PerLayerExitPolicy(PerLayerPolicyConfig(obs_dim=HIDDEN + 2, num_layers=LAYERS),
                              seed=3)


def test_one_official_net_per_layer(policy: PerLayerExitPolicy) -> None:
    """L nets, each Linear(H, 32)-GELU-Linear(32, 1), none sharing a parameter."""
    assert len(policy.net) == LAYERS
    for net in policy.net:
        kinds = [type(m).__name__ for m in net]
        assert kinds == ["Linear", "GELU", "Linear"]
        assert (net[0].in_features, net[0].out_features, net[2].out_features) == (HIDDEN, 32, 1)
    ptrs = [p.data_ptr() for p in policy.parameters()]
    assert len(ptrs) == 4 * LAYERS == len(set(ptrs))
    w = [net[0].weight for net in policy.net]
    assert not any(torch.equal(w[0], other) for other in w[1:])  # separately initialised


def test_exit_probability_is_the_sigmoid_of_the_layers_own_net(policy) -> None:
    """Hand-computed σ(w2·gelu(W1 h + b1) + b2) with layer l's weights (erf GELU, not torch's)."""
    for layer in (1, 4, LAYERS):
        obs = observations(layer)
        net = policy.net[layer - 1]
        w1, b1 = net[0].weight.detach().double().numpy(), net[0].bias.detach().double().numpy()
        w2, b2 = net[2].weight.detach().double().numpy(), net[2].bias.detach().double().numpy()
        pre = obs[:, :HIDDEN].astype(np.float64) @ w1.T + b1
        gelu = pre * 0.5 * (1 + np.vectorize(math.erf)(pre / math.sqrt(2)))
        z = (gelu @ w2.T + b2)[:, 0]
        assert policy.exit_probability(obs) == pytest.approx(1 / (1 + np.exp(-z)), abs=1e-6)


def test_a_decision_at_layer_l_depends_only_on_net_l(policy) -> None:
    """Changing every other layer's net leaves layer 3's probabilities as they are; changing
    net 3 moves them (a shared network, or one routed by the wrong index, fails one side)."""
    obs = observations(3)
    before = policy.exit_probability(obs)
    with torch.no_grad():
        for index, net in enumerate(policy.net):
            if index != 2:
                net[2].bias.add_(5.0)
    assert np.array_equal(policy.exit_probability(obs), before)
    with torch.no_grad():
        policy.net[2][2].bias.add_(5.0)
    assert np.all(policy.exit_probability(obs) > before + 0.01)


def test_rows_of_different_layers_are_routed_in_one_batch(policy) -> None:
    """A mixed batch gives each row what its layer's net gives it alone; the cost column (part
    of the depth view) does not change a decision."""
    parts = [observations(layer, rows=2, seed=layer) for layer in range(1, LAYERS + 1)]
    mixed = np.concatenate(parts)[::-1].copy()
    alone = np.concatenate([policy.exit_probability(p) for p in parts])[::-1]
    assert policy.exit_probability(mixed) == pytest.approx(alone, abs=1e-7)
    costly = mixed.copy()
    costly[:, HIDDEN + 1] += 0.7
    assert np.array_equal(policy.exit_probability(costly), policy.exit_probability(mixed))


def test_greedy_and_calibrated_readings(policy) -> None:
    """Greedy exits iff P(exit) > 0.5; CalibratedExit reads the same probability at any τ."""
    with torch.no_grad():
        policy.net[1][2].bias.add_(0.3)  # spread the probabilities around 0.5
    obs = np.concatenate([observations(layer, rows=20, seed=layer) for layer in (1, 2, 5)])
    p = policy.exit_probability(obs)
    assert 0 < (p > 0.5).sum() < len(p)
    assert np.array_equal(policy.act(obs, deterministic=True), (p > 0.5).astype(np.int64))
    for tau in (0.3, 0.5, 0.7):
        reading = CalibratedExit(policy, tau)
        assert reading.exit_probability(obs) == pytest.approx(p, abs=1e-12)
        assert np.array_equal(reading.act(obs), (p >= tau).astype(np.int64))
    sampled = np.mean([policy.act(obs, deterministic=False) for _ in range(400)], axis=0)
    assert np.abs(sampled - p).max() < 0.1  # sampling exits with probability σ(z)


def test_charged_one_nets_flops(policy) -> None:
    want = mlp_flops([HIDDEN, 32, 1])
    assert policy.policy_flops == want == chain_flops(policy.net[0])
    env = make_env()
    agent = PerLayerReinforce(env, official_reinforce(batch_size=16))
    assert agent.policy.policy_flops == want
    assert PerLayerReinforce.policy_config(env.single_observation_space,
                                           env.single_action_space, agent.config,
                                           "hidden+depth").flops == want
    env.close()


def test_save_and_load_round_trip_through_safetensors(policy, tmp_path) -> None:
    policy.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.json", "policy.safetensors"]
    loaded = PerLayerExitPolicy.load(tmp_path)
    assert loaded.config == policy.config
    obs = np.concatenate([observations(layer) for layer in range(1, LAYERS + 1)])
    assert np.array_equal(loaded.exit_probability(obs), policy.exit_probability(obs))


def test_the_policy_needs_hidden_and_depth() -> None:
    with pytest.raises(ValueError, match="depth"):
        PerLayerPolicyConfig(obs_dim=HIDDEN, num_layers=LAYERS, observation="hidden")


def test_consistentee_trains_with_the_official_mean_of_k_baseline() -> None:
    """ConsistentEE's default and compare's config: mean-of-K, K = 8 (smaller batches: the
    largest divisor of 8 they allow), width 32; each update draws batch/K samples K times."""
    default = ConsistentEEConfig().reinforce
    assert (default.baseline, default.k, default.hidden) == ("mean-of-k", 8, 32)
    assert [rollouts_per_sample(b) for b in (64, 8, 12, 4, 2)] == [8, 8, 4, 4, 2]
    with pytest.raises(ValueError, match="even batch size"):
        rollouts_per_sample(7)
    env = make_env()
    agent = PerLayerReinforce(env, official_reinforce(batch_size=16, seed=1))
    ids = agent._draw_ids()
    assert len(ids) == 16 and np.array_equal(ids, np.repeat(ids[::8], 8))
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.learn(2)
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters(),
                                                          strict=True))
    env.close()


def test_compare_refuses_an_odd_batch_for_consistentee_before_training() -> None:
    from exitgym.experiments.configs import CompareConfig

    with pytest.raises(ValueError, match="even batch size"):
        CompareConfig(consistentee=(0.5,), batch_size=7)
    assert CompareConfig(batch_size=7).batch_size == 7  # without ConsistentEE any size goes
