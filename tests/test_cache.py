"""Per-layer cache: built values against live computation, storage round trip, damage detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig

from exitgym.backbones.cache import CacheError, build_cache, load_cache, save_cache
from exitgym.backbones.heads import ExitHeads, HeadsConfig
from exitgym.backbones.registry import BACKBONE_ALIASES, load_backbone

TEXTS = ["a fine film", "dull", "the plot is thin but the actors carry it well enough",
         "bad", "what a wonderful, warm and funny movie this turned out to be", "meh ok",
         "not good", "great fun"]
LABELS = np.array([1, 0, 1, 0, 1, 0, 0, 1])


@pytest.fixture(scope="module")
def model():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(BACKBONE_ALIASES["minilm-l6"]()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    bb = load_backbone(config, tokenizer=tokenizer, seed=0)
    torch.manual_seed(1)
    heads = ExitHeads(HeadsConfig(num_layers=3, hidden_size=32, num_labels=2,
                                  label_names=("neg", "pos")))
    heads.eval()
    return bb, heads


def _build(model, **kw):
    bb, heads = model
    return build_cache(bb, heads, TEXTS, LABELS, label_names=("neg", "pos"), max_length=32,
                       batch_size=3, progress=False, meta={"task": "toy"}, **kw)


def test_built_cache_matches_live_per_sample_computation(model) -> None:
    bb, heads = model
    cache = _build(model)
    assert cache.pooled.shape == (8, 3, 32) and cache.logits.shape == (8, 3, 2)
    with torch.inference_mode():
        for i, text in enumerate(TEXTS):  # each sample alone: no padding, no sorting
            batch = bb.tokenize([text], max_length=32)
            pooled = bb.forward_pooled(batch)
            assert cache.lengths[i] == batch["input_ids"].shape[1]
            for layer in range(3):
                np.testing.assert_allclose(cache.pooled[i, layer], pooled[layer][0].numpy(),
                                           atol=2e-5, rtol=1e-5)
                np.testing.assert_allclose(cache.logits[i, layer],
                                           heads.head(layer, pooled[layer])[0].numpy(),
                                           atol=2e-5, rtol=1e-5)
    n = cache.lengths.astype(np.float64)
    np.testing.assert_array_equal(cache.flops_embed, bb.flops.embeddings(n))
    for layer in range(3):
        np.testing.assert_array_equal(cache.flops_layer[:, layer], bb.flops.layer(n))
    assert cache.flops_head == bb.flops.head(2, kind="linear")
    np.testing.assert_array_equal(cache.labels, LABELS)
    assert cache.texts == tuple(TEXTS)
    assert cache.meta["backbone_fingerprint"] == bb.fingerprint()
    assert cache.meta["heads_fingerprint"] == heads.fingerprint()


def test_memorized_and_oracle_follow_the_stored_logits(model) -> None:
    cache = _build(model)
    preds = cache.logits.argmax(-1)
    for i in range(cache.num_samples):
        ok = [bool(preds[i, layer] == LABELS[i]) for layer in range(3)]
        oracle = next((layer + 1 for layer in range(3) if ok[layer]), 3)
        memorized = next((layer + 1 for layer in range(3) if all(ok[layer:])), 3)
        assert cache.oracle[i] == oracle and cache.memorized[i] == memorized
        assert list(cache.correct[i]) == ok


def test_cache_hit_equals_fresh_computation(model, tmp_path: Path) -> None:
    fresh = _build(model)
    save_cache(fresh, tmp_path / "c")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
    loaded = load_cache(tmp_path / "c", expect={"task": "toy"})
    again = _build(model)  # recomputation is bit-identical too
    for name in ("pooled", "logits", "labels", "lengths", "flops_embed", "flops_layer"):
        assert np.array_equal(getattr(loaded, name), getattr(fresh, name)), name
        assert np.array_equal(getattr(again, name), getattr(fresh, name)), name
        assert isinstance(getattr(loaded, name), np.memmap)
    assert loaded.flops_head == fresh.flops_head and loaded.texts == fresh.texts
    assert loaded.label_names == ("neg", "pos")
    np.testing.assert_array_equal(loaded.memorized, fresh.memorized)
    save_cache(again, tmp_path / "c")  # overwriting an existing cache works
    assert load_cache(tmp_path / "c").num_samples == 8


def test_damaged_or_mismatched_cache_is_refused(model, tmp_path: Path) -> None:
    path = save_cache(_build(model), tmp_path / "c")
    with pytest.raises(CacheError, match="heads_fingerprint"):
        load_cache(path, expect={"heads_fingerprint": "something else"})

    data = (path / "logits.npy").read_bytes()
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF
    (path / "logits.npy").write_bytes(bytes(flipped))
    with pytest.raises(CacheError, match="checksum"):
        load_cache(path)
    assert load_cache(path, verify=False).num_samples == 8  # size/shape still fine

    (path / "logits.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(CacheError, match="truncated"):
        load_cache(path, verify=False)

    (path / "logits.npy").write_bytes(data)
    texts = json.loads((path / "texts.json").read_text())
    (path / "texts.json").write_text(json.dumps(texts[:-1] + ["changed"]))
    with pytest.raises(CacheError, match="texts.json"):
        load_cache(path)

    (path / "meta.json").unlink()
    with pytest.raises(CacheError, match="never finished"):
        load_cache(path)
