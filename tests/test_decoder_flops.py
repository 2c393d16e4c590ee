"""Decoder FLOPs per token against torch's FlopCounterMode on the real stepping code."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from exitgym.backbones.decoder_registry import load_decoder
from tests.tiny_decoders import random_prompts, tiny_decoder_configs

CONFIGS = tiny_decoder_configs()


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
@pytest.mark.parametrize("prompt_length", [1, 6, 20])
def test_matmuls_per_token_match_the_counter_exactly(model_type: str, prompt_length: int) -> None:
    bb = load_decoder(CONFIGS[model_type])
    model = bb.flops
    prompt = random_prompts([prompt_length], seed=prompt_length)[0]
    with torch.inference_mode():
        cache, last = bb.prefill([prompt], prompt_length + 2)
        hidden = bb.embed(torch.tensor([[7]]), cache)
    n = prompt_length + 1  # keys the new token sees, itself included
    layer = counted(lambda: bb.layer(0, hidden, cache))
    assert layer == model.attention_matmul(1, n) + model.ffn_matmul(1)
    assert counted(lambda: bb.write_kv(1, hidden, cache)) == model.kv_matmul(1)
    assert counted(lambda: bb.logits(last)) == model.head_matmul(1)
    # Attention over the growing cache: one more key costs exactly one more score and context.
    assert model.attention_matmul(1, n + 1) - model.attention_matmul(1, n) == 4 * 4 * 8
    # A prompt is one chunk: k queries over k keys.
    ids = torch.tensor([prompt])
    fresh = bb.new_cache(1, prompt_length)
    with torch.inference_mode():
        embedded = bb.embed(ids, fresh)
    chunk = counted(lambda: bb.layer(0, embedded, fresh))
    assert chunk == model.attention_matmul(prompt_length, prompt_length) + model.ffn_matmul(
        prompt_length)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_whole_generation_within_2_percent_of_the_counter_at_a_realistic_width(
    model_type: str,
) -> None:
    """SmolLM2-like widths (2 layers): element-wise estimates are a small share of the total."""
    from transformers import GPT2Config, LlamaConfig

    config = (LlamaConfig(vocab_size=4096, hidden_size=576, intermediate_size=1536,
                          num_hidden_layers=2, num_attention_heads=9, num_key_value_heads=3)
              if model_type == "llama" else
              GPT2Config(vocab_size=4096, n_embd=576, n_layer=2, n_head=9))
    bb = load_decoder(config)
    prompt, new = random_prompts([24], seed=5)[0], 4
    total = counted(lambda: bb.greedy([prompt], new))
    # The prompt in one chunk (head on its last position), then each new token but the last.
    analytic = bb.flops.prompt(24) + sum(bb.flops.token(24 + t) for t in range(1, new))
    assert analytic == pytest.approx(total, rel=0.02)
    assert analytic > total  # element-wise work is added on top of the counted products


def test_full_depth_token_cost_grows_with_position() -> None:
    flops = load_decoder(CONFIGS["llama"]).flops
    assert flops.token(10) < flops.token(11) < flops.token(50)
    assert flops.token(10) == flops.embeddings(1) + 3 * flops.layer(1, 10) + flops.head(1)
    assert flops.kv_only(1) < flops.layer(1, 1)
