"""Property-based tests of the env contracts (hypothesis): any seed, any valid action sequence.

For every environment: observations lie inside the observation space and are finite, an episode
terminates exactly once (and ``step`` after that is refused), it is never truncated, the cost
spent never decreases, and re-running the same seed and actions in a fresh environment replays
the episode exactly (``exitgym.experiments.replay.verify_set``, the check that
``exitgym replay --verify`` runs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exitgym.agents.records import EpisodeRecord
from exitgym.data.synthetic import synthetic_cache
from exitgym.envs.early_exit import EarlyExitEnv
from exitgym.envs.skip_block import SkipBlockEnv
from exitgym.envs.switchable_decision import SwitchableDecisionEnv
from exitgym.experiments.replay import verify_set
from exitgym.experiments.trajectories import TrajectorySet
from tests.test_skip_live import tiny_world

NUM_LAYERS = 6
CACHE = synthetic_cache(num_samples=24, num_layers=NUM_LAYERS, num_labels=3, hidden_size=8,
                        seed=3)
CHEAP = settings(max_examples=40, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])
LIVE = settings(max_examples=12, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world() -> Any:
    return tiny_world()


def assert_valid_obs(env: Any, obs: np.ndarray) -> None:
    assert obs.dtype == np.float32
    assert np.all(np.isfinite(obs)), f"non-finite observation {obs}"
    assert env.observation_space.contains(obs), (
        f"observation outside the space: min {obs.min()}, max {obs.max()}")


def play(env: Any, seed: int, actions: list[Any], sample_id: int | None = None
         ) -> tuple[list[tuple[Any, ...]], EpisodeRecord]:
    """Run one episode with the given actions (padded with the first action); check the contract.

    Returns every transition and the episode as an :class:`EpisodeRecord` (for replay).
    """
    options = None if sample_id is None else {"sample_id": sample_id}
    obs, info = env.reset(seed=seed, options=options)
    assert_valid_obs(env, obs)
    costs = [float(info["cost"])]
    transitions: list[tuple[Any, ...]] = [(obs, dict(info))]
    taken: list[Any] = []
    rewards: list[float] = []
    terminations = 0
    for k in range(env.unwrapped.num_layers + 1):
        action = actions[k] if k < len(actions) else actions[0]
        obs, reward, term, trunc, info = env.step(action)
        taken.append(action)
        rewards.append(float(reward))
        transitions.append((obs, float(reward), term, trunc, dict(info)))
        assert_valid_obs(env, obs)
        assert np.isfinite(reward)
        assert trunc is False
        costs.append(float(info["cost"]))
        if term:
            terminations += 1
            break
    assert terminations == 1, "the episode never terminated within L steps"
    assert np.all(np.diff(costs) >= -1e-12), f"cost decreased: {costs}"
    with pytest.raises(RuntimeError, match="reset"):
        env.step(actions[0])
    record = EpisodeRecord(
        sample_id=int(info["sample_id"]), actions=tuple(_plain(a) for a in taken),
        exit_layer=int(info["exit_layer"]), prediction=int(info["prediction"]),
        label=int(info["label"]), correct=bool(info["correct"]),
        memorized_layer=int(info.get("memorized_layer", -1)),
        oracle_layer=int(info.get("oracle_layer", -1)), rewards=tuple(rewards),
        cost=float(info["cost"]), flops=float(info["flops"]), seed=seed)
    return transitions, record


def _plain(action: Any) -> Any:
    arr = np.asarray(action)
    return int(arr) if arr.ndim == 0 else tuple(int(a) for a in arr.ravel())


def assert_same_transitions(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[0], y[0])
        for u, v in zip(x[1:], y[1:], strict=True):
            if isinstance(u, dict):
                assert u.keys() == v.keys()
                for key in u:
                    np.testing.assert_array_equal(np.asarray(u[key]), np.asarray(v[key]))
            else:
                assert u == v


def replay_ok(env: Any, record: EpisodeRecord, env_id: str) -> None:
    ts = TrajectorySet(records=(record,), env_id=env_id, env_kwargs={},
                       meta={"num_layers": env.unwrapped.num_layers})
    assert verify_set(ts, env) == len(record.actions)


# ---- EarlyExit-v0 (cached) ------------------------------------------------------------------
@CHEAP
@given(seed=st.integers(0, 2**31 - 1),
       actions=st.lists(st.integers(0, 1), min_size=1, max_size=NUM_LAYERS + 2),
       observation=st.sampled_from(["features", "features+logits", "hidden+prev", "logits"]),
       reward=st.sampled_from(["vanilla", "hardness", "accuracy"]),
       policy_flops=st.sampled_from([0.0, 5_000.0]))
def test_early_exit_contract(seed: int, actions: list[int], observation: str, reward: str,
                             policy_flops: float) -> None:
    kwargs = {"cache": CACHE, "observation": observation, "reward": reward,
              "policy_flops": policy_flops}
    sparse_env = EarlyExitEnv(**kwargs)
    sparse, record = play(sparse_env, seed, actions)
    info = sparse[-1][-1]
    # The exit layer is the first exit action, or L when the agent always continues.
    padded = actions + [actions[0]] * NUM_LAYERS
    first_exit = next((k for k, a in enumerate(padded[:NUM_LAYERS]) if a == 1), NUM_LAYERS - 1)
    assert info["exit_layer"] == first_exit + 1 == len(sparse) - 1
    sid = info["sample_id"]
    assert info["cost"] == pytest.approx(CACHE.cost(policy_flops)[sid, first_exit], rel=1e-12)
    assert info["prediction"] == int(CACHE.logits[sid, first_exit].argmax())
    # Same seed and actions: a fresh env replays the episode exactly, dense pays the same return.
    again, _ = play(EarlyExitEnv(**kwargs), seed, actions)
    assert_same_transitions(sparse, again)
    dense, _ = play(EarlyExitEnv(**kwargs, dense=True), seed, actions)
    assert sum(t[1] for t in dense[1:]) == pytest.approx(sum(t[1] for t in sparse[1:]), abs=1e-9)
    replay_ok(EarlyExitEnv(**kwargs), record, "exitgym/EarlyExit-v0")


# ---- SkipBlock-v0 and SwitchableDecision-v0 (live, tiny backbone) ---------------------------
@LIVE
@given(seed=st.integers(0, 2**31 - 1), data=st.data(),
       allow_exit=st.booleans(), token_strategy=st.booleans(),
       policy_flops=st.sampled_from([0.0, 2_000.0]))
def test_skip_block_contract(world: Any, seed: int, data: st.DataObject, allow_exit: bool,
                             token_strategy: bool, policy_flops: float) -> None:
    kwargs = {"world": world, "allow_exit": allow_exit, "token_strategy": token_strategy,
              "policy_flops": policy_flops}
    env = SkipBlockEnv(**kwargs)
    space = env.action_space
    if token_strategy:
        action = st.tuples(st.integers(0, int(space.nvec[0]) - 1),
                           st.integers(0, int(space.nvec[1]) - 1)).map(np.array)
    else:
        action = st.integers(0, int(space.n) - 1)
    actions = data.draw(st.lists(action, min_size=1, max_size=world.num_layers + 1))
    first, record = play(env, seed, actions)
    info = first[-1][-1]
    assert 1 <= info["exit_layer"] <= world.num_layers
    # Cost never exceeds the full model plus one policy evaluation per decision.
    assert 0.0 < info["cost"] <= 1.0 + world.num_layers * policy_flops / _full_flops(world, info)
    again, _ = play(SkipBlockEnv(**kwargs), seed, actions)
    assert_same_transitions(first, again)
    replay_ok(SkipBlockEnv(**kwargs), record, "exitgym/SkipBlock-v0")


@LIVE
@given(seed=st.integers(0, 2**31 - 1), data=st.data(),
       policy_flops=st.sampled_from([0.0, 2_000.0]))
def test_switchable_decision_contract(world: Any, seed: int, data: st.DataObject,
                                      policy_flops: float) -> None:
    env = SwitchableDecisionEnv(world=world, policy_flops=policy_flops)
    nvec = [int(n) for n in env.action_space.nvec]
    action = np.array(data.draw(st.tuples(*(st.integers(0, n - 1) for n in nvec))))
    first, record = play(env, seed, [action])
    assert len(first) == 2, "a switchable-decision episode is exactly one step"
    info = first[-1][-1]
    assert info["exit_layer"] == world.num_layers
    if not action.any():
        assert info["cost"] == pytest.approx(1.0 + policy_flops / _full_flops(world, info),
                                             rel=1e-9)
    again, _ = play(SwitchableDecisionEnv(world=world, policy_flops=policy_flops), seed, [action])
    assert_same_transitions(first, again)
    replay_ok(SwitchableDecisionEnv(world=world, policy_flops=policy_flops), record,
              "exitgym/SwitchableDecision-v0")


def _full_flops(world: Any, info: dict[str, Any]) -> float:
    """FLOPs of the full model with its final head for the episode's sample."""
    return float(world.executor.denominator[int(info["sample_id"])])
