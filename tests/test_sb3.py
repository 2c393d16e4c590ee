"""stable-baselines3 glue: smoke training, evaluation through the shared evaluate, persistence."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import exitgym  # noqa: F401
from exitgym.agents.rollout import evaluate
from exitgym.agents.sb3 import load_sb3, train_sb3
from exitgym.backbones.flops import mlp_flops
from exitgym.data.synthetic import synthetic_cache

torch.set_num_threads(1)


def test_ppo_smoke_train_evaluate_save_load(tmp_path) -> None:
    cache = synthetic_cache(num_samples=32)
    kwargs = {"cache": cache, "reward": "hardness", "alpha": 0.5}
    policy = train_sb3("ppo", "exitgym/EarlyExit-v0", total_timesteps=256, seed=0, num_envs=2,
                       env_kwargs=kwargs, log_dir=tmp_path / "tb", n_steps=64, batch_size=64,
                       n_epochs=1)
    assert policy.required_observation == "features"
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))  # SB3's TensorBoard logger
    # SB3's acting network: policy_net 6-64-64 (tanh) and action_net 64-2, one cost function
    assert policy.policy_flops == mlp_flops([6, 64, 64, 2])
    venv = gym.make_vec("exitgym/EarlyExit-v0", num_envs=8, vectorization_mode="vector_entry_point",
                        **kwargs)
    result = evaluate(policy, venv)
    assert len(result.records) == 32 and sum(result.exit_histogram) == 32
    # Greedy SB3 actions are what evaluate records.
    first = result.records[0]
    obs, _ = venv.reset(options={"sample_id": np.zeros(8, dtype=np.int64)})
    assert int(policy.act(obs)[0]) == first.actions[0]
    policy.save(tmp_path / "model")
    again = load_sb3(tmp_path / "model", gym.make("exitgym/EarlyExit-v0", **kwargs))
    assert evaluate(again, venv).records == result.records


@pytest.mark.parametrize("algo", ["a2c", "dqn"])
def test_other_algorithms_train(algo: str) -> None:
    env = gym.make("exitgym/EarlyExit-v0", cache=synthetic_cache(num_samples=16))
    policy = train_sb3(algo, env, total_timesteps=128, seed=0)
    assert policy.act(np.zeros((3, 6), np.float32)).shape == (3,)


def test_bad_requests_are_explained() -> None:
    kwargs = {"cache": synthetic_cache(num_samples=8)}
    with pytest.raises(ValueError, match="unknown SB3 algorithm"):
        train_sb3("sac", "exitgym/EarlyExit-v0", 10, env_kwargs=kwargs)
    with pytest.raises(ValueError, match="action_masks"):
        train_sb3("maskable-ppo", "exitgym/EarlyExit-v0", 10, env_kwargs=kwargs)


def test_fewer_steps_than_one_update_are_refused() -> None:
    kwargs = {"cache": synthetic_cache(num_samples=8)}
    with pytest.raises(ValueError) as err:
        train_sb3("ppo", "exitgym/EarlyExit-v0", 300, env_kwargs=kwargs, num_envs=8)
    assert str(err.value) == (
        "ppo: 300 environment steps are fewer than one update needs (16384: a rollout of "
        "n_steps=2048 in each of 8 envs), so the policy would never be trained; pass --steps of "
        "at least 16384, and many times that to learn (SB3 counts environment steps, not "
        "updates)")
    with pytest.raises(ValueError, match="learning_starts=100 plus one train_freq interval"):
        train_sb3("dqn", "exitgym/EarlyExit-v0", 50, env_kwargs=kwargs, num_envs=1)


@pytest.mark.parametrize("agent", ["ppo", "a2c", "dqn"])
def test_default_flags_give_each_sb3_family_many_updates(agent: str) -> None:
    """``exitgym train --agent <sb3>`` with default flags used to train 300 timesteps: less than
    one PPO rollout (refused since) and a handful of A2C / DQN updates. The family defaults
    (one place: ``AGENT_DEFAULTS``) give every family many updates of its default model."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from exitgym.agents.registry import lookup
    from exitgym.agents.sb3 import steps_per_update
    from exitgym.experiments.configs import TrainConfig
    from exitgym.experiments.training import SB3_MAX_ENVS

    cfg = TrainConfig(agent=agent).with_agent_defaults()
    cache = synthetic_cache(num_samples=8)
    venv = DummyVecEnv([lambda: gym.make("exitgym/EarlyExit-v0", cache=cache)] * min(
        cfg.num_envs, SB3_MAX_ENVS))
    kwargs = {"n_steps": cfg.n_steps} if cfg.n_steps is not None else {}
    model = lookup(agent).factory()("MlpPolicy", venv, **kwargs)
    assert cfg.steps >= 5 * steps_per_update(model)
    assert TrainConfig(agent=agent, steps=1234).with_agent_defaults().steps == 1234
    assert TrainConfig(agent=agent).with_agent_defaults("rllib").steps == 300  # iterations
    assert TrainConfig().with_agent_defaults().steps == 300  # REINFORCE updates


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_sb3_policies_read_as_curves_with_greedy_at_one_half(algo: str) -> None:
    """``exit_probability`` is what CalibratedExit thresholds: τ = 0.5 takes SB3's own greedy
    actions (PPO: the argmax of its action distribution; DQN: the sign of the Q-difference),
    and the number of exits falls as τ rises, from every row at τ = 0 to none above the max."""
    from exitgym.agents.calibrated import CalibratedExit

    env = gym.make("exitgym/EarlyExit-v0", cache=synthetic_cache(num_samples=16))
    extra = {"n_steps": 64, "batch_size": 64, "n_epochs": 1} if algo == "ppo" else {}
    policy = train_sb3(algo, env, total_timesteps=128, seed=0, **extra)
    with torch.no_grad():  # spread the outputs so the thresholds tell rows apart
        for p in policy.model.policy.parameters():
            p.mul_(5.0)
    obs = np.random.default_rng(0).uniform(0.0, 1.0, size=(400, 6)).astype(np.float32)
    prob = policy.exit_probability(obs)
    assert prob.shape == (400,) and ((0.0 <= prob) & (prob <= 1.0)).all()
    greedy = policy.act(obs, deterministic=True)
    assert np.array_equal(CalibratedExit(policy, 0.5).act(obs)[prob != 0.5], greedy[prob != 0.5])
    exits = [int(CalibratedExit(policy, t).act(obs).sum()) for t in (0.0, 0.25, 0.5, 0.75)]
    assert exits[0] == 400 and exits == sorted(exits, reverse=True)
    assert int(CalibratedExit(policy, min(1.0, float(prob.max()) + 1e-9)).act(obs).sum()) == 0
    from types import SimpleNamespace

    from exitgym.agents.sb3 import SB3Policy

    three = SB3Policy(SimpleNamespace(action_space=gym.spaces.Discrete(3), policy=None), algo,
                      "features")
    with pytest.raises(ValueError, match="Discrete\\(2\\) exit policy"):
        three.exit_probability(obs)
