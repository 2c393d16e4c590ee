"""Trained exit heads of a frozen decoder (low-rank adapters): training, caching, charging."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import exitgym  # noqa: F401
from exitgym.backbones.decoder_adapters import (
    AdapterTraining,
    LowRankMaps,
    adapter_kl,
    init_adapters,
    train_adapters,
)
from exitgym.backbones.decoder_heads import head_agreement
from exitgym.backbones.decoder_registry import load_decoder
from exitgym.data import trained_heads as recipe
from exitgym.data.decoder_heads import collect_states
from tests.tiny_decoders import random_prompts, tiny_decoder_configs

TRAIN = AdapterTraining(rank=8, top_k=8, epochs=30, batch=64, lr=1e-2, seed=3)
PROMPTS = {"train": random_prompts([10] * 12, seed=7), "validation": random_prompts([8] * 4, 8)}


@pytest.fixture(scope="module")
def llama():
    return load_decoder(tiny_decoder_configs()["llama"])


@pytest.fixture(scope="module")
def states(llama):
    return recipe.continuation_states(llama, PROMPTS["train"], new_tokens=4)


def test_continuations_are_the_decoders_greedy_tokens(llama) -> None:
    got = recipe.continuation_states(llama, PROMPTS["train"][:2], new_tokens=4)
    cont = llama.greedy(PROMPTS["train"][:2], 3).tolist()
    seqs = [p + c for p, c in zip(PROMPTS["train"][:2], cont, strict=True)]
    assert got.shape == (2 * (10 + 3), llama.num_layers, llama.hidden_size)
    assert torch.equal(got, collect_states(llama, seqs))


def test_training_lowers_the_kl_and_raises_agreement_over_the_plain_head(llama, states) -> None:
    init = init_adapters(llama.num_layers, llama.hidden_size, TRAIN.rank, TRAIN.seed)
    assert torch.equal(init.apply(0, states[:, 0]), states[:, 0])  # init = the plain LM head
    maps = train_adapters(llama, states, TRAIN)
    before, after = adapter_kl(llama, init, states, 8), adapter_kl(llama, maps, states, 8)
    assert all(a < 0.8 * b for a, b in zip(after, before, strict=True))
    plain, trained = head_agreement(llama, states), head_agreement(llama, states, maps)
    assert plain[-1] == trained[-1] == 1.0
    assert sum(trained[:-1]) > sum(plain[:-1]) + 0.1


def test_warm_start_is_the_truncated_ridge_map(states) -> None:
    from exitgym.backbones.decoder_heads import fit_layer_maps

    ridge = fit_layer_maps(states)
    full = init_adapters(3, 32, 32, seed=0, warm=ridge)  # rank H: the map's linear part exactly
    h = states[:, 0]
    assert torch.allclose(full.apply(0, h), h @ ridge.weight[0].T, atol=1e-3, rtol=1e-4)
    low = init_adapters(3, 32, 4, seed=0, warm=ridge)
    residual = ridge.weight[1] - torch.eye(32)
    best = torch.linalg.matrix_norm(residual - low.up[1] @ low.down[1], ord=2)
    assert best == pytest.approx(float(torch.linalg.svdvals(residual)[4]), rel=1e-4)


def test_training_is_deterministic_and_round_trips(llama, states, tmp_path) -> None:
    config = AdapterTraining(rank=4, top_k=8, epochs=2, batch=32, seed=1)
    a, b = train_adapters(llama, states, config), train_adapters(llama, states, config)
    assert torch.equal(a.down, b.down) and torch.equal(a.up, b.up)
    assert a.fingerprint == b.fingerprint
    a.save(tmp_path / "a.safetensors")
    back = LowRankMaps.load(tmp_path / "a.safetensors")
    assert torch.equal(back.up, a.up) and back.fingerprint == a.fingerprint
    other = train_adapters(llama, states, AdapterTraining(rank=4, top_k=8, epochs=2, batch=32,
                                                          seed=2))
    assert not torch.equal(other.up, a.up)


def test_bad_states_and_settings_are_refused(llama) -> None:
    with pytest.raises(ValueError, match=r"states must be \[N >= 1, 3, 32\]"):
        train_adapters(llama, torch.zeros(5, 2, 32))
    with pytest.raises(ValueError, match="rank, top_k and batch must be >= 1"):
        train_adapters(llama, torch.zeros(5, 3, 32), AdapterTraining(rank=0))


def test_prepare_caches_and_reuses_and_reports_agreement(llama, monkeypatch) -> None:
    config = recipe.TrainedHeadsConfig(new_tokens=4, training=TRAIN)
    maps, predictor, meta = recipe.prepare_trained(llama, "tiny", config, progress=False,
                                                   prompts=PROMPTS)
    directory = next((recipe.cache_dir() / "prepared").glob("tiny__*__trained-*"))
    assert sorted(p.name for p in directory.iterdir()) == ["adapters.safetensors", "meta.json",
                                                           "predictor.safetensors"]
    assert json.loads((directory / "meta.json").read_text()) == json.loads(json.dumps(meta))
    assert meta["positions"] == {"train": 12 * 13, "validation": 4 * 11}
    agree = meta["agreement_validation"]
    assert set(agree) == {"lm-head", "distilled", "trained"}
    assert agree["trained"][-1] == 1.0 and len(agree["trained"]) == llama.num_layers
    assert all(t < i for t, i in zip(meta["kl_train"]["trained"], meta["kl_train"]["init"],
                                     strict=True))
    assert meta["head_flops_extra"] == {"trained": 4 * 32 * 8 + 32,
                                        "distilled": 2 * 32 * 32 + 32}
    rows = recipe.agreement_rows(meta)
    assert rows[0] == {"layer": 1, "lm-head": agree["lm-head"][0],
                       "distilled": agree["distilled"][0], "trained": agree["trained"][0]}
    report = meta["predictor_validation"]
    assert report["agreement"] == pytest.approx(agree["trained"])
    assert report["accuracy"][-1] == report["mean_p"][-1] == 1.0
    assert meta["predictor_flops"] == 2 * 32 + 2
    monkeypatch.setattr(recipe, "train_adapters", lambda *a, **k: pytest.fail("retrained"))
    again, pred2, meta2 = recipe.prepare_trained(llama, "tiny", config, progress=False,
                                                 prompts=PROMPTS)
    assert meta2 == meta and again.fingerprint == maps.fingerprint
    assert pred2.fingerprint == predictor.fingerprint


def test_named_recipe_needs_a_tokenizer_or_prompts(llama) -> None:
    with pytest.raises(ValueError, match="heads='trained' needs a decoder with a tokenizer"):
        recipe.prepare_trained(llama, "tiny", progress=False)


def test_token_exit_charges_the_adapters_per_head_visited(llama, states) -> None:
    maps = train_adapters(llama, states, AdapterTraining(rank=4, top_k=8, epochs=1, batch=64))
    prompts = PROMPTS["validation"]
    settings = {"backbone": llama, "prompts": prompts, "max_new_tokens": 3, "kv": "full",
                "teacher_forcing": True, "observation": "features", "cached": True}
    tables = gym.make("exitgym/TokenExit-v0", heads=maps, **settings).unwrapped.tables
    plain = gym.make("exitgym/TokenExit-v0", **settings).unwrapped.tables
    per_head = 4.0 * llama.hidden_size * 4 + llama.hidden_size
    assert maps.flops(0) == per_head and maps.flops(llama.num_layers - 1) == 0.0
    extra = tables.flops - plain.flops
    assert np.allclose(extra[..., :-1], per_head * np.arange(1, llama.num_layers))
    assert np.allclose(extra[..., -1], per_head * (llama.num_layers - 1))
    assert np.array_equal(tables.emitted[..., -1], plain.emitted[..., -1])
