"""SkipBlock-v0 and SwitchableDecision-v0 on decoder backbones: skips held for a continuation.

References are computed without exitgym's stepping: Hugging Face ``generate`` and plain forwards
of the model with a sub-block's output replaced by zeros (the residual passes unchanged).
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import exitgym  # noqa: F401  (registers the environments)
from exitgym.backbones import hf_compat
from exitgym.backbones.decoder_registry import load_decoder
from exitgym.envs.skip_block import EXIT, RUN, SKIP_ATTENTION, SKIP_FFN, SKIP_LAYER
from tests.tiny_decoders import random_prompts, tiny_decoder_configs

PROMPTS = random_prompts([4, 7, 2, 5], seed=3)
TOKENS = 6
MODEL_TYPES = ("llama", "gpt2")


@pytest.fixture(scope="module", params=MODEL_TYPES)
def decoder(request):
    return load_decoder(tiny_decoder_configs()[request.param])


def skip_block(bb, **kwargs):
    return gym.make("exitgym/SkipBlock-v0", backbone=bb, prompts=PROMPTS,
                    **{"max_new_tokens": TOKENS, **kwargs})


def switchable(bb, **kwargs):
    return gym.make("exitgym/SwitchableDecision-v0", backbone=bb, prompts=PROMPTS,
                    **{"max_new_tokens": TOKENS, **kwargs})


def sub_blocks(bb, layer: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The attention and MLP modules of a 0-based layer of the Hugging Face model."""
    model = bb.model
    if bb.family == "gpt2":
        block = model.transformer.h[layer]
        return block.attn, block.mlp
    block = model.model.layers[layer]
    return block.self_attn, block.mlp


def _zero_output(module, args, output):
    if isinstance(output, tuple):
        return (torch.zeros_like(output[0]), *output[1:])
    return torch.zeros_like(output)


def hf_greedy_without(bb, prompt: list[int], attention: list[int], mlp: list[int]) -> list[int]:
    """Greedy continuation by full forwards (no cache) with the given 0-based layers' attention /
    MLP outputs replaced by zeros: the independent reference of held skips."""
    hooks = []
    for layer in attention:
        hooks.append(sub_blocks(bb, layer)[0].register_forward_hook(_zero_output))
    for layer in mlp:
        hooks.append(sub_blocks(bb, layer)[1].register_forward_hook(_zero_output))
    ids = list(prompt)
    try:
        with torch.inference_mode():
            for _ in range(TOKENS):
                logits = bb.model(torch.tensor([ids]), use_cache=False).logits[0, -1]
                ids.append(int(logits.argmax()))
    finally:
        for hook in hooks:
            hook.remove()
    return ids[len(prompt):]


def hf_reference_ce(bb, prompt: list[int], reference: list[int]) -> float:
    """Mean −log p(reference_j | prompt, reference_<j) of the full model (one HF forward)."""
    with torch.inference_mode():
        logits = bb.model(torch.tensor([prompt + reference[:-1]]), use_cache=False).logits[0]
    logp = torch.log_softmax(logits[len(prompt) - 1:].double(), dim=-1)
    return float(-logp[torch.arange(TOKENS), torch.tensor(reference)].mean())


def full_episode_flops(bb, n: int) -> float:
    f = bb.flops
    return float(f.prompt(n) + sum(f.token(n + j) for j in range(1, TOKENS)))


def attention_block_flops(bb, n: int) -> float:
    """One layer's attention over the prefill and every later token, from the matmul and
    element-wise parts of the FLOPs model."""
    f = bb.flops
    prefill = f.attention_matmul(n, n) + f.attention_elementwise(n, n)
    tokens = sum(f.attention_matmul(1, n + j) + f.attention_elementwise(1, n + j)
                 for j in range(1, TOKENS))
    return float(prefill + tokens)


def ffn_block_flops(bb, n: int) -> float:
    f = bb.flops
    return float(TOKENS - 1 + n) * float(f.ffn_matmul(1) + f.ffn_elementwise(1))


