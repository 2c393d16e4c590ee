"""Reward shapes: registry, formulas against hand computation, dense == terminal, run-time λ."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import exitgym  # noqa: F401  (registers the environments)
from exitgym.data.synthetic import synthetic_cache
from exitgym.envs.rewards import (
    DEFAULT_ALPHA,
    REWARDS,
    FlopsReward,
    RewardShape,
    VanillaReward,
    cross_entropy,
    make_reward,
    register_reward,
)

SHAPES = ("vanilla", "hardness", "accuracy", "flops")


@pytest.fixture(scope="module")
def cache():
    return synthetic_cache(num_samples=24, num_layers=5, num_labels=3, seed=3)


def hand_ce(logits: np.ndarray, label: int) -> float:
    """−log softmax(logits)[label], written out with math (independent of cross_entropy)."""
    values = [float(v) for v in logits]
    top = max(values)
    return -(values[label] - top - math.log(sum(math.exp(v - top) for v in values)))


def hand_reward(shape: str, alpha: float, cache, sample: int, t: int) -> float:
    """The documented formula of ``shape`` for exiting ``sample`` at 1-based layer ``t``."""
    num_layers = cache.num_layers
    logits, label = cache.logits[sample, t - 1], int(cache.labels[sample])
    ce = hand_ce(logits, label)
    cost = (
        cache.flops_embed[sample] + cache.flops_layer[sample, :t].sum() + t * cache.flops_head
    ) / (cache.flops_embed[sample] + cache.flops_layer[sample].sum() + cache.flops_head)
    correct = float(int(np.argmax(logits)) == label)
    m = int(cache.memorized[sample])
    return {
        "vanilla": -ce - alpha * cost,
        "hardness": -ce - alpha * (1 - m / num_layers) * cost,
        "accuracy": correct - alpha * cost,
        "flops": -ce - alpha * cost,
    }[shape]


def run_episode(env: gym.Env, sample: int, exit_layer: int) -> tuple[list[float], dict]:
    """Continue until ``exit_layer`` then exit; return per-step rewards and the final info."""
    env.reset(options={"sample_id": sample})
    rewards = []
    for layer in range(1, exit_layer + 1):
        action = 1 if layer == exit_layer else 0
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        assert truncated is False
        assert terminated is (layer == exit_layer)
    return rewards, info


def test_registry_holds_the_four_shapes_and_unknown_names_list_them() -> None:
    assert set(SHAPES) <= set(REWARDS)
    with pytest.raises(ValueError, match=r"unknown reward 'nope'.*accuracy.*flops.*hardness"):
        make_reward("nope")
    with pytest.raises(ValueError, match="registered rewards"):
        gym.make("exitgym/EarlyExit-v0", cache=synthetic_cache(), reward="nope")


def test_cross_entropy_matches_hand_computation(cache) -> None:
    ce = cross_entropy(cache.logits, cache.labels)
    for i in range(cache.num_samples):
        for layer in range(cache.num_layers):
            expected = hand_ce(cache.logits[i, layer], int(cache.labels[i]))
            assert ce[i, layer] == pytest.approx(expected, abs=1e-12)
    extreme = np.array([[[1000.0, -1000.0]]], dtype=np.float32)
    assert cross_entropy(extreme, np.array([1]))[0, 0] == pytest.approx(2000.0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_terminal_reward_equals_formula_at_every_exit_layer(
    cache, shape: str, alpha: float
) -> None:
    env = gym.make("exitgym/EarlyExit-v0", cache=cache, reward=shape, alpha=alpha)
    for sample in range(0, cache.num_samples, 5):
        for t in range(1, cache.num_layers + 1):
            rewards, info = run_episode(env, sample, t)
            assert rewards[:-1] == [0.0] * (t - 1)
            assert info["exit_layer"] == t
            assert rewards[-1] == pytest.approx(
                hand_reward(shape, alpha, cache, sample, t), abs=1e-9
            )


@pytest.mark.parametrize("shape", SHAPES)
def test_dense_pays_cost_per_step_and_matches_terminal_return(cache, shape: str) -> None:
    alpha = 0.9
    dense = gym.make("exitgym/EarlyExit-v0", cache=cache, reward=shape, alpha=alpha, dense=True)
    terminal = gym.make("exitgym/EarlyExit-v0", cache=cache, reward=shape, alpha=alpha)
    cost = cache.cost()
    for sample in range(cache.num_samples):
        m, num_layers = int(cache.memorized[sample]), cache.num_layers
        weight = alpha * (1 - m / num_layers) if shape == "hardness" else alpha
        for t in range(1, num_layers + 1):
            dense_rewards, _ = run_episode(dense, sample, t)
            terminal_rewards, _ = run_episode(terminal, sample, t)
            assert sum(dense_rewards) == pytest.approx(sum(terminal_rewards), abs=1e-9)
            # Every non-final step pays exactly the cost of the layer it moved to (the first
            # also pays layer 1, which reset ran).
            for k, reward in enumerate(dense_rewards[:-1], start=1):
                paid = cost[sample, k] - cost[sample, k - 1]
                if k == 1:
                    paid = cost[sample, 1]
                assert reward == pytest.approx(-weight * paid, abs=1e-12)


def test_lambda_of_the_flops_shape_changes_at_run_time(cache) -> None:
    env = gym.make("exitgym/EarlyExit-v0", cache=cache, reward="flops", lam=0.1)
    shape = env.unwrapped.reward_shape
    assert isinstance(shape, FlopsReward) and shape.lam == 0.1 == shape.alpha
    first, _ = run_episode(env, 4, 3)
    shape.lam = 2.5
    second, _ = run_episode(env, 4, 3)
    assert first[-1] == pytest.approx(hand_reward("flops", 0.1, cache, 4, 3), abs=1e-9)
    assert second[-1] == pytest.approx(hand_reward("flops", 2.5, cache, 4, 3), abs=1e-9)
    vec = gym.make_vec(
        "exitgym/EarlyExit-v0",
        num_envs=2,
        vectorization_mode="vector_entry_point",
        cache=cache,
        reward="flops",
        lam=0.1,
    )
    vec.reset(options={"sample_id": 4})
    vec.unwrapped.reward_shape.lam = 2.5
    _, rewards, terminated, _, _ = vec.step(np.array([1, 1]))
    assert terminated.all()
    np.testing.assert_allclose(rewards, hand_reward("flops", 2.5, cache, 4, 1), atol=1e-9)


def test_shape_arguments_are_validated() -> None:
    assert make_reward("vanilla").alpha == DEFAULT_ALPHA
    assert make_reward("flops", alpha=0.3).lam == 0.3
    with pytest.raises(ValueError, match="give lam or alpha"):
        make_reward("flops", alpha=0.3, lam=0.4)
    with pytest.raises(ValueError, match="finite number >= 0"):
        make_reward("vanilla", alpha=-1.0)
    with pytest.raises(ValueError, match="finite number >= 0"):
        make_reward("hardness").alpha = float("nan")
    with pytest.raises(ValueError, match="bad arguments for reward 'vanilla'"):
        make_reward("vanilla", lam=0.2)
    shape = make_reward("accuracy", alpha=0.4)
    assert make_reward(shape) is shape
    with pytest.raises(ValueError, match="not with an instance"):
        make_reward(shape, alpha=0.1)


def test_users_can_register_their_own_shape(cache) -> None:
    @register_reward("test-half-cost")
    class HalfCost(VanillaReward):
        def cost_weight(self, memorized: np.ndarray, num_layers: int) -> float:
            return 0.5 * self.alpha

    try:
        assert REWARDS["test-half-cost"] is HalfCost and HalfCost.name == "test-half-cost"
        env = gym.make("exitgym/EarlyExit-v0", cache=cache, reward="test-half-cost", alpha=1.0)
        rewards, _ = run_episode(env, 2, 2)
        assert rewards[-1] == pytest.approx(hand_reward("vanilla", 0.5, cache, 2, 2), abs=1e-9)
        with pytest.raises(ValueError, match="already registered"):
            register_reward("vanilla")(HalfCost)
        with pytest.raises(TypeError, match="RewardShape subclass"):
            register_reward("test-not-a-shape")(dict)  # type: ignore[arg-type]
    finally:
        REWARDS.pop("test-half-cost", None)
    assert issubclass(HalfCost, RewardShape)
