"""exitgym/TokenExit-v0: greedy reproduction, kv modes and their FLOPs, cached = live, checkers."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import exitgym  # noqa: F401  (registers the environments)
from exitgym.backbones import hf_compat
from exitgym.backbones.decoder_registry import load_decoder
from tests.tiny_decoders import random_prompts, tiny_decoder_configs

PROMPTS = random_prompts([4, 7, 2], seed=0)
TOKENS = 5


@pytest.fixture(scope="module")
def llama():
    return load_decoder(tiny_decoder_configs()["llama"])


def make(bb, **kwargs):
    return gym.make("exitgym/TokenExit-v0", backbone=bb, prompts=PROMPTS,
                    **{"max_new_tokens": TOKENS, **kwargs})


def play(env, sample_id: int, actions) -> tuple[list[float], list[np.ndarray], dict]:
    """Run one episode; ``actions(step)`` gives each action. Returns rewards, observations, info;
    the info of every exit is kept in ``info["exits"]``."""
    obs, info = env.reset(seed=0, options={"sample_id": sample_id})
    rewards, observations, exits, done, step = [], [obs], [], False, 0
    while not done:
        obs, reward, done, truncated, info = env.step(actions(step))
        assert not truncated
        rewards.append(float(reward))
        observations.append(obs)
        if "exit_layer" in info:
            exits.append(dict(info, reward=float(reward)))
        step += 1
    return rewards, observations, {**info, "exits": exits}


def random_actions(seed: int):
    rng = np.random.default_rng(seed)
    return lambda step: int(rng.random() < 0.35)


@pytest.mark.parametrize("kv", ["copy", "recompute", "full"])
@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_never_exiting_reproduces_greedy_generate(kv: str, model_type: str) -> None:
    bb = load_decoder(tiny_decoder_configs()[model_type])
    env = make(bb, kv=kv)
    for sid, prompt in enumerate(PROMPTS):
        _, _, info = play(env, sid, lambda step: 0)
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            expected = hf_compat.greedy_generate(bb.model, ids, torch.ones_like(ids), TOKENS)
        assert info["generated_ids"] == expected[0].tolist()
        assert info["reference_ids"] == info["generated_ids"]
        assert info["exit_layers"] == [bb.num_layers] * TOKENS and info["agreement"] == 1.0


@pytest.mark.parametrize("reward,observation,policy_flops", [
    ("vanilla", "features+hidden", 0.0), ("hardness", "features+hidden", 0.0),
    ("accuracy", "features+hidden", 0.0), ("hardness", "depth+hidden+prev", 1234.5),
    ("vanilla", "features", 777.0)])
def test_cached_mode_equals_live_mode_with_full_kv_and_teacher_forcing(
        llama, reward, observation, policy_flops) -> None:
    """Also after the cached envs of other views / policy costs reused one decoder pass."""
    settings = {"kv": "full", "teacher_forcing": True, "reward": reward,
                "observation": observation, "policy_flops": policy_flops}
    live, cached = make(llama, **settings), make(llama, cached=True, **settings)
    for sid in range(len(PROMPTS)):
        for seed in range(3):
            r_live, o_live, i_live = play(live, sid, random_actions(seed))
            r_cached, o_cached, i_cached = play(cached, sid, random_actions(seed))
            assert r_live == r_cached
            assert all(np.array_equal(a, b) for a, b in zip(o_live, o_cached, strict=True))
            for key in ("generated_ids", "reference_ids", "exit_layers", "agreement", "flops"):
                assert i_live[key] == i_cached[key], key


def test_recompute_catches_up_to_the_full_models_cache_and_copy_does_not(llama) -> None:
    """Recompute fills skipped layers with the real states, so it generates what `full` does."""
    runs = {kv: play(make(llama, kv=kv, reward="vanilla"), 1, random_actions(4))
            for kv in ("copy", "recompute", "full")}
    i_copy, i_rec, i_full = (runs[kv][2] for kv in ("copy", "recompute", "full"))
    assert i_rec["generated_ids"] == i_full["generated_ids"]
    assert min(i_rec["exit_layers"]) < llama.num_layers  # some token did exit early

    def quality(info: dict) -> np.ndarray:  # vanilla: reward = −CE − 0.2·cost
        return np.array([e["reward"] + 0.2 * e["token_cost"] for e in info["exits"]])

    assert np.allclose(quality(i_rec), quality(i_full), rtol=0, atol=1e-5)
    # Copy fills the skipped layers with the exit state: later tokens see a different cache.
    assert not np.allclose(quality(i_copy), quality(i_full), rtol=0, atol=1e-3)
    # Costs differ: recompute pays its catch-up chunks, full only its exit path.
    assert i_rec["flops"] > i_full["flops"]
    assert i_full["flops_computed"] > i_full["flops"]


def test_token_flops_are_charged_as_each_mode_computes(llama) -> None:
    """Token 1 exits at layer 1 (token 0 ran to the top): the exact arithmetic of each mode."""
    f, L = llama.flops, llama.num_layers
    prompt_len = len(PROMPTS[0])
    actions = [0] * (L - 1) + [1]  # token 0 runs every layer; token 1 exits at layer 1
    for kv in ("copy", "recompute", "full"):
        env = make(llama, kv=kv, observation="hidden")  # no heads before the exit
        env.reset(seed=0, options={"sample_id": 0})
        for a in actions[:-1]:
            env.step(a)
        info = env.step(1)[-1]
        n0 = prompt_len  # token 0 sits at position prompt_len - 1
        assert info["token_cost"] == pytest.approx(1.0)
        info = env.step(1)[-1]  # token 1 exits at layer 1
        n1 = n0 + 1
        path = f.embeddings(1) + f.layer(1, n1) + f.head(1)
        extra = {"copy": (L - 1) * f.kv_only(1), "recompute": 0.0, "full": 0.0}[kv]
        assert info["token_cost"] == pytest.approx((path + extra) / f.token(n1), rel=1e-12)
        if kv == "recompute":  # token 2 reaches layer 2 with token 1 pending there: a 2-chunk
            env.step(0)
            info = env.step(1)[-1]
            expected = (f.embeddings(1) + f.layer(1, n1 + 1) + f.layer(2, n1 + 1) + f.head(1))
            assert info["token_cost"] == pytest.approx(expected / f.token(n1 + 1), rel=1e-12)


def test_both_checkers_pass(llama) -> None:
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    from exitgym.backbones.exit_predictor import fit_predictor

    g = torch.Generator().manual_seed(1)
    shape = (32, llama.num_layers, llama.hidden_size)
    pred = fit_predictor(torch.randn(*shape, generator=g), torch.rand(*shape[:2], generator=g) > .5)
    for kwargs in ({"kv": "copy"}, {"kv": "recompute", "observation": "hidden+prev"},
                   {"kv": "full", "teacher_forcing": True, "cached": True},
                   {"observation": "depth+predictor", "predictor": pred}):
        env = make(llama, **kwargs)
        gym_check(env.unwrapped, skip_render_check=True)
        sb3_check(env.unwrapped, warn=True)


def test_bad_input_gets_clear_errors(llama) -> None:
    with pytest.raises(ValueError, match="cached=True needs kv='full' and teacher_forcing"):
        make(llama, cached=True)
    with pytest.raises(ValueError, match="unknown kv mode 'skip'"):
        make(llama, kv="skip")
    with pytest.raises(ValueError, match="heads='frozen' is not supported.*lm-head"):
        make(llama, heads="frozen")
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1"):
        make(llama, max_new_tokens=0)
    with pytest.raises(ValueError, match="prompts\\[1\\] must be a text or a non-empty list"):
        gym.make("exitgym/TokenExit-v0", backbone=llama, prompts=[[3], []])
    env = make(llama).unwrapped
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="invalid action 2"):
        env.step(2)


@pytest.mark.parametrize("kv,cached", [("copy", False), ("recompute", False), ("full", True)])
def test_vector_env_equals_n_single_envs(llama, kv: str, cached: bool) -> None:
    """Same seeds and actions: same prompts, tokens and exits; equal rewards (exact if cached)."""
    n, steps = 3, 40
    settings = {"kv": kv, "teacher_forcing": cached, "cached": cached, "reward": "vanilla"}
    venv = gym.make_vec("exitgym/TokenExit-v0", num_envs=n, vectorization_mode="vector_entry_point",
                        backbone=llama, prompts=PROMPTS, max_new_tokens=3, **settings)
    singles = [gym.make("exitgym/TokenExit-v0", backbone=llama, prompts=PROMPTS, max_new_tokens=3,
                        **settings).unwrapped for _ in range(n)]
    rng = np.random.default_rng(1)
    obs, info = venv.reset(seed=7)
    single_obs = [env.reset(seed=7 + i)[0] for i, env in enumerate(singles)]
    assert info["sample_id"].tolist() == [env._episodes[0].sample_id for env in singles]
    assert np.allclose(obs, np.stack(single_obs), atol=1e-5)
    pending = np.zeros(n, dtype=bool)
    finished = 0
    for _ in range(steps):
        actions = (rng.random(n) < 0.4).astype(np.int64)
        obs, rewards, terminated, _, info = venv.step(actions)
        for i, env in enumerate(singles):
            if pending[i]:  # NEXT_STEP autoreset: this step reset the sub-env
                o, i_info = env.reset()
                assert rewards[i] == 0.0 and info["sample_id"][i] == i_info["sample_id"]
            else:
                o, r, done, _, i_info = env.step(int(actions[i]))
                assert terminated[i] == done
                if cached:
                    assert rewards[i] == r
                else:
                    assert rewards[i] == pytest.approx(r, abs=1e-5)
                if done:
                    finished += 1
                    assert info["generated_ids"][i] == i_info["generated_ids"]
                    assert info["exit_layers"][i] == i_info["exit_layers"]
            assert np.allclose(obs[i], o, atol=1e-4)
        pending = terminated
    assert finished >= n


def test_cached_tables_of_one_pass_equal_fresh_ones_and_batched_ones_match(llama) -> None:
    """The memoized decoder pass serves other views and charges exactly as a fresh build does;
    prompts built side by side (``table_batch``) give the same tokens and near-equal numbers."""
    from exitgym.envs import token_tables

    base = {"kv": "full", "teacher_forcing": True, "cached": True}
    make(llama, observation="features", **base)  # fills the memo for these prompts
    reused = make(llama, observation="depth+prev", policy_flops=99.0, reward="hardness",
                  **base).unwrapped.tables
    token_tables._MEMO.clear()
    fresh = make(llama, observation="depth+prev", policy_flops=99.0, reward="hardness",
                 **base).unwrapped.tables
    batched = make(llama, observation="depth+prev", policy_flops=99.0, reward="hardness",
                   table_batch=3, **base).unwrapped.tables
    for name in ("obs", "cost", "flops", "computed", "ce", "emitted", "reference", "memorized"):
        assert np.array_equal(getattr(reused, name), getattr(fresh, name)), name
        assert np.allclose(getattr(batched, name), getattr(fresh, name), rtol=1e-4,
                           atol=1e-4), name
    assert np.array_equal(batched.emitted, fresh.emitted)
    with pytest.raises(ValueError, match="table_batch must be an integer >= 1"):
        make(llama, table_batch=0, **base)


def test_live_features_read_each_heads_statistics_once_and_equal_a_full_recompute(llama) -> None:
    """The live env keeps each head's softmax statistics instead of recomputing them over every
    layer so far on every step; the observation must equal the view computed afresh from all the
    token's logits (the definition), at every step of an episode with exits."""
    env = make(llama, kv="copy", observation="features+logits").unwrapped
    rng = np.random.default_rng(3)
    obs, _ = env.reset(seed=0, options={"sample_id": 1})
    checked, done = 0, False
    while not done:
        runner, li = env._runner, int(env._layer[0])
        logits = np.stack([runner.logits[0][i].numpy() for i in range(li + 1)])
        fresh = env.observe(runner.hidden[0, : li + 1].numpy(), logits,
                            np.asarray(env._costs[0]))
        assert np.array_equal(obs, fresh)
        checked += 1
        obs, _, done, _, _ = env.step(int(rng.random() < 0.3))
    assert checked > TOKENS