def play_block(env, sample_id: int, actions: list[int]) -> tuple[list[float], dict]:
    env.reset(seed=0, options={"sample_id": sample_id})
    rewards, done, info, k = [], False, {}, 0
    while not done:
        _, reward, done, truncated, info = env.step(actions[k] if k < len(actions) else RUN)
        assert not truncated
        rewards.append(float(reward))
        k += 1
    return rewards, info


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_checkers_pass_without_warnings(model_type: str) -> None:
    bb = load_decoder(tiny_decoder_configs()[model_type])
    envs = [skip_block(bb), skip_block(bb, allow_exit=True, dense=True), switchable(bb)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for env in envs:
            gym_check_env(env.unwrapped, skip_render_check=False)
            sb3_check_env(env.unwrapped, warn=True)
    assert envs[1].action_space == gym.spaces.Discrete(5)
    assert envs[2].action_space == gym.spaces.MultiDiscrete([2] * 4)  # no token strategy
    assert envs[0].observation_space.shape == (bb.hidden_size + 2,)


def test_nothing_skipped_is_hf_greedy_generate_with_agreement_one(decoder) -> None:
    block, sd = skip_block(decoder), switchable(decoder, reward="vanilla", alpha=0.2)
    for sid, prompt in enumerate(PROMPTS):
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            expected = hf_compat.greedy_generate(decoder.model, ids, torch.ones_like(ids), TOKENS)
        expected_ids = expected[0].tolist()
        ce = hf_reference_ce(decoder, prompt, expected_ids)
        rewards, info = play_block(block, sid, [])
        sd.reset(options={"sample_id": sid})
        _, sd_reward, _, _, sd_info = sd.step(np.zeros(4, dtype=np.int64))
        for inf in (info, sd_info):
            assert inf["generated_ids"] == expected_ids
            assert inf["reference_ids"] == expected_ids
            assert inf["agreement"] == 1.0 and inf["correct"]
            assert inf["cost"] == pytest.approx(1.0, rel=1e-12)
            assert inf["flops"] == pytest.approx(full_episode_flops(decoder, len(prompt)),
                                                 rel=1e-12)
            assert inf["ce"] == pytest.approx(ce, abs=1e-4)
            assert inf["skipped_attention"] == [] and inf["skipped_ffn"] == []
        assert sum(rewards) == pytest.approx(-ce - 0.2, abs=1e-4)
        assert sd_reward == pytest.approx(-ce - 0.2, abs=1e-4)


@pytest.mark.parametrize("what", ["attention", "ffn", "both"])
def test_a_skipped_block_is_charged_nothing_over_the_whole_episode(decoder, what: str) -> None:
    env = switchable(decoder)
    for sid, prompt in enumerate(PROMPTS):
        n = len(prompt)
        action = np.zeros(4, dtype=np.int64)
        saved = 0.0
        if what in ("attention", "both"):
            action[1] = 1  # attention of layer 3
            saved += attention_block_flops(decoder, n)
        if what in ("ffn", "both"):
            action[2] = 1  # feed-forward of layer 2
            saved += ffn_block_flops(decoder, n)
        env.reset(options={"sample_id": sid})
        info = env.step(action)[-1]
        full = full_episode_flops(decoder, n)
        assert info["full_flops"] == pytest.approx(full, rel=1e-12)
        assert info["flops"] == pytest.approx(full - saved, rel=1e-12)
        assert info["cost"] == pytest.approx((full - saved) / full, rel=1e-12)


def test_held_skips_match_a_hand_run_model_with_identity_blocks(decoder) -> None:
    full = [hf_greedy_without(decoder, p, [], []) for p in PROMPTS]
    sd = switchable(decoder)
    block = skip_block(decoder, allow_exit=True)
    changed = 0
    for sid, prompt in enumerate(PROMPTS):
        # SwitchableDecision: no attention in layer 2, no FFN in layer 3.
        expected = hf_greedy_without(decoder, prompt, attention=[1], mlp=[2])
        sd.reset(options={"sample_id": sid})
        info = sd.step(np.array([1, 0, 0, 1]))[-1]
        assert info["generated_ids"] == expected
        assert info["reference_ids"] == full[sid]
        agreement = np.mean(np.array(expected) == np.array(full[sid]))
        assert info["agreement"] == pytest.approx(agreement)
        assert info["skipped_attention"] == [2] and info["skipped_ffn"] == [3]
        changed += expected != full[sid]
        # SkipBlock: layer 2 without its FFN, then exit (layer 3 never runs, for any token).
        _, exit_info = play_block(block, sid, [SKIP_FFN, EXIT])
        assert exit_info["exit_layer"] == 2
        assert exit_info["generated_ids"] == hf_greedy_without(decoder, prompt, [2], [1, 2])
        _, layer_info = play_block(block, sid, [SKIP_LAYER, SKIP_ATTENTION])
        assert layer_info["generated_ids"] == hf_greedy_without(decoder, prompt, [1, 2], [1])
    assert changed > 0  # the skips matter on this random model, so the equality has teeth


def test_dense_and_terminal_returns_agree(decoder) -> None:
    dense, terminal = skip_block(decoder, dense=True), skip_block(decoder)
    for sid in range(len(PROMPTS)):
        actions = [SKIP_ATTENTION, SKIP_FFN]
        r_dense, info_d = play_block(dense, sid, actions)
        r_term, info_t = play_block(terminal, sid, actions)
        assert len(r_dense) == 2 and r_dense[0] != 0.0 and r_term[0] == 0.0
        assert sum(r_dense) == pytest.approx(sum(r_term), abs=1e-9)
        assert info_d["generated_ids"] == info_t["generated_ids"]


def test_sample_id_reruns_the_same_episode_exactly(decoder) -> None:
    env = skip_block(decoder, allow_exit=True, dense=True)
    first = play_block(env, 2, [SKIP_ATTENTION, RUN])
    play_block(env, 0, [SKIP_LAYER, EXIT])
    again = play_block(env, 2, [SKIP_ATTENTION, RUN])
    assert first[0] == again[0]
    assert first[1] == again[1]
    obs_a, _ = env.reset(seed=5)
    obs_b, _ = env.reset(seed=5)
    np.testing.assert_array_equal(obs_a, obs_b)


@pytest.mark.parametrize("autoreset", ["NextStep", "SameStep"])
def test_skip_block_vector_env_equals_single_envs(decoder, autoreset: str) -> None:
    n, seed = 3, 7
    kwargs = {"backbone": decoder, "prompts": PROMPTS, "max_new_tokens": TOKENS,
              "allow_exit": True, "dense": True}
    venv = gym.make_vec("exitgym/SkipBlock-v0", num_envs=n,
                        vectorization_mode="vector_entry_point", autoreset_mode=autoreset,
                        **kwargs)
    actions = np.random.default_rng(1).integers(0, 5, (10, n))
    first_obs = venv.reset(seed=seed)[0]
    vector = [venv.step(a) for a in actions]  # the whole vector run first, then each single
    finished = 0
    for i in range(n):
        env = gym.make("exitgym/SkipBlock-v0", **kwargs)
        np.testing.assert_allclose(first_obs[i], env.reset(seed=seed + i)[0], atol=1e-5)
        reset_next = False
        for (obs_v, rew_v, term_v, _, info_v), action in zip(vector, actions[:, i], strict=True):
            if reset_next:
                (obs, _), reward, term = env.reset(), 0.0, False
            else:
                obs, reward, term, _, info = env.step(action)
            if term:
                finished += 1
                end = info_v["final_info"] if autoreset == "SameStep" else info_v
                assert [end[k][i] for k in ("generated_ids", "exit_layer", "skipped_ffn")] == \
                    [info[k] for k in ("generated_ids", "exit_layer", "skipped_ffn")]
                assert end["ce"][i] == pytest.approx(info["ce"], abs=1e-5)
                assert end["cost"][i] == pytest.approx(info["cost"], rel=1e-9)
                if autoreset == "SameStep":
                    obs = env.reset()[0]
            np.testing.assert_allclose(obs_v[i], obs, atol=1e-5)
            assert (rew_v[i], term_v[i]) == (pytest.approx(reward, abs=1e-5), term)
            reset_next = term and autoreset == "NextStep"
    assert finished >= n


def test_switchable_vector_env_equals_single_envs(decoder) -> None:
    n = 4
    kwargs = {"backbone": decoder, "prompts": PROMPTS, "max_new_tokens": TOKENS}
    venv = gym.make_vec("exitgym/SwitchableDecision-v0", num_envs=n,
                        vectorization_mode="vector_entry_point", autoreset_mode="SameStep",
                        **kwargs)
    single = gym.make("exitgym/SwitchableDecision-v0", **kwargs)
    venv.reset(seed=0, options={"sample_id": np.arange(n)})
    actions = np.random.default_rng(2).integers(0, 2, (n, 4))
    _, rew_v, _, _, info_v = venv.step(actions)
    for i in range(n):
        single.reset(options={"sample_id": i})
        _, reward, _, _, info = single.step(actions[i])
        assert rew_v[i] == pytest.approx(reward, abs=1e-5)
        assert info_v["final_info"]["generated_ids"][i] == info["generated_ids"]
        assert info_v["final_info"]["flops"][i] == pytest.approx(info["flops"], rel=1e-12)


def test_bad_arguments_name_what_is_wrong(decoder) -> None:
    with pytest.raises(ValueError, match="token_strategy=True is for encoder"):
        skip_block(decoder, token_strategy=True)
    with pytest.raises(ValueError, match="hardness"):
        skip_block(decoder, reward="hardness")
    with pytest.raises(ValueError, match=r"\['inputs', 'labels'\] apply to encoder"):
        skip_block(decoder, inputs=["a"], labels=[0])
    with pytest.raises(ValueError, match="heads='frozen' applies to encoder"):
        switchable(decoder, heads="frozen")
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1"):
        switchable(decoder, max_new_tokens=0)
    with pytest.raises(ValueError, match="prompts= is for decoder backbones"):
        gym.make("exitgym/SkipBlock-v0", prompts=["hello"])
    env = switchable(decoder)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(4,\): 0/1 skip flags"):
        env.step(np.zeros(5, dtype=np.int64))  # the encoder layout with a token strategy
