"""exitgym.integrations without Ray: the env creator Ray calls, runner seeding, the actor export
and the comparison's job list (the Ray-backed tests are in tests/ray/, run by ``make test`` in
.venv-ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exitgym.agents.mlp_policy import MLPPolicy, MLPPolicyConfig
from exitgym.backbones.cache import save_cache
from exitgym.data.synthetic import synthetic_cache
from exitgym.experiments.compare import train_jobs
from exitgym.experiments.configs import CompareConfig
from exitgym.experiments.env_spec import EnvSpec
from exitgym.experiments.runs import RunError
from exitgym.integrations.ray import make_env, rllib_env_settings, worker_cache_path
from exitgym.integrations.rllib import actor_state

ENV_ID = "exitgym/EarlyExit-v0"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ray-cache") / "train"
    return str(save_cache(synthetic_cache(num_samples=40, num_layers=5, seed=3), path))


def _sample_ids(env, seed: int) -> list[int]:
    _, info = env.reset(seed=seed)
    return [int(i) for i in info["sample_id"]]


def test_creator_loads_the_cache_by_path_and_passes_env_keywords(cache_dir: str) -> None:
    env = make_env(ENV_ID, {"cache_path": cache_dir, "reward": "hardness", "alpha": 0.7,
                            "worker_index": 1, "num_workers": 2})
    core = env.unwrapped
    assert core.cache.meta["path"] == cache_dir and core.cache.num_samples == 40
    assert core.reward_shape.alpha == pytest.approx(0.7)
    assert torch.get_num_threads() == 1  # set deliberately for the worker
    with pytest.raises(ValueError, match="unknown|allowed"):
        make_env(ENV_ID, {"cache_path": cache_dir, "no_such_option": 1})


def test_runner_seeds_map_to_disjoint_slot_seeds(cache_dir: str) -> None:
    """Runner seed s seeds slot i with s * N + i: the native env seeded s * N gives the same
    episodes, and runners s and s + 1 never share a slot seed (s + i would)."""
    venv = make_env(ENV_ID, {"cache_path": cache_dir, "num_envs": 3})
    native = EnvSpec(ENV_ID).make(3, cache=venv.unwrapped.cache)
    assert _sample_ids(venv, 5) == _sample_ids(native, 15)
    obs_a, _ = venv.reset(seed=5)
    obs_b, _ = native.reset(seed=15)
    np.testing.assert_array_equal(obs_a, obs_b)
    # runner 6's first slot is seed 18 (with s + i it would be 6, runner 5's second slot)
    single = EnvSpec(ENV_ID).make(None, cache=venv.unwrapped.cache)
    _, info6 = venv.reset(seed=6)
    assert int(info6["sample_id"][0]) == int(single.reset(seed=18)[1]["sample_id"])


def test_rllib_settings_use_the_native_vector_env_and_check_inputs() -> None:
    s = rllib_env_settings(ENV_ID, {"reward": "vanilla"}, num_env_runners=2,
                           num_envs_per_env_runner=8)
    assert s["environment"] == {"env": ENV_ID, "env_config": {"reward": "vanilla"}}
    assert s["env_runners"] == {"num_env_runners": 2, "num_envs_per_env_runner": 8,
                                "gym_env_vectorize_mode": "vector_entry_point"}
    with pytest.raises(ValueError, match="allowed"):
        rllib_env_settings("CartPole-v1", {})
    with pytest.raises(ValueError, match="num_envs_per_env_runner"):
        rllib_env_settings(ENV_ID, {}, 0, 0)


def test_worker_cache_path_reuses_a_prepared_cache_and_copies_an_in_memory_one(
        cache_dir: str, tmp_path) -> None:
    from exitgym.backbones.cache import load_cache

    assert worker_cache_path(load_cache(cache_dir), tmp_path / "copy") == cache_dir
    mem = synthetic_cache(num_samples=12, num_layers=4, seed=9)
    copied = worker_cache_path(mem, tmp_path / "copy")
    back = load_cache(copied)
    np.testing.assert_array_equal(back.logits, mem.logits)
    np.testing.assert_array_equal(back.labels, mem.labels)


def _rllib_like_state(policy: MLPPolicy) -> dict[str, torch.Tensor]:
    """An RLlib default-module state whose actor is ``policy`` (plus critic tensors to skip)."""
    net = policy.net
    return {
        "encoder.actor_encoder.net.mlp.0.weight": net[0].weight.detach().clone(),
        "encoder.actor_encoder.net.mlp.0.bias": net[0].bias.detach().clone(),
        "encoder.critic_encoder.net.mlp.0.weight": torch.zeros(64, 6),
        "encoder.critic_encoder.net.mlp.0.bias": torch.zeros(64),
        "pi.net.mlp.0.weight": net[2].weight.detach().clone(),
        "pi.net.mlp.0.bias": net[2].bias.detach().clone(),
        "pi.log_std_clip_param_const": torch.tensor(20.0),
        "vf.net.mlp.0.weight": torch.zeros(1, 64),
        "vf.net.mlp.0.bias": torch.zeros(1),
    }


def test_actor_export_copies_the_actor_not_the_critic() -> None:
    cfg = MLPPolicyConfig(obs_dim=6, nvec=(2,), hidden=64)
    source = MLPPolicy(cfg, seed=1)
    target = MLPPolicy(cfg, seed=2)
    target.load_state_dict(actor_state(_rllib_like_state(source), target.state_dict()))
    obs = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_array_equal(target.net(torch.from_numpy(obs)).numpy(),
                                      source.net(torch.from_numpy(obs)).numpy())
    wide = MLPPolicy(MLPPolicyConfig(obs_dim=6, nvec=(2,), hidden=32), seed=0)
    with pytest.raises(RunError, match="shape"):
        actor_state(_rllib_like_state(source), wide.state_dict())


def test_train_jobs_name_every_reward_knob_seed_once() -> None:
    config = CompareConfig(rewards=("vanilla", "hardness"), alphas=(0.1, 0.5), seeds=(0, 1))
    jobs = train_jobs(config)
    assert len({j.name for j in jobs}) == 8
    assert jobs[0].name == "reinforce-vanilla-a0.1-s0"
    assert jobs[0].config == config.agent_config("vanilla", 0.1, 0)
    assert [(j.method, j.knob, j.seed) for j in jobs[:2]] == [("reinforce-vanilla", 0.1, 0),
                                                              ("reinforce-vanilla", 0.1, 1)]
    budget = train_jobs(CompareConfig(rewards=("vanilla",), targets=(0.4,), seeds=(2,)))
    assert [(j.name, j.method, j.knob) for j in budget] == [
        ("reinforce-vanilla-b0.4-s2", "reinforce-vanilla-budget", 0.4)]
    assert budget[0].config.target_cost == 0.4
