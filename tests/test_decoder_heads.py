"""Distilled exit heads of decoders: the fit, their use and charge in TokenExit-v0."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import exitgym  # noqa: F401
from exitgym.backbones.decoder_heads import LayerMaps, fit_layer_maps, head_agreement
from exitgym.backbones.decoder_registry import load_decoder
from exitgym.data.decoder_heads import collect_states
from tests.tiny_decoders import random_prompts, tiny_decoder_configs

PROMPTS = random_prompts([4, 6, 3, 5], seed=2)


@pytest.fixture(scope="module")
def llama():
    return load_decoder(tiny_decoder_configs()["llama"])


def test_fit_recovers_an_exact_affine_relation() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 8, generator=gen)
    a, b = torch.randn(8, 8, generator=gen), torch.randn(8, generator=gen)
    states = torch.stack([x, x * 2.0, x @ a.T + b], dim=1)  # layer 3 = A·layer 1 + b
    maps = fit_layer_maps(states, ridge=0.0)
    assert maps.num_layers == 3 and maps.hidden_size == 8
    assert torch.allclose(maps.apply(0, x), states[:, 2], atol=1e-4)
    assert torch.allclose(maps.apply(1, x * 2.0), states[:, 2], atol=1e-4)
    assert torch.equal(maps.apply(2, x), x)  # the last layer is its own head
    assert maps.flops(2) == 0.0 and maps.flops(0) == 2 * 8 * 8 + 8


def test_distilled_heads_agree_more_with_the_last_layer_than_the_plain_head(llama) -> None:
    states = collect_states(llama, random_prompts([12] * 24, seed=5))
    assert states.shape[1:] == (llama.num_layers, llama.hidden_size)
    maps = fit_layer_maps(states)
    plain, distilled = head_agreement(llama, states), head_agreement(llama, states, maps)
    assert plain[-1] == distilled[-1] == 1.0
    assert sum(distilled[:-1]) > sum(plain[:-1])


def test_maps_round_trip_through_safetensors(tmp_path) -> None:
    maps = fit_layer_maps(torch.randn(50, 3, 4))
    maps.save(tmp_path / "m.safetensors")
    back = LayerMaps.load(tmp_path / "m.safetensors")
    assert torch.equal(back.weight, maps.weight) and torch.equal(back.bias, maps.bias)


def test_token_exit_with_distilled_heads_charges_them_and_cached_equals_live(llama) -> None:
    states = collect_states(llama, PROMPTS)
    maps = fit_layer_maps(states)
    settings = {"backbone": llama, "prompts": PROMPTS, "max_new_tokens": 3, "kv": "full",
                "teacher_forcing": True, "observation": "features", "reward": "hardness"}
    live = gym.make("exitgym/TokenExit-v0", heads=maps, **settings)
    cached = gym.make("exitgym/TokenExit-v0", heads=maps, cached=True, **settings)
    plain = gym.make("exitgym/TokenExit-v0", cached=True, **settings).unwrapped.tables
    tables = cached.unwrapped.tables
    # Each head visited costs its map too: exiting at layer l costs l maps more.
    extra = tables.flops - plain.flops
    assert np.allclose(extra[..., :-1], maps.flops(0) * np.arange(1, llama.num_layers))
    assert np.allclose(extra[..., -1], maps.flops(0) * (llama.num_layers - 1))
    assert not np.array_equal(tables.emitted[..., :-1], plain.emitted[..., :-1])
    assert np.array_equal(tables.emitted[..., -1], plain.emitted[..., -1])
    for sid in range(len(PROMPTS)):
        rewards = []
        for env in (live, cached):
            env.reset(seed=0, options={"sample_id": sid})
            got, done, step = [], False, 0
            while not done:
                _, r, done, _, info = env.step(step % 2)
                got.append(r)
                step += 1
            rewards.append((got, info["exit_layers"], info["generated_ids"]))
        assert rewards[0] == rewards[1]


def test_heads_of_another_decoder_are_refused(llama) -> None:
    wrong = fit_layer_maps(torch.randn(20, 2, llama.hidden_size))
    with pytest.raises(ValueError, match="LayerMaps are for 2 layers"):
        gym.make("exitgym/TokenExit-v0", backbone=llama, prompts=PROMPTS, heads=wrong)
    with pytest.raises(ValueError, match="heads='nope' is not supported"):
        gym.make("exitgym/TokenExit-v0", backbone=llama, prompts=PROMPTS, heads="nope")


def test_cached_envs_share_one_decoder_pass_for_equal_heads_only(llama, tmp_path,
                                                                 monkeypatch) -> None:
    """Two loads of the same heads file are two objects with one content: their envs share one
    decoder pass (the generation demo builds an env per agent, each loading the heads afresh;
    keyed by object identity every one re-ran the decoder). Other weights run their own pass."""
    from exitgym.envs import token_tables

    maps = fit_layer_maps(collect_states(llama, PROMPTS))
    maps.save(tmp_path / "m.safetensors")
    other = LayerMaps(maps.weight * 1.5, maps.bias)
    passes = []
    real = token_tables._decoder_pass
    monkeypatch.setattr(token_tables, "_decoder_pass",
                        lambda core, logits: passes.append(1) or real(core, logits))
    token_tables._MEMO.clear()
    settings = {"backbone": llama, "prompts": PROMPTS, "max_new_tokens": 3, "kv": "full",
                "teacher_forcing": True, "cached": True, "observation": "depth"}
    first = gym.make("exitgym/TokenExit-v0", heads=maps, **settings).unwrapped.tables
    again = gym.make("exitgym/TokenExit-v0", heads=LayerMaps.load(tmp_path / "m.safetensors"),
                     reward="hardness", **settings).unwrapped.tables
    assert len(passes) == 1
    assert np.array_equal(first.emitted, again.emitted) and np.array_equal(first.ce, again.ce)
    changed = gym.make("exitgym/TokenExit-v0", heads=other, **settings).unwrapped.tables
    assert len(passes) == 2
    assert not np.array_equal(changed.ce, first.ce)
