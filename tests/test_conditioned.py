"""Cost-conditioned REINFORCE: one policy read at any cost weight α."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import exitgym  # noqa: F401
from exitgym.agents.calibrated import CalibratedExit
from exitgym.agents.conditioned import (
    CONDITIONED_ALPHAS,
    CONDITIONED_RANGE,
    ConditionedPolicy,
    alpha_feature,
    load_exit_policy,
)
from exitgym.agents.mlp_policy import MLPPolicy, chain_flops
from exitgym.agents.reinforce import Reinforce, ReinforceConfig
from exitgym.agents.rollout import evaluate
from exitgym.backbones.flops import mlp_flops
from exitgym.data.synthetic import synthetic_cache
from exitgym.experiments.configs import TrainConfig
from exitgym.experiments.policies import load_policy
from exitgym.experiments.runs import RunDir
from exitgym.experiments.training import train
from tests.test_reinforce import two_group_cache

torch.set_num_threads(1)
RANGE = (0.05, 5.0)
"""Wide enough that on the two-group cache the best policy changes inside it: at α = 0.05 every
input runs deep enough to be right, at 5 every input exits at layer 1."""


def conditioned_agent(seed: int = 0, alpha: float = 0.5) -> tuple[Reinforce, Any]:
    env = gym.make_vec("exitgym/EarlyExit-v0", num_envs=64, cache=two_group_cache(),
                       reward="vanilla", alpha=alpha, vectorization_mode="vector_entry_point")
    cfg = ReinforceConfig(seed=seed, lr=1e-2, cost_conditioned=True, alpha_range=RANGE)
    return Reinforce(env, cfg), env


def test_feature_grid_and_flops() -> None:
    assert alpha_feature(0.05, RANGE) == pytest.approx(-1.0)
    assert alpha_feature(5.0, RANGE) == pytest.approx(1.0)
    assert alpha_feature(0.5, RANGE) == pytest.approx(0.0)  # the geometric middle
    assert len(CONDITIONED_ALPHAS) == 12 and CONDITIONED_ALPHAS[0] == CONDITIONED_RANGE[0]
    assert CONDITIONED_ALPHAS[-1] == CONDITIONED_RANGE[1]
    assert np.allclose(np.diff(np.log(CONDITIONED_ALPHAS)), np.log(50) / 11, atol=3e-3)
    agent, _ = conditioned_agent()
    policy = agent.policy
    assert isinstance(policy, ConditionedPolicy) and policy.config.obs_dim == 7  # 6 + α
    assert policy.policy_flops == mlp_flops([7, 64, 2]) == chain_flops(policy.net)
    with pytest.raises(ValueError, match="target_cost"):
        ReinforceConfig(cost_conditioned=True, target_cost=0.5)
    with pytest.raises(ValueError, match="alpha_range"):
        ReinforceConfig(cost_conditioned=True, alpha_range=(1.0, 0.5))
    with pytest.raises(ValueError, match="target-cost"):
        TrainConfig(cost_conditioned=True, target_cost=0.5)


def test_the_alpha_feature_is_what_the_network_reads() -> None:
    agent, env = conditioned_agent()
    obs = torch.tensor(np.asarray(env.unwrapped.tables.obs)[:, 0], dtype=torch.float32)
    low, high = agent.policy.at(0.05), agent.policy.at(5.0)
    full = torch.cat([obs, torch.full((len(obs), 1), 1.0)], -1)
    assert torch.equal(high.logits(obs)[0], agent.policy.net(full))
    assert torch.equal(high.logits(full)[0], agent.policy.net(full))  # already holds α
    assert not torch.equal(low.logits(obs)[0], high.logits(obs)[0])
    assert high.net is agent.policy.net and agent.policy.alpha == 0.5  # a reading shares weights
    with pytest.raises(ValueError, match="alpha > 0"):
        agent.policy.at(0.0)


def test_one_policy_exits_earlier_at_a_higher_cost_weight() -> None:
    """After 100 updates with α drawn per update, the one policy runs the hard inputs to layer 4
    (or deeper) when layers are nearly free and exits everything at layer 1 when they are
    dear; the env's own α is put back after every update."""
    agent, env = conditioned_agent(seed=0)
    agent.learn(100)
    drawn = [h["alpha"] for h in agent.history]
    assert min(drawn) >= RANGE[0] and max(drawn) <= RANGE[1] and np.std(np.log(drawn)) > 0.5
    assert env.unwrapped.reward_shape.alpha == 0.5 and agent.policy.alpha == 0.5
    costs = [evaluate(agent.policy.at(a), env).cost for a in (0.05, 0.5, 5.0)]
    assert costs[0] >= 0.4 and costs[2] < 0.2 and costs[0] >= costs[1] >= costs[2], costs
    # read at a threshold too (the calibrated reading of budget tables): τ moves the cost
    calibrated = [evaluate(CalibratedExit(agent.policy.at(0.5), tau), env).cost
                  for tau in (1e-4, 0.9999)]
    assert calibrated[0] < calibrated[1]


