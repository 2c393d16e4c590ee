"""exitgym/SkipBlock-v0: checkers, determinism, rewards = formulas, FLOPs, vector = singles."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from torch.utils.flop_counter import FlopCounterMode

import exitgym  # noqa: F401  (registers the ids)
from exitgym.backbones import hf_compat
from exitgym.envs.rewards import REWARDS, cross_entropy, make_reward
from exitgym.envs.skip_block import EXIT, RUN, SKIP_ATTENTION, SKIP_FFN, SKIP_LAYER, SkipBlockEnv
from exitgym.envs.skip_block_vector import SkipBlockVectorEnv
from exitgym.envs.skip_core import SkipWorld
from tests.test_skip_live import LENGTHS, dropped_positions, tiny_world


@pytest.fixture(scope="module")
def world() -> SkipWorld:
    return tiny_world()


def full_forward_logits(world: SkipWorld, sid: int) -> np.ndarray:
    ex = world.executor
    with torch.inference_mode():
        pooled = ex.backbone.forward_pooled(ex.bank.batch(np.array([sid])))[-1]
        return ex.heads.head(world.num_layers - 1, pooled).double().numpy()[0]


@pytest.mark.parametrize("options", [{}, {"allow_exit": True}, {"token_strategy": True},
                                     {"allow_exit": True, "token_strategy": True, "dense": True}])
def test_gymnasium_and_sb3_checkers_pass_without_warnings(world: SkipWorld, options) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env = gym.make("exitgym/SkipBlock-v0", world=world, **options)
        gym_check_env(env.unwrapped, skip_render_check=False)
        sb3_check_env(env.unwrapped, warn=True)


def rollout(env: gym.Env, seed: int, steps: int) -> list:
    rng = np.random.default_rng(seed)
    out = []
    obs, info = env.reset(seed=seed)
    out.append((obs, info))
    env.action_space.seed(seed)
    for _ in range(steps):
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        out.append((obs, reward, term, trunc, info))
        if term or trunc:
            obs, info = env.reset(seed=int(rng.integers(1000)))
            out.append((obs, info))
    return out


def test_determinism_rollout(world: SkipWorld) -> None:
    a = rollout(SkipBlockEnv(world=world, allow_exit=True, token_strategy=True), 7, 25)
    b = rollout(SkipBlockEnv(world=world, allow_exit=True, token_strategy=True), 7, 25)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:] == y[1:]


def test_gym_make_with_injected_world_and_episode_length(world: SkipWorld) -> None:
    env = gym.make("exitgym/SkipBlock-v0", world=world)
    assert env.action_space == gym.spaces.Discrete(4)
    assert env.observation_space.shape == (32 + 2,)
    obs, info = env.reset(seed=0)
    assert info["layer"] == 1 and obs[-2] == pytest.approx(1 / 4)
    steps, term = 0, False
    while not term:
        obs, reward, term, trunc, info = env.step(RUN)
        steps += 1
        assert not trunc
    assert steps == world.num_layers - 1 and info["layer"] == info["exit_layer"] == 4
    with pytest.raises(RuntimeError, match="reset"):
        env.step(RUN)


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_run_everything_reward_is_the_shape_formula_on_the_full_model(world, name) -> None:
    env = SkipBlockEnv(world=world, reward=name, alpha=0.3)
    for sid in (0, 4, 7):
        env.reset(options={"sample_id": sid})
        for _ in range(world.num_layers - 1):
            _, reward, term, _, info = env.step(RUN)
        logits = full_forward_logits(world, sid)
        label = int(world.labels[sid])
        ce = cross_entropy(logits[None, None, :], np.array([label]))[0, 0]
        assert info["cost"] == pytest.approx(1.0, abs=1e-12)
        assert info["prediction"] == int(np.argmax(logits))
        shape = make_reward(name, alpha=0.3)
        want = shape.terminal(np.float64(ce), np.bool_(info["correct"]), np.float64(1.0),
                              np.int64(world.memorized[sid]), world.num_layers)
        assert reward == pytest.approx(float(want), abs=1e-5)


def test_dense_and_terminal_returns_agree(world: SkipWorld) -> None:
    actions = [[SKIP_ATTENTION, 2], [SKIP_FFN, 0], [SKIP_LAYER, 0]]
    returns = {}
    for dense in (False, True):
        env = SkipBlockEnv(world=world, reward="hardness", alpha=0.5, dense=dense,
                           token_strategy=True)
        total = 0.0
        for sid in range(world.num_samples):
            env.reset(options={"sample_id": sid})
            for action in actions:
                _, reward, term, _, _ = env.step(np.array(action))
                total += reward
            assert term
        returns[dense] = total
    assert returns[True] == pytest.approx(returns[False], abs=1e-9)


def test_exit_and_skip_flops_follow_the_flops_model(world: SkipWorld) -> None:
    ex = world.executor
    fm = ex.flops_model
    env = SkipBlockEnv(world=world, allow_exit=True, token_strategy=True, policy_flops=100.0)
    sid, n0 = 0, LENGTHS[0]
    env.reset(options={"sample_id": sid})
    env.step(np.array([SKIP_ATTENTION, 3]))  # layer 2: FFN only, after dropping the last 30 %
    _, _, term, _, info = env.step(np.array([EXIT, 5]))  # exit with layer 2's head
    n = n0 - len(dropped_positions(3, n0))
    want = fm.embeddings(n0) + fm.layer(n0) + fm.ffn(n) + ex.head_flops + 2 * 100.0
    assert term and info["exit_layer"] == 2
    assert info["flops"] == pytest.approx(want, rel=1e-12)
    assert info["cost"] == pytest.approx(want / (fm.full(n0) + ex.head_flops), rel=1e-12)
    assert info["attention_skip_rate"] == 1.0 and info["ffn_skip_rate"] == 0.0
    assert info["token_strategy"] == 3
    assert info["token_skip_rate"] == pytest.approx((n0 - n) / n0)


def test_flop_counter_matches_matmuls_of_an_episode(world: SkipWorld) -> None:
    """FlopCounterMode (eager attention) counts exactly the matmuls of the blocks that ran."""
    eager = tiny_world()
    hf_compat.use_eager_attention(eager.executor.backbone.model)
    fm = eager.executor.flops_model
    env = SkipBlockEnv(world=eager, token_strategy=True)
    sid, n0 = 7, LENGTHS[7]
    script = [[SKIP_FFN, 6], [RUN, 0], [SKIP_ATTENTION, 0]]
    with FlopCounterMode(display=False) as counter:
        env.reset(options={"sample_id": sid})
        for action in script:
            env.step(np.array(action))
    n = n0 - len(dropped_positions(6, n0))
    # layer 1 in full; layer 2 attention only; layer 3 both; layer 4 FFN only; linear head.
    want = (fm.attention_matmul(n0) + fm.ffn_matmul(n0) + 2 * fm.attention_matmul(n)
            + 2 * fm.ffn_matmul(n) + 2 * 32 * 3)
    assert counter.get_total_flops() == want


def test_invalid_actions_and_options_raise_clear_errors(world: SkipWorld) -> None:
    env = SkipBlockEnv(world=world)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(RUN)
    env.reset(seed=0)
    for bad in (4, -1, 1.0, [0, 1]):
        with pytest.raises(ValueError, match="invalid action"):
            env.step(bad)
    with pytest.raises(ValueError, match="sample_id"):
        env.reset(options={"sample_id": world.num_samples})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"layer": 2})
    with pytest.raises(ValueError, match="unknown reward"):
        SkipBlockEnv(world=world, reward="nope")
    with_tokens = SkipBlockEnv(world=world, token_strategy=True)
    with_tokens.reset(seed=0)
    with pytest.raises(ValueError, match="token strategy in 0..6"):
        with_tokens.step(np.array([0, 7]))
    with pytest.raises(ValueError, match="invalid action"):
        with_tokens.step(EXIT)


@pytest.mark.parametrize("autoreset", ["NextStep", "SameStep"])
def test_vector_env_equals_single_envs(world: SkipWorld, autoreset: str) -> None:
    n, seed, steps = 3, 11, 14
    venv = SkipBlockVectorEnv(num_envs=n, world=world, allow_exit=True, token_strategy=True,
                              dense=True, autoreset_mode=autoreset)
    singles = [SkipBlockEnv(world=world, allow_exit=True, token_strategy=True, dense=True)
               for _ in range(n)]
    obs_v, info_v = venv.reset(seed=seed)
    obs_s = [env.reset(seed=seed + i) for i, env in enumerate(singles)]
    for i in range(n):
        np.testing.assert_allclose(obs_v[i], obs_s[i][0], atol=1e-5)
        assert info_v["sample_id"][i] == obs_s[i][1]["sample_id"]
    rng = np.random.default_rng(0)
    done_prev = np.zeros(n, dtype=bool)
    for _ in range(steps):
        actions = np.stack([rng.integers(0, 5, n), rng.integers(0, 7, n)], axis=1)
        obs_v, rew_v, term_v, _, info_v = venv.step(actions)
        for i, env in enumerate(singles):
            if autoreset == "NextStep" and done_prev[i]:
                obs, info = env.reset()
                reward, term = 0.0, False
            else:
                obs, reward, term, _, info = env.step(actions[i])
                if term and autoreset == "SameStep":
                    final = info_v["final_info"]
                    np.testing.assert_allclose(info_v["final_obs"][i], obs, atol=1e-5)
                    assert final["sample_id"][i] == info["sample_id"]
                    assert final["correct"][i] == info["correct"]
                    assert final["flops"][i] == pytest.approx(info["flops"], rel=1e-12)
                    obs, info = env.reset()
            np.testing.assert_allclose(obs_v[i], obs, atol=1e-5)
            assert rew_v[i] == pytest.approx(reward, abs=1e-5)
            assert term_v[i] == term
            assert info_v["sample_id"][i] == info["sample_id"]
            assert info_v["cost"][i] == pytest.approx(info["cost"], rel=1e-12)
            if term and autoreset == "NextStep":
                for key in ("exit_layer", "prediction", "correct", "token_strategy"):
                    assert info_v[key][i] == info[key], key
        done_prev = term_v


def test_make_vec_runs_lockstep_cohort_in_one_call_per_layer(world: SkipWorld) -> None:
    venv = gym.make_vec("exitgym/SkipBlock-v0", num_envs=4,
                        vectorization_mode="vector_entry_point", world=world)
    assert isinstance(venv.unwrapped, SkipBlockVectorEnv)
    calls = []
    layer = world.executor.backbone.model.encoder.layer[1]
    hook = layer.attention.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        venv.reset(seed=0)
        venv.step(np.array([RUN, RUN, SKIP_ATTENTION, RUN]))
    finally:
        hook.remove()
    assert calls == [3]  # one batched call with the three rows that ran attention
    with pytest.raises(ValueError, match="actions must be"):
        venv.step(np.array([0, 1]))


def test_vector_disabled_autoreset_and_partial_reset(world: SkipWorld) -> None:
    venv = SkipBlockVectorEnv(num_envs=2, world=world, allow_exit=True, autoreset_mode="Disabled")
    obs, info = venv.reset(seed=0, options={"sample_id": np.array([3, 5])})
    assert list(info["sample_id"]) == [3, 5]
    _, _, term, _, info = venv.step(np.array([EXIT, RUN]))
    assert list(term) == [True, False] and info["exit_layer"][0] == 1 and info["_exit_layer"][0]
    with pytest.raises(RuntimeError, match="reset_mask"):
        venv.step(np.array([RUN, RUN]))
    obs, info = venv.reset(options={"sample_id": 8, "reset_mask": np.array([True, False])})
    assert info["sample_id"][0] == 8 and list(info["_sample_id"]) == [True, False]
    _, _, term, _, info = venv.step(np.array([RUN, RUN]))
    assert list(info["layer"]) == [2, 3] and not term.any()
    with pytest.raises(ValueError, match="autoreset_mode"):
        SkipBlockVectorEnv(num_envs=2, world=world, autoreset_mode="sometimes")
