"""Tiny random-init decoder configs (one per supported model type) and random prompts for tests.

GPT-2's default initializer (std 0.02) makes a tiny random model repeat one token forever, which
would let a wrong cache pass an exactness test; a wider init makes every step's argmax depend on
the whole prefix.
"""

from __future__ import annotations

from typing import Any

import torch

VOCAB = 96


def tiny_decoder_configs() -> dict[str, Any]:
    """``model_type -> config``: 3 layers, hidden 32, grouped-query attention where supported."""
    from transformers import GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

    common = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 128, "pad_token_id": 0, "bos_token_id": None,
              "eos_token_id": None, "initializer_range": 0.2}
    return {
        "llama": LlamaConfig(**common),
        "qwen2": Qwen2Config(**common),
        "mistral": MistralConfig(**common),
        "gpt2": GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=128,
                           pad_token_id=0, bos_token_id=None, eos_token_id=None,
                           initializer_range=0.2),
    }


def random_prompts(lengths: list[int], seed: int = 0) -> list[list[int]]:
    """Token-id prompts of the given lengths (ids 3..VOCAB-1)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in lengths]