def test_same_seed_same_weights_resume_and_save_load(tmp_path: Path) -> None:
    full, env = conditioned_agent(seed=3)
    full.learn(6)
    twin, _ = conditioned_agent(seed=3)
    twin.learn(6)
    other, _ = conditioned_agent(seed=4)
    other.learn(6)
    params = list(full.policy.parameters())
    assert all(torch.equal(a, b) for a, b in zip(params, twin.policy.parameters(), strict=True))
    assert full.history == twin.history
    assert [h["alpha"] for h in other.history] != [h["alpha"] for h in full.history]
    first, _ = conditioned_agent(seed=3)
    tensors, meta = first.learn(3).state_dict()
    resumed, _ = conditioned_agent(seed=3)
    resumed.load_state_dict(tensors, json.loads(json.dumps(meta)))
    resumed.learn(3)
    assert all(torch.equal(a, b) for a, b in zip(params, resumed.policy.parameters(),
                                                 strict=True))
    assert resumed.history == full.history[3:]
    reading = full.policy.at(0.2)
    reading.save(tmp_path)
    loaded = load_exit_policy(tmp_path)
    assert isinstance(loaded, ConditionedPolicy) and loaded.alpha == 0.2
    assert loaded.config == full.policy.config
    assert all(torch.equal(a, b) for a, b in zip(params, loaded.parameters(), strict=True))
    assert evaluate(loaded, env).records == evaluate(reading, env).records
    with pytest.raises(TypeError):  # a plain MLP policy cannot be read from it by mistake
        MLPPolicy.load(tmp_path)


def test_training_run_resumes_and_loads_a_conditioned_policy(tmp_path: Path) -> None:
    """``exitgym train --cost-conditioned``: the run charges the extra input, an interrupted
    run resumes to the same weights, and ``load_policy`` gives the conditioned policy."""
    caches = {"policy": synthetic_cache(120, hidden_size=8, seed=1),
              "test": synthetic_cache(60, hidden_size=8, seed=2)}
    cfg = TrainConfig(steps=6, batch_size=12, num_envs=12, checkpoint_every=3, alpha=0.5,
                      reward="hardness", cost_conditioned=True)
    options: dict[str, Any] = {"caches": caches, "progress": False, "plots": False}
    full = train(cfg, tmp_path / "full", **options)

    def stop_at_4(update: int) -> None:
        if update == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", after_update=stop_at_4, **options)
    resumed = train(cfg, tmp_path / "cut", resume=True, **options)
    policies = [load_policy(RunDir.open(r.run.path)) for r in (full, resumed)]
    assert all(isinstance(p, ConditionedPolicy) and p.alpha == 0.5 for p in policies)
    assert all(torch.equal(a, b) for a, b in zip(policies[0].parameters(),
                                                 policies[1].parameters(), strict=True))
    assert full.spec is not None
    assert full.spec.kwargs["policy_flops"] == policies[0].policy_flops == mlp_flops([7, 64, 2])
    assert resumed.eval.records == full.eval.records
