"""Native vector env: equals N single envs (seeds s+i), SyncVectorEnv's layout, autoreset modes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode

import exitgym  # noqa: F401  (registers the environments)
from exitgym.data.synthetic import synthetic_cache
from exitgym.envs.early_exit_vector import EarlyExitVectorEnv

ENV_ID = "exitgym/EarlyExit-v0"


@pytest.fixture(scope="module")
def cache():
    return synthetic_cache(num_samples=30, num_layers=5, num_labels=3, hidden_size=4, seed=2)


def make_native(cache, num_envs: int, **kwargs) -> gym.vector.VectorEnv:
    return gym.make_vec(
        ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point", cache=cache, **kwargs
    )


def test_make_vec_returns_the_native_implementation(cache) -> None:
    env = make_native(cache, 4)
    assert isinstance(env.unwrapped, EarlyExitVectorEnv)
    assert env.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    assert env.action_space == gym.spaces.MultiDiscrete([2, 2, 2, 2])
    assert env.observation_space.shape == (4, 6)
    same = make_native(cache, 2, autoreset_mode="SameStep")
    assert same.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP


@pytest.mark.parametrize("dense", [False, True])
def test_same_seeds_and_actions_give_the_trajectories_of_single_envs(cache, dense: bool) -> None:
    """Hand-driven single envs seeded s+i with next-step autoreset are the reference."""
    n, seed, steps = 6, 40, 120
    kwargs = {"reward": "hardness", "observation": "features+hidden", "dense": dense}
    vec = make_native(cache, n, **kwargs)
    singles = [gym.make(ENV_ID, cache=cache, **kwargs) for _ in range(n)]
    obs, info = vec.reset(seed=seed)
    for i, env in enumerate(singles):
        single_obs, single_info = env.reset(seed=seed + i)
        np.testing.assert_array_equal(obs[i], single_obs)
        assert info["sample_id"][i] == single_info["sample_id"]
    actions = np.random.default_rng(0).integers(0, 2, size=(steps, n))
    done = np.zeros(n, dtype=bool)
    for a in actions:
        obs, rewards, terminated, truncated, info = vec.step(a)
        assert not truncated.any()
        for i, env in enumerate(singles):
            if done[i]:
                single_obs, single_info = env.reset()
                single_reward, single_terminated = 0.0, False
            else:
                single_obs, single_reward, single_terminated, _, single_info = env.step(int(a[i]))
            np.testing.assert_array_equal(obs[i], single_obs)
            assert rewards[i] == single_reward
            assert terminated[i] == single_terminated
            for key, value in single_info.items():
                assert info[f"_{key}"][i] and info[key][i] == value, key
        done = terminated


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
@pytest.mark.parametrize("dense", [False, True])
def test_outputs_equal_sync_vector_env_exactly(cache, mode: str, dense: bool) -> None:
    kwargs = {"cache": cache, "observation": "features+logits", "dense": dense, "reward": "vanilla"}
    native = make_native(
        cache, 5, autoreset_mode=mode, **{k: v for k, v in kwargs.items() if k != "cache"}
    )
    sync = gym.make_vec(
        ENV_ID,
        num_envs=5,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode(mode)},
        **kwargs,
    )
    assert data_equivalence(native.reset(seed=3), sync.reset(seed=3), exact=True)
    rng = np.random.default_rng(1)
    for _ in range(150):
        a = (rng.random(5) < 0.3).astype(np.int64)
        assert data_equivalence(native.step(a), sync.step(a), exact=True)


def test_large_batch_observations_stay_in_space_and_every_episode_terminates(cache) -> None:
    num_layers = cache.num_layers
    env = make_native(cache, 256, observation="hidden+prev")
    obs, _ = env.reset(seed=0)
    for step in range(1, 4 * (num_layers + 1)):
        obs, rewards, terminated, _, info = env.step(np.zeros(256, dtype=np.int64))
        assert env.observation_space.contains(obs)
        # Always continuing: layers 2..L, the continue at L terminates there (exit at L), and
        # the next step restarts every episode at layer 1 with reward 0 (next-step autoreset).
        phase = step % (num_layers + 1)
        expected_layer = 1 if phase == 0 else min(phase + 1, num_layers)
        assert np.all(info["layer"] == expected_layer)
        assert np.all(terminated == (phase == num_layers))
        if phase == num_layers:
            assert np.all(info["exit_layer"] == num_layers) and info["_exit_layer"].all()
        else:
            assert "exit_layer" not in info and np.all(rewards == 0.0)


def test_disabled_autoreset_needs_a_masked_reset(cache) -> None:
    env = make_native(cache, 3, autoreset_mode=AutoresetMode.DISABLED)
    env.reset(seed=0, options={"sample_id": [4, 5, 6]})
    _, _, terminated, _, info = env.step(np.array([1, 0, 0]))
    assert terminated.tolist() == [True, False, False]
    assert info["exit_layer"][0] == 1 and info["_exit_layer"].tolist() == [True, False, False]
    with pytest.raises(RuntimeError, match=r"sub-environments \[0\] have terminated"):
        env.step(np.array([0, 0, 0]))
    obs, info = env.reset(options={"reset_mask": np.array([True, False, False]), "sample_id": 9})
    assert info["_sample_id"].tolist() == [True, False, False] and info["sample_id"][0] == 9
    _, _, _, _, info = env.step(np.array([0, 0, 0]))
    assert info["layer"].tolist() == [2, 3, 3]
    assert info["sample_id"].tolist() == [9, 5, 6]


def test_bad_inputs_get_clear_errors(cache) -> None:
    env = make_native(cache, 3)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(np.zeros(3, dtype=np.int64))
    env.reset(seed=1)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        env.step(np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="integer array"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match=r"0 \(continue\) or 1 \(exit\)"):
        env.step(np.array([0, 2, 1]))
    with pytest.raises(ValueError, match=r"\[0, 29\]"):
        env.reset(options={"sample_id": [0, 1, 30]})
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": np.zeros(3, dtype=bool)})
    with pytest.raises(ValueError, match="num_envs=3"):
        env.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="num_envs must be"):
        EarlyExitVectorEnv(num_envs=0, cache=cache)
    with pytest.raises(ValueError, match="live=True is not supported"):
        EarlyExitVectorEnv(num_envs=2, cache=cache, live=True)
    with pytest.raises(ValueError, match="unknown autoreset_mode"):
        EarlyExitVectorEnv(num_envs=2, cache=cache, autoreset_mode="sometimes")

