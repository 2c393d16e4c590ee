"""exitgym/EarlyExit-v0: API checkers, observations, episodes, info, determinism and errors."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env, data_equivalence
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import exitgym  # noqa: F401  (registers the environments)
from exitgym.data.synthetic import synthetic_cache
from exitgym.envs.early_exit import EarlyExitEnv
from exitgym.envs.observations import OBSERVATIONS, patience_run

VIEWS = ("features", "logits", "hidden", "prev", "depth", "hidden+prev", "depth+hidden+prev",
         "features+logits+hidden+prev")
ENV_ID = "exitgym/EarlyExit-v0"


@pytest.fixture(scope="module")
def cache():
    return synthetic_cache(num_samples=40, num_layers=6, num_labels=3, hidden_size=8, seed=1)


def make(cache, **kwargs) -> gym.Env:
    return gym.make(ENV_ID, cache=cache, **kwargs)


def test_import_does_not_load_torch() -> None:
    code = (
        "import sys, exitgym, exitgym.envs.early_exit, exitgym.envs.early_exit_vector;"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("observation", VIEWS)
@pytest.mark.parametrize(
    "options", [{}, {"dense": True, "reward": "hardness", "policy_flops": 5e3}]
)
def test_gymnasium_and_sb3_checkers_pass_without_warnings(cache, observation, options) -> None:
    env = make(cache, observation=observation, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)
        sb3_check_env(env.unwrapped, warn=True)
    assert env.observation_space.dtype == np.float32
    assert np.all(np.isfinite(env.observation_space.low))
    assert np.all(np.isfinite(env.observation_space.high))


def test_every_registered_view_is_covered(cache) -> None:
    """Every view but ``predictor`` is checked on this env; that one needs a decoder's exit
    predictor (``tests/test_token_exit.py``) and is refused here by name."""
    assert set(OBSERVATIONS) == {"features", "logits", "hidden", "prev", "depth", "predictor"}
    assert set(OBSERVATIONS) - set(VIEWS) == {"predictor"}
    with pytest.raises(ValueError, match="the 'predictor' observation needs an exit predictor"):
        make(cache, observation="depth+predictor")


def test_features_match_hand_computation(cache) -> None:
    env = make(cache, observation="features")
    sample, num_layers = 7, cache.num_layers
    obs, info = env.reset(options={"sample_id": sample})
    rows = [obs]
    while True:
        obs, _, terminated, _, info = env.step(0)
        if terminated:
            break
        rows.append(obs)
    assert len(rows) == num_layers
    predictions = cache.logits[sample].argmax(axis=-1)
    for layer, row in enumerate(rows, start=1):
        logits = cache.logits[sample, layer - 1].astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        top = np.sort(p)
        run = 1
        while run < layer and predictions[layer - 1 - run] == predictions[layer - 1]:
            run += 1
        expected = [
            layer / num_layers,
            p.max(),
            -(p * np.log(p)).sum() / math.log(3),
            top[-1] - top[-2],
            run / num_layers,
            cache.cost()[sample, layer - 1],
        ]
        np.testing.assert_allclose(row, expected, rtol=1e-6, atol=1e-6)
    assert patience_run(np.array([[0, 0, 1, 1, 1, 0]])).tolist() == [[1, 2, 1, 2, 3, 1]]


def test_hidden_prev_and_logits_views_read_the_cache(cache) -> None:
    env = make(cache, observation="hidden+prev+logits")
    hidden = cache.hidden_size
    obs, _ = env.reset(options={"sample_id": 3})
    np.testing.assert_array_equal(obs[:hidden], cache.pooled[3, 0])
    np.testing.assert_array_equal(obs[hidden : 2 * hidden], np.zeros(hidden))
    np.testing.assert_array_equal(obs[2 * hidden :], cache.logits[3, 0])
    obs, *_ = env.step(0)
    np.testing.assert_array_equal(obs[:hidden], cache.pooled[3, 1])
    np.testing.assert_array_equal(obs[hidden : 2 * hidden], cache.pooled[3, 0])
    assert env.observation_space.shape == (2 * hidden + cache.num_labels,)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("pixels", r"unknown observation view.*features"),
        ("hidden+hidden", "repeats"),
        ("", "non-empty string"),
    ],
)
def test_bad_observation_spec_is_rejected(cache, spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make(cache, observation=spec)


def test_always_continue_ends_at_the_last_layer_with_full_info(cache) -> None:
    env = make(cache)
    num_layers = cache.num_layers
    for sample in range(cache.num_samples):
        _, info = env.reset(options={"sample_id": sample})
        assert info == {"layer": 1, "cost": cache.cost()[sample, 0], "sample_id": sample}
        for step in range(1, num_layers + 1):
            _, _, terminated, truncated, info = env.step(0)
            assert truncated is False
            assert terminated is (step == num_layers)
            assert info["layer"] == min(step + 1, num_layers)
        prediction = int(cache.logits[sample, -1].argmax())
        assert info == {
            "layer": num_layers,
            "cost": cache.cost()[sample, -1],
            "sample_id": sample,
            "exit_layer": num_layers,
            "prediction": prediction,
            "label": int(cache.labels[sample]),
            "correct": prediction == int(cache.labels[sample]),
            "flops": float(cache.cum_flops[sample, -1]),
            "memorized_layer": int(cache.memorized[sample]),
            "oracle_layer": int(cache.oracle[sample]),
        }


def test_exit_at_layer_one_and_policy_flops_in_cost(cache) -> None:
    policy_flops = 1234.0
    env = make(cache, policy_flops=policy_flops)
    obs, _ = env.reset(options={"sample_id": 0})
    _, _, terminated, _, info = env.step(np.int64(1))
    assert terminated and info["exit_layer"] == 1
    full = cache.full_flops[0]
    assert info["flops"] == pytest.approx(cache.cum_flops[0, 0] + policy_flops)
    assert info["cost"] == pytest.approx((cache.cum_flops[0, 0] + policy_flops) / full)
    assert obs[-1] == pytest.approx(info["cost"], rel=1e-6)  # features end with the cost so far


def test_errors_are_clear(cache) -> None:
    env = make(cache)
    with pytest.raises(RuntimeError, match="before reset"):
        env.unwrapped.step(0)
    env.reset(seed=0)
    for bad in (2, -1, 0.5, "exit", np.array([0, 1])):
        with pytest.raises(ValueError, match=r"invalid action .*0 \(continue\) or 1 \(exit\)"):
            env.unwrapped.step(bad)
    env.step(1)
    with pytest.raises(RuntimeError, match="after the episode terminated"):
        env.unwrapped.step(0)
    for bad_id in (-1, cache.num_samples, 2.0, True):
        with pytest.raises(ValueError, match=rf"\[0, {cache.num_samples - 1}\]"):
            env.reset(options={"sample_id": bad_id})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"sample": 1})
    with pytest.raises(ValueError, match="render_mode"):
        EarlyExitEnv(cache=cache, render_mode="human")
    with pytest.raises(ValueError, match="policy_flops"):
        make(cache, policy_flops=-1.0)
    with pytest.raises(TypeError, match="must be a LayerCache"):
        EarlyExitEnv(cache={"pooled": 1})


def rollout(env: gym.Env, seed: int, steps: int) -> list:
    """Seeded rollout with seeded random actions (resets without seed after the first)."""
    records = [env.reset(seed=seed)]
    actions = np.random.default_rng(seed).integers(0, 2, size=steps)
    for action in actions:
        result = env.step(int(action))
        records.append(result)
        if result[2]:
            records.append(env.reset())
    return records


@pytest.mark.parametrize("observation", ["features", "hidden+prev"])
def test_same_seed_same_rollout_and_different_seed_differs(cache, observation: str) -> None:
    first = rollout(make(cache, observation=observation, dense=True), 11, 300)
    second = rollout(make(cache, observation=observation, dense=True), 11, 300)
    other = rollout(make(cache, observation=observation, dense=True), 12, 300)
    assert data_equivalence(first, second, exact=True)
    assert not data_equivalence(first, other)


def test_seeded_sampling_is_uniform_over_the_split(cache) -> None:
    env = make(cache)
    env.reset(seed=5)
    counts = np.bincount(
        [env.reset()[1]["sample_id"] for _ in range(4000)], minlength=cache.num_samples
    )
    assert counts.min() > 0 and counts.max() < 2 * 4000 / cache.num_samples


def test_default_arguments_load_the_prepared_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import exitgym.data.prepare

    calls = []

    def fake_get_cache(**kwargs):
        calls.append(kwargs)
        return synthetic_cache()

    monkeypatch.setattr(exitgym.data.prepare, "get_cache", fake_get_cache)
    env = gym.make(ENV_ID)
    assert calls == [
        {"task": "rt-polarity", "backbone": "minilm-l6", "split": "policy", "heads": "two-stage"}
    ]
    assert env.unwrapped.reward_shape.name == "vanilla"
    gym.make(ENV_ID, task="trec6", split="test", heads="finetune")
    assert calls[-1] == {
        "task": "trec6",
        "backbone": "minilm-l6",
        "split": "test",
        "heads": "finetune",
    }


def test_render_ansi(cache) -> None:
    env = make(cache, render_mode="ansi")
    env.reset(options={"sample_id": 2})
    assert env.render().startswith("sample 2 layer 1/6 (running)")
    env.step(1)
    assert "(exited)" in env.render()


@pytest.fixture(scope="module")
def live_setup():
    """A tiny random-init BERT with MiniLM's tokenizer, random heads and the cache they build."""
    torch = pytest.importorskip("torch")
    from transformers import AutoTokenizer, BertConfig

    from exitgym.backbones.cache import build_cache
    from exitgym.backbones.heads import ExitHeads, HeadsConfig
    from exitgym.backbones.registry import BACKBONE_ALIASES, load_backbone

    tokenizer = AutoTokenizer.from_pretrained(str(BACKBONE_ALIASES["minilm-l6"]()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    backbone = load_backbone(config, tokenizer=tokenizer, seed=0)
    torch.manual_seed(0)
    heads = ExitHeads(HeadsConfig(num_layers=4, hidden_size=32, num_labels=3)).eval()
    texts = [
        "a gripping, funny and humane film",
        "dull",
        "the plot wanders for two hours and never arrives anywhere worth the trip at all",
        "not bad, not great",
        "an instant classic !",
        "i wanted to like it more than i did",
    ]
    labels = np.array([0, 1, 2, 1, 0, 2])
    cache = build_cache(backbone, heads, texts, labels, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batch-1 live steps only contend with more threads
    yield cache, backbone, heads
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("observation", "reward", "dense"),
    [("features", "vanilla", False), ("features+logits+hidden+prev", "hardness", True)],
)
def test_live_mode_equals_cached_mode(
    live_setup, observation, reward, dense, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, backbone, heads = live_setup
    calls: list[int] = []
    run_layer = backbone.layer

    def counting_layer(i, state, **kwargs):
        calls.append(i)
        return run_layer(i, state, **kwargs)

    monkeypatch.setattr(backbone, "layer", counting_layer)
    kwargs = {"cache": cache, "observation": observation, "reward": reward, "dense": dense}
    cached = gym.make(ENV_ID, **kwargs)
    live = gym.make(ENV_ID, live=True, backbone=backbone, heads=heads, **kwargs)
    assert live.observation_space == cached.observation_space
    for sample in range(cache.num_samples):
        for exit_layer in range(1, cache.num_layers + 1):
            obs_c, _ = cached.reset(options={"sample_id": sample})
            calls.clear()
            obs_l, _ = live.reset(options={"sample_id": sample})
            np.testing.assert_allclose(obs_l, obs_c, atol=1e-5)
            for layer in range(1, exit_layer + 1):
                action = int(layer == exit_layer)
                obs_c, r_c, term_c, _, info_c = cached.step(action)
                obs_l, r_l, term_l, _, info_l = live.step(action)
                np.testing.assert_allclose(obs_l, obs_c, atol=1e-5)
                assert live.observation_space.contains(obs_l)
                assert r_l == pytest.approx(r_c, abs=1e-5)
                assert term_l == term_c
                assert info_l.keys() == info_c.keys()
                assert (
                    info_l["prediction" if term_c else "layer"]
                    == info_c["prediction" if term_c else "layer"]
                )
            # Live mode really ran the backbone, one layer per step and no further.
            assert calls == list(range(exit_layer))
