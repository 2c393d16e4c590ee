"""exitgym/SwitchableDecision-v0: checkers, decisions = model run, skip rates, vector = singles."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import exitgym  # noqa: F401  (registers the ids)
from exitgym.envs.rewards import cross_entropy, make_reward
from exitgym.envs.skip_core import SkipWorld
from exitgym.envs.switchable_decision import SwitchableDecisionEnv
from exitgym.envs.switchable_decision_vector import SwitchableDecisionVectorEnv
from tests.test_skip_live import LENGTHS, dropped_positions, tiny_world


@pytest.fixture(scope="module")
def world() -> SkipWorld:
    return tiny_world()


def test_checkers_pass_without_warnings_and_spaces(world: SkipWorld) -> None:
    env = gym.make("exitgym/SwitchableDecision-v0", world=world)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=False)
        sb3_check_env(env.unwrapped, warn=True)
    assert env.action_space == gym.spaces.MultiDiscrete([2] * 6 + [7])
    assert env.observation_space.shape == (32,)


def test_all_keep_is_the_full_model(world: SkipWorld) -> None:
    env = SwitchableDecisionEnv(world=world, reward="flops", lam=0.4)
    ex = world.executor
    for sid in (0, 3, 7):
        obs0, info0 = env.reset(options={"sample_id": sid})
        obs, reward, term, trunc, info = env.step(np.zeros(7, dtype=np.int64))
        with torch.inference_mode():
            pooled = ex.backbone.forward_pooled(ex.bank.batch(np.array([sid])))
            logits = ex.heads.head(3, pooled[-1]).double().numpy()
        np.testing.assert_allclose(obs0, pooled[0][0].numpy(), atol=1e-5)
        np.testing.assert_allclose(obs, pooled[-1][0].numpy(), atol=1e-5)
        ce = cross_entropy(logits[None], np.array([world.labels[sid]]))[0, 0]
        assert term and not trunc and info0["layer"] == 1
        assert info["cost"] == pytest.approx(1.0, abs=1e-12)
        assert reward == pytest.approx(-ce - 0.4, abs=1e-5)
        assert info["attention_skip_rate"] == info["ffn_skip_rate"] == 0.0
        assert info["token_skip_rate"] == 0.0 and info["exit_layer"] == 4


def test_skipping_every_block_leaves_the_layer_1_state_and_costs_the_formula(world) -> None:
    env = SwitchableDecisionEnv(world=world, reward="accuracy", alpha=0.0, policy_flops=50.0)
    ex, fm = world.executor, world.executor.flops_model
    sid, n0 = 0, LENGTHS[0]
    obs0, _ = env.reset(options={"sample_id": sid})
    obs, reward, _, _, info = env.step(np.array([1] * 6 + [0]))
    np.testing.assert_allclose(obs, obs0, atol=1e-6)  # residual stream untouched
    want = fm.embeddings(n0) + fm.layer(n0) + ex.head_flops + 50.0
    assert info["flops"] == pytest.approx(want, rel=1e-12)
    assert info["attention_skip_rate"] == info["ffn_skip_rate"] == 1.0
    assert reward == float(info["correct"])


def test_mixed_decisions_skip_rates_tokens_and_flops(world: SkipWorld) -> None:
    env = SwitchableDecisionEnv(world=world, reward="vanilla", alpha=0.2)
    ex, fm = world.executor, world.executor.flops_model
    sid, n0 = 7, LENGTHS[7]
    env.reset(options={"sample_id": sid})
    # attention of layers 2..4: keep, skip, keep; FFN: skip, skip, keep; uniform 33 %.
    _, reward, _, _, info = env.step(np.array([0, 1, 0, 1, 1, 0, 5]))
    n = n0 - len(dropped_positions(5, n0))
    want = fm.embeddings(n0) + fm.layer(n0) + 2 * fm.attention(n) + fm.ffn(n) + ex.head_flops
    assert info["flops"] == pytest.approx(want, rel=1e-12)
    assert info["cost"] == pytest.approx(want / ex.denominator[sid], rel=1e-12)
    assert info["attention_skip_rate"] == pytest.approx(1 / 3)
    assert info["ffn_skip_rate"] == pytest.approx(2 / 3)
    assert info["token_skip_rate"] == pytest.approx((n0 - n) / n0)
    assert info["token_strategy"] == 5 and info["label"] == int(world.labels[sid])
    # The same path by hand through the Backbone API: the reward is −CE − α·c on its logits.
    bb = ex.backbone
    with torch.inference_mode():
        state = bb.layer(0, bb.embed(ex.bank.batch(np.array([sid]))))
        keep = torch.ones(1, n0, dtype=torch.bool)
        keep[0, dropped_positions(5, n0)] = False
        state = bb.drop_tokens(state, keep)
        for i, (att, ffn) in enumerate([(0, 1), (1, 1), (0, 0)], start=1):
            state = bb.layer(i, state, skip_attention=torch.tensor([bool(att)]),
                             skip_ffn=torch.tensor([bool(ffn)]))
        logits = ex.heads.head(3, bb.pool(state)).double().numpy()
    ce = cross_entropy(logits[None], np.array([world.labels[sid]]))[0, 0]
    shape = make_reward("vanilla", alpha=0.2)
    assert reward == pytest.approx(-ce - shape.alpha * info["cost"], abs=1e-5)
    assert info["prediction"] == int(np.argmax(logits))


def test_errors(world: SkipWorld) -> None:
    env = SwitchableDecisionEnv(world=world)
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(np.zeros(7, dtype=np.int64))
    env.reset(seed=0)
    for bad in (np.zeros(6, dtype=np.int64), np.array([2, 0, 0, 0, 0, 0, 0]), 0):
        with pytest.raises(ValueError, match="invalid action"):
            env.step(bad)
    env.step(np.zeros(7, dtype=np.int64))
    with pytest.raises(RuntimeError, match="terminated"):
        env.step(np.zeros(7, dtype=np.int64))


def test_determinism(world: SkipWorld) -> None:
    results = []
    for _ in range(2):
        env = SwitchableDecisionEnv(world=world)
        env.action_space.seed(3)
        out = [env.reset(seed=5)[0]]
        for _ in range(4):
            out.append(env.step(env.action_space.sample())[:2])
            out.append(env.reset()[0])
        results.append(out)
    for a, b in zip(*results, strict=True):
        if isinstance(a, tuple):
            np.testing.assert_array_equal(a[0], b[0])
            assert a[1] == b[1]
        else:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("autoreset", ["NextStep", "SameStep"])
def test_vector_env_equals_single_envs(world: SkipWorld, autoreset: str) -> None:
    n, seed = 4, 21
    venv = gym.make_vec("exitgym/SwitchableDecision-v0", num_envs=n,
                        vectorization_mode="vector_entry_point", world=world,
                        autoreset_mode=autoreset)
    assert isinstance(venv.unwrapped, SwitchableDecisionVectorEnv)
    singles = [SwitchableDecisionEnv(world=world) for _ in range(n)]
    obs_v, _ = venv.reset(seed=seed)
    for i, env in enumerate(singles):
        np.testing.assert_allclose(obs_v[i], env.reset(seed=seed + i)[0], atol=1e-5)
    rng = np.random.default_rng(1)
    for t in range(4):
        actions = np.concatenate([rng.integers(0, 2, (n, 6)), rng.integers(0, 7, (n, 1))], 1)
        obs_v, rew_v, term_v, _, info_v = venv.step(actions)
        if autoreset == "NextStep" and t % 2 == 1:  # the reset step
            assert not term_v.any() and (rew_v == 0).all()
            for i, env in enumerate(singles):
                obs, info = env.reset()
                np.testing.assert_allclose(obs_v[i], obs, atol=1e-5)
                assert info_v["sample_id"][i] == info["sample_id"]
            continue
        assert term_v.all()
        terminal = info_v if autoreset == "NextStep" else info_v["final_info"]
        for i, env in enumerate(singles):
            obs, reward, term, _, info = env.step(actions[i])
            final = obs_v[i] if autoreset == "NextStep" else info_v["final_obs"][i]
            np.testing.assert_allclose(final, obs, atol=1e-5)
            assert rew_v[i] == pytest.approx(reward, abs=1e-5)
            for key in ("sample_id", "prediction", "token_strategy", "correct"):
                assert terminal[key][i] == info[key], key
            for key in ("flops", "attention_skip_rate", "ffn_skip_rate", "token_skip_rate"):
                assert terminal[key][i] == pytest.approx(info[key], rel=1e-12), key
            if autoreset == "SameStep":
                np.testing.assert_allclose(obs_v[i], env.reset()[0], atol=1e-5)

