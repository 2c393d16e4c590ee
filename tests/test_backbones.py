"""Backbone stepping: exactness against the model's own forward, batching, skips, token drops."""

from __future__ import annotations

import pytest
import torch
from transformers import AlbertConfig, BertConfig, DistilBertConfig, RobertaConfig

from exitgym.backbones import hf_compat
from exitgym.backbones.base import Backbone, State
from exitgym.backbones.registry import load_backbone
from tests.tiny_project import TINY_DIMS

TINY = {
    "bert": BertConfig(**TINY_DIMS),
    "roberta": RobertaConfig(**{**TINY_DIMS, "max_position_embeddings": 66, "pad_token_id": 1}),
    "albert": AlbertConfig(**{**TINY_DIMS, "embedding_size": 16, "num_hidden_layers": 4}),
    "distilbert": DistilBertConfig(vocab_size=120, dim=32, n_layers=3, n_heads=4, hidden_dim=64,
                                   max_position_embeddings=64),
}


def tiny(family: str) -> Backbone:
    return load_backbone(TINY[family], seed=0)


def batch_for(bb: Backbone, lengths: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids with right padding (pad id from the config)."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    pad = bb.config.pad_token_id if bb.config.pad_token_id is not None else 0
    ids = torch.randint(5, 100, (len(lengths), width), generator=gen)
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    ids[~mask] = pad
    return {"input_ids": ids, "attention_mask": mask.long()}


def run_all(bb: Backbone, batch: dict[str, torch.Tensor], **skips: torch.Tensor) -> State:
    state = bb.embed(batch)
    for i in range(bb.num_layers):
        state = bb.layer(i, state, **skips)
    return state


@pytest.mark.parametrize("family", sorted(TINY))
def test_stepping_reproduces_output_hidden_states_with_padding(family: str) -> None:
    bb = tiny(family)
    batch = batch_for(bb, [9, 4, 6])
    mask = batch["attention_mask"].bool()
    with torch.inference_mode():
        reference = hf_compat.full_forward_hidden_states(
            bb.model, batch["input_ids"], batch["attention_mask"]
        )
        state = bb.embed(batch)
        assert len(reference) == bb.num_layers + 1
        assert (state.hidden - reference[0])[mask].abs().max() <= 1e-5
        for i in range(bb.num_layers):
            state = bb.layer(i, state)
            assert (state.hidden - reference[i + 1])[mask].abs().max() <= 1e-5, f"layer {i}"


def test_albert_applies_one_shared_layer_l_times() -> None:
    bb = tiny("albert")
    assert bb.num_layers == 4
    assert len({id(m) for m in bb._layers}) == 1


@pytest.mark.parametrize("family", sorted(TINY))
def test_sample_in_mixed_batch_equals_sample_alone(family: str) -> None:
    bb = tiny(family)
    lengths = [7, 3, 5, 8]
    batch = batch_for(bb, lengths, seed=1)
    skip_att = torch.tensor([True, False, True, False])
    skip_ffn = torch.tensor([False, False, True, True])
    with torch.inference_mode():
        together = run_all(bb, batch, skip_attention=skip_att, skip_ffn=skip_ffn)
        for k, n in enumerate(lengths):
            alone_batch = {key: v[k : k + 1, :n] for key, v in batch.items()}
            alone = run_all(
                bb, alone_batch, skip_attention=skip_att[k : k + 1], skip_ffn=skip_ffn[k : k + 1]
            )
            assert (together.hidden[k, :n] - alone.hidden[0]).abs().max() <= 1e-5


@pytest.mark.parametrize("family", sorted(TINY))
def test_skipped_sub_blocks_leave_the_residual_stream_unchanged(family: str) -> None:
    bb = tiny(family)
    batch = batch_for(bb, [6, 6])
    with torch.inference_mode():
        state = bb.embed(batch)
        both = torch.tensor([True, True])
        skipped = bb.layer(0, state, skip_attention=both, skip_ffn=both)
        assert torch.equal(skipped.hidden, state.hidden)
        # Skipping attention only == applying the FFN block directly to the input.
        only_ffn = bb.layer(0, state, skip_attention=both)
        direct = bb.adapter.ffn(bb._layers[0], state.hidden, None)
        assert torch.allclose(only_ffn.hidden, direct, atol=1e-6)
        # Skipping the FFN only == the attention block's output.
        only_att = bb.layer(0, state, skip_ffn=both)
        mask4d = hf_compat.attention_mask_4d(bb.model, state.hidden, state.mask)
        assert torch.allclose(
            only_att.hidden, bb.adapter.attention(bb._layers[0], state.hidden, mask4d), atol=1e-6
        )
        # ... and differs from running the full layer.
        assert not torch.allclose(only_att.hidden, bb.layer(0, state).hidden)


def test_drop_tokens_removes_positions_and_always_keeps_the_first() -> None:
    bb = tiny("bert")
    batch = batch_for(bb, [6, 4])
    with torch.inference_mode():
        state = bb.embed(batch)
        keep = torch.tensor(
            [[False, True, False, True, True, False], [True, False, True, True, True, True]]
        )
        dropped = bb.drop_tokens(state, keep)
    # Row 0 keeps the forced first token plus 1, 3, 4; row 1 keeps 0, 2, 3 (4, 5 are padding).
    assert dropped.lengths.tolist() == [4, 3]
    assert dropped.hidden.shape[1] == 4
    assert torch.equal(dropped.hidden[0], state.hidden[0, [0, 1, 3, 4]])
    assert torch.equal(dropped.hidden[1, :3], state.hidden[1, [0, 2, 3]])
    assert dropped.mask.tolist() == [[True] * 4, [True, True, True, False]]
    # Later layers run on the shorter sequence and cost less.
    assert bb.layer_flops(dropped).tolist() == [bb.flops.layer(4), bb.flops.layer(3)]
    assert bb.flops.layer(3) < bb.flops.layer(4)


def test_pooling_conventions() -> None:
    bb = tiny("bert")
    state = State(torch.arange(12.0).reshape(1, 3, 4), torch.tensor([[True, True, False]]))
    assert bb.pooling == "cls"
    assert torch.equal(bb.pool(state), torch.tensor([[0.0, 1.0, 2.0, 3.0]]))
    mean = Backbone(bb.model, name="m", pooling="mean")
    assert torch.equal(mean.pool(state), torch.tensor([[2.0, 3.0, 4.0, 5.0]]))


def test_bad_input_gets_clear_errors() -> None:
    bb = tiny("bert")
    with pytest.raises(ValueError, match="unknown backbone 'nope nope'.*minilm-l6"):
        load_backbone("nope nope")
    with pytest.raises(ValueError, match="unsupported model_type 'gpt2'"):
        from transformers import GPT2Config

        load_backbone(GPT2Config(n_layer=1, n_embd=8, n_head=2))
    state = bb.embed(batch_for(bb, [3, 3]))
    with pytest.raises(ValueError, match=r"skip_attention must have shape \[2\]"):
        bb.layer(0, state, skip_attention=torch.tensor([True, False, True]))
    with pytest.raises(TypeError, match="skip_ffn must be a boolean mask"):
        bb.layer(0, state, skip_ffn=torch.tensor([0.5, 0.1]))
    with pytest.raises(IndexError, match="layers 0..2"):
        bb.layer(3, state)
    with pytest.raises(ValueError, match="non-empty"):
        bb.embed({"input_ids": torch.zeros((0, 4), dtype=torch.long)})
    with pytest.raises(ValueError, match="keep_mask must have shape"):
        bb.drop_tokens(state, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown pooling"):
        Backbone(bb.model, pooling="max")


def test_embedded_minilm_is_exact_and_uses_mean_pooling() -> None:
    bb = load_backbone("minilm-l6")
    assert (bb.family, bb.num_layers, bb.hidden_size, bb.pooling) == ("bert", 6, 384, "mean")
    texts = ["A gripping, beautifully acted film.", "Dull."]
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        bb.tokenize(["ok", 3])  # type: ignore[list-item]
    batch = bb.tokenize(texts)
    with torch.inference_mode():
        reference = hf_compat.full_forward_hidden_states(
            bb.model, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
        )
        pooled = bb.forward_pooled(batch)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = (reference[-1] * mask).sum(1) / mask.sum(1)
    assert torch.allclose(pooled[-1], expected, atol=1e-5)
    # The sentence-transformers embedding is the mean-pooled last layer: similar texts are closer.
    # The fingerprint names the weights: a second, independently loaded model with equal weights
    # has the same one; one weight of the last layer changed by 1e-3 gives another.
    first = bb.fingerprint()
    assert len(first) == 64 and int(first, 16) >= 0
    other = load_backbone("minilm-l6")
    assert other.model is not bb.model and other.fingerprint() == first
    with torch.no_grad():
        last = [p for name, p in other.model.named_parameters() if "weight" in name][-1]
        last.view(-1)[0] += 1e-3
    other.invalidate_fingerprint()
    assert other.fingerprint() != first and bb.fingerprint() == first