def test_head_stats_in_torch_are_the_features_softmax_stats() -> None:
    """The live env and the cached tables compute each head's statistics batched in torch; they
    are the ``features`` view's definition (numpy ``softmax_stats``) to float64 rounding."""
    import torch

    from exitgym.envs.observations import softmax_stats
    from exitgym.envs.token_runner import head_stats

    logits = torch.randn(5, 7, 301, generator=torch.Generator().manual_seed(0)) * 4
    logits[0, 0, :] = 0.0  # uniform: entropy 1, margin 0
    got, want = head_stats(logits), softmax_stats(logits.numpy())
    np.testing.assert_array_equal(got.prediction, want.prediction)
    for name in ("max_prob", "norm_entropy", "margin"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=0, atol=1e-12)
    assert got.norm_entropy[0, 0] == pytest.approx(1.0) and got.margin[0, 0] == 0.0


def test_the_predictor_view_is_the_exit_predictors_probability_charged_and_cached(llama) -> None:
    """``predictor``: P(agree) of the current layer from a fitted ExitPredictor, the same in the
    live and the cached env, its 2·H + 2 FLOPs charged per layer as the policy's; refused with
    a clear error where there is no predictor."""
    import torch

    from exitgym.backbones.exit_predictor import fit_predictor

    g = torch.Generator().manual_seed(0)
    L, H = llama.num_layers, llama.hidden_size
    pred = fit_predictor(torch.randn(64, L, H, generator=g) * 3,
                         torch.rand(64, L, generator=g) > 0.5)
    settings = {"kv": "full", "teacher_forcing": True, "reward": "vanilla",
                "observation": "depth+hidden+predictor", "predictor": pred}
    live, cached = make(llama, **settings), make(llama, cached=True, **settings)
    plain = make(llama, **{**settings, "observation": "depth+hidden"})
    for sid in range(len(PROMPTS)):
        r_live, o_live, i_live = play(live, sid, random_actions(sid))
        r_cached, o_cached, _ = play(cached, sid, random_actions(sid))
        assert r_live == r_cached
        assert all(np.array_equal(a, b) for a, b in zip(o_live, o_cached, strict=True))
        _, o_plain, i_plain = play(plain, sid, random_actions(sid))
        for o, p in zip(o_live, o_plain, strict=True):  # depth (layer, cost) + hidden + P
            np.testing.assert_array_equal(o[:1], p[:1])
            np.testing.assert_array_equal(o[2:-1], p[2:])
            assert o[1] > p[1]  # the cost so far includes the predictor's FLOPs
        layers = np.array(i_live["exit_layers"])
        assert i_live["exit_layers"] == i_plain["exit_layers"]
        extra = i_live["flops"] - i_plain["flops"]
        assert extra == pytest.approx(layers.sum() * pred.flops())  # every layer visited
    obs, _ = live.reset(options={"sample_id": 0})
    hidden = torch.from_numpy(obs[2:2 + H].astype(np.float64))
    assert obs[-1] == pytest.approx(float(pred.probability(0, hidden)), abs=1e-6)
    with pytest.raises(ValueError, match="the 'predictor' observation needs an exit predictor"):
        make(llama, observation="depth+predictor")
