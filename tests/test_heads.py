"""Exit heads: safetensors round trip, PABEE loss, frozen training, fine-tuning with skips."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig

from exitgym.backbones.finetune import FinetuneConfig, TextSet, finetune, multi_exit_forward
from exitgym.backbones.head_training import FrozenTrainConfig, train_frozen_heads
from exitgym.backbones.heads import (
    ExitHeads,
    HeadsConfig,
    load_backbone_weights,
    pabee_loss,
    save_backbone_weights,
)
from exitgym.backbones.registry import BACKBONE_ALIASES, load_backbone

TINY = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=64)


def tiny_backbone(seed: int = 0):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(BACKBONE_ALIASES["minilm-l6"]()))
    return load_backbone(TINY, tokenizer=tokenizer, seed=seed)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_save_load_roundtrip_is_exact(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    heads = ExitHeads(HeadsConfig(num_layers=4, hidden_size=16, num_labels=3, kind=kind,
                                  mlp_hidden=8, label_names=("a", "b", "c")))
    heads.save(tmp_path)
    loaded = ExitHeads.load(tmp_path)
    assert loaded.config == heads.config
    assert loaded.fingerprint() == heads.fingerprint()
    x = torch.randn(5, 4, 16)
    heads.eval()
    assert torch.equal(loaded(x), heads(x))
    assert torch.equal(loaded.head(2, x[:, 2]), heads(x)[:, 2])
    info = json.loads((tmp_path / "heads.json").read_text())
    assert info["config"]["kind"] == kind and info["fingerprint"] == heads.fingerprint()


def test_fingerprint_tracks_weights_and_tampering_is_refused(tmp_path: Path) -> None:
    heads = ExitHeads(HeadsConfig(num_layers=2, hidden_size=4, num_labels=2))
    before = heads.fingerprint()
    with torch.no_grad():
        heads.heads[1][1].weight[0, 0] += 1e-3
    assert heads.fingerprint() != before
    heads.save(tmp_path)
    info = json.loads((tmp_path / "heads.json").read_text())
    info["fingerprint"] = before
    (tmp_path / "heads.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="do not match the fingerprint"):
        ExitHeads.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="heads.json is missing"):
        ExitHeads.load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown head kind"):
        HeadsConfig(num_layers=2, hidden_size=4, num_labels=2, kind="transformer")


def test_pabee_loss_matches_hand_computation() -> None:
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
                           [[0.0, 3.0], [1.0, 0.0], [0.5, -0.5]]])
    labels = torch.tensor([0, 1])

    def ce(row: list[float], y: int) -> float:
        return -(row[y] - math.log(sum(math.exp(v) for v in row)))

    per_layer = [np.mean([ce(logits[b, layer].tolist(), int(labels[b])) for b in range(2)])
                 for layer in range(3)]
    expected = (1 * per_layer[0] + 2 * per_layer[1] + 3 * per_layer[2]) / 6
    assert float(pabee_loss(logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_frozen_training_finds_the_layer_that_carries_the_signal() -> None:
    rng = np.random.default_rng(0)
    n, num_layers, hidden = 600, 3, 8
    labels = rng.integers(0, 2, size=n)
    pooled = rng.normal(size=(n, num_layers, hidden)).astype(np.float32)
    pooled[:, 2, 0] += np.where(labels == 1, 3.0, -3.0)  # only layer 3 is informative
    torch.manual_seed(0)
    heads = ExitHeads(HeadsConfig(num_layers=num_layers, hidden_size=hidden, num_labels=2))
    history = train_frozen_heads(heads, pooled[:400], labels[:400], pooled[400:], labels[400:],
                                 FrozenTrainConfig(epochs=40, lr=1e-2, batch_size=64))
    with torch.inference_mode():
        acc = (heads(torch.from_numpy(pooled[400:])).argmax(-1).numpy() == labels[400:, None])
    acc = acc.mean(axis=0)
    assert acc[2] > 0.95 and acc[0] < 0.7 and acc[1] < 0.7
    assert 1 <= len(history) <= 40 and all("val_loss" in h for h in history)


def test_skipping_every_block_leaves_the_embedding_pooled_state() -> None:
    bb = tiny_backbone()
    heads = ExitHeads(HeadsConfig(num_layers=3, hidden_size=32, num_labels=2))
    heads.eval()
    batch = bb.tokenize(["a short one", "a somewhat longer sentence here"], max_length=16)
    all_skip = torch.ones(3, 2, dtype=torch.bool)
    with torch.inference_mode():
        logits, _ = multi_exit_forward(bb, heads, batch, range(3), all_skip, all_skip)
        pooled0 = bb.pool(bb.embed(batch))
        for i in range(3):
            assert torch.allclose(logits[:, i], heads.head(i, pooled0), atol=1e-6)
        full, _ = multi_exit_forward(bb, heads, batch, range(3))
        live = torch.stack([heads.head(i, p) for i, p in enumerate(bb.forward_pooled(batch))], 1)
    assert torch.allclose(full, live, atol=1e-6)


def test_finetune_updates_backbone_and_heads_and_weights_roundtrip(tmp_path: Path) -> None:
    bb = tiny_backbone()
    heads = ExitHeads(HeadsConfig(num_layers=3, hidden_size=32, num_labels=2))
    before_bb = {k: v.clone() for k, v in bb.model.state_dict().items()}
    before_heads = heads.fingerprint()
    texts = [f"good movie number {i}" if i % 2 else f"bad film {i}" for i in range(16)]
    labels = np.arange(16) % 2
    result = finetune(bb, heads, TextSet(texts, None, labels), None, FinetuneConfig(
        batch_size=8, lr=1e-3, skip_prob=0.5, max_length=16), progress=False)
    history = result["history"]
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    assert heads.fingerprint() != before_heads
    changed = [k for k, v in bb.model.state_dict().items() if not torch.equal(v, before_bb[k])]
    assert any("encoder.layer.2" in k for k in changed)
    assert not bb.model.training and not heads.training
    save_backbone_weights(bb.model, tmp_path / "backbone.safetensors")
    fresh = tiny_backbone()
    assert fresh.fingerprint() != (bb.invalidate_fingerprint() or bb.fingerprint())
    load_backbone_weights(fresh.model, tmp_path / "backbone.safetensors")
    fresh.invalidate_fingerprint()
    assert fresh.fingerprint() == bb.fingerprint()
