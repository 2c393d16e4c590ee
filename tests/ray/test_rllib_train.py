"""RLlib on exitgym: every id in Ray's registry, and ``train --engine rllib`` (PPO, new API stack)
learning EarlyExit-v0 into a run directory that evaluate / replay read unchanged."""

from __future__ import annotations

import pytest

from exitgym.agents.rollout import evaluate
from exitgym.agents.rules import RandomExit
from exitgym.data.synthetic import synthetic_cache
from exitgym.experiments.configs import TrainConfig
from exitgym.experiments.policies import load_policy, run_env_spec
from exitgym.experiments.replay import verify
from exitgym.experiments.runs import RunDir
from exitgym.integrations.ray import register_envs
from exitgym.integrations.rllib import RLlibOptions, train_rllib
from exitgym.registration import ENVS


def test_register_envs_registers_every_exitgym_id_under_its_name(ray_local, tmp_path) -> None:
    from ray.tune.registry import ENV_CREATOR, _global_registry

    from exitgym.backbones.cache import save_cache
    from exitgym.envs.early_exit_vector import EarlyExitVectorEnv

    assert register_envs() == [e.id for e in ENVS]
    for entry in ENVS:
        assert _global_registry.contains(ENV_CREATOR, entry.id)
    path = save_cache(synthetic_cache(num_samples=16, num_layers=4), tmp_path / "c")
    creator = _global_registry.get(ENV_CREATOR, "exitgym/EarlyExit-v0")
    venv = creator({"cache_path": str(path), "num_envs": 4})
    assert isinstance(venv.unwrapped, EarlyExitVectorEnv) and venv.num_envs == 4


def test_rllib_ppo_beats_the_random_policy_and_writes_a_normal_run(ray_local, tmp_path) -> None:
    caches = {"train": synthetic_cache(num_samples=96, num_layers=6, seed=0),
              "test": synthetic_cache(num_samples=64, num_layers=6, seed=1)}
    cfg = TrainConfig(agent="ppo", reward="hardness", alpha=0.5, steps=4, batch_size=64,
                      num_envs=8, lr=3e-3, seed=0)
    # one remote env runner: the env is made in a Ray worker from the cache's path
    result = train_rllib(cfg, tmp_path / "run", caches=caches, plots=False,
                         options=RLlibOptions(num_env_runners=1))
    run = RunDir.open(tmp_path / "run").require_complete()
    assert run.config["engine"] == "rllib" and run.config["ray"]
    assert run.config["config"]["agent"] == "ppo"
    assert [r["update"] for r in result.metrics] == [1.0, 2.0, 3.0, 4.0]
    assert (run.path / "metrics.csv").read_text().count("\n") == 5  # header + 4 iterations
    assert list((run.path / "tb").iterdir())

    policy = load_policy(run)  # checksummed safetensors, as for any run
    spec = run_env_spec(run).with_split("test")
    assert spec.kwargs["policy_flops"] == policy.policy_flops > 0
    learned = evaluate(policy, spec.make(16, caches["test"]))
    rule = RandomExit(p=0.5, seed=0)  # same env and charge, the view the rule reads
    rand = evaluate(rule, spec.with_kwargs(observation=rule.required_observation).make(
        16, caches["test"]))
    assert learned.mean_return == pytest.approx(result.eval.mean_return)
    assert learned.mean_return > rand.mean_return + 0.1, (learned.summary(), rand.summary())
    report = verify(sorted((run.path / "trajectories").glob("*.parquet")),
                    env_factory=lambda ts: spec.make(None, caches["test"]))
    assert report.episodes == caches["test"].num_samples
