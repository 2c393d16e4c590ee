"""Decoder LMs' transformers internals: stepping Llama-family and GPT-2 layers, loading, GGUF.

Part of :mod:`exitgym.backbones.hf_compat`, the one place that reaches inside transformers models.
Each function reads a model's own modules; the attention arithmetic over exitgym's KV cache is
plain torch in :mod:`exitgym.backbones.decoder`. Llama, Qwen2 and Mistral share the Llama layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    from transformers.models.llama.modeling_llama import rotate_half

    return x * cos + rotate_half(x) * sin


def _rotary(lm: nn.Module, hidden: torch.Tensor, positions: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotary cosines and sines of ``positions`` (``[B, 1, T, d]``), computed once per set
    of positions: every layer of one generated token asks for the same ones (30 times per token
    on SmolLM2), so the last answer is kept on the model's rotary module."""
    rotary = lm.model.rotary_emb
    last = rotary.__dict__.get("_exitgym_last")
    kind = (hidden.dtype, hidden.device, positions.device)
    if (last is not None and last[0].shape == positions.shape and last[1] == kind
            and torch.equal(last[0], positions)):
        return last[2], last[3]
    cos, sin = rotary(hidden, position_ids=positions)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    rotary.__dict__["_exitgym_last"] = (positions.clone(), kind, cos, sin)
    return cos, sin


def _llama_embed(lm: nn.Module, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return lm.model.embed_tokens(ids)


def _llama_qkv(
    lm: nn.Module, i: int, hidden: torch.Tensor, positions: torch.Tensor, with_q: bool
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    layer = lm.model.layers[i]
    attn, cfg = layer.self_attn, lm.config
    normed = layer.input_layernorm(hidden)
    b, t = hidden.shape[:2]
    cos, sin = _rotary(lm, hidden, positions)
    k = attn.k_proj(normed).view(b, t, cfg.num_key_value_heads, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(normed).view(b, t, cfg.num_key_value_heads, attn.head_dim).transpose(1, 2)
    q = None
    if with_q:
        q = attn.q_proj(normed).view(b, t, cfg.num_attention_heads, attn.head_dim).transpose(1, 2)
        q = _rotate(q, cos, sin)
    return q, _rotate(k, cos, sin), v


def _llama_out(lm: nn.Module, i: int, context: torch.Tensor) -> torch.Tensor:
    return lm.model.layers[i].self_attn.o_proj(context)


def _llama_ffn(lm: nn.Module, i: int, hidden: torch.Tensor) -> torch.Tensor:
    layer = lm.model.layers[i]
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


def _llama_norm(lm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return lm.model.norm(hidden)


def _gpt2_embed(lm: nn.Module, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return lm.transformer.wte(ids) + lm.transformer.wpe(positions)


def _gpt2_qkv(
    lm: nn.Module, i: int, hidden: torch.Tensor, positions: torch.Tensor, with_q: bool
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    block = lm.transformer.h[i]
    b, t, h = hidden.shape
    heads = lm.config.n_head
    normed = block.ln_1(hidden)
    if with_q:
        q, k, v = block.attn.c_attn(normed).split(h, dim=2)
    else:  # only the key and value columns of the fused projection
        weight, bias = block.attn.c_attn.weight[:, h:], block.attn.c_attn.bias[h:]
        q, (k, v) = None, torch.addmm(bias, normed.reshape(-1, h), weight).view(b, t, 2 * h).split(
            h, dim=2
        )

    def heads_first(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(b, t, heads, h // heads).transpose(1, 2)

    return (heads_first(q) if q is not None else None), heads_first(k), heads_first(v)


def _gpt2_out(lm: nn.Module, i: int, context: torch.Tensor) -> torch.Tensor:
    return lm.transformer.h[i].attn.c_proj(context)


def _gpt2_ffn(lm: nn.Module, i: int, hidden: torch.Tensor) -> torch.Tensor:
    block = lm.transformer.h[i]
    return hidden + block.mlp(block.ln_2(hidden))


def _gpt2_norm(lm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return lm.transformer.ln_f(hidden)


def _gpt2_check(config: PretrainedConfig) -> None:
    if config.scale_attn_by_inverse_layer_idx or config.reorder_and_upcast_attn:
        raise ValueError("GPT-2 with scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn "
                         "is not supported (the released checkpoints use neither)")


@dataclass(frozen=True)
class DecoderAdapter:
    """How to step one causal-LM family; every function takes the ``*ForCausalLM`` model."""

    family: str
    """Family name: ``llama`` (Llama, SmolLM2, Qwen2, Mistral) or ``gpt2``."""
    embed: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    """(model, ids ``[B, T]``, positions ``[B, T]``) -> hidden entering layer 1."""
    qkv: Callable[..., tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]]
    """(model, i, hidden, positions, with_q) -> q ``[B, heads, T, d]`` (None without
    ``with_q``), k and v ``[B, kv_heads, T, d]`` (rotary applied), from the layer's input."""
    out: Callable[[nn.Module, int, torch.Tensor], torch.Tensor]
    """(model, i, context ``[B, T, heads·d]``) -> attention output projection."""
    ffn: Callable[[nn.Module, int, torch.Tensor], torch.Tensor]
    """(model, i, hidden) -> hidden after the feed-forward sub-block and its residual."""
    final_norm: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    """The norm before the LM head."""
    check: Callable[[PretrainedConfig], None] = lambda config: None
    """Refuses configurations this adapter would step wrongly."""


DECODER_ADAPTERS: dict[str, DecoderAdapter] = {
    "llama": DecoderAdapter("llama", _llama_embed, _llama_qkv, _llama_out, _llama_ffn, _llama_norm),
    "gpt2": DecoderAdapter(
        "gpt2", _gpt2_embed, _gpt2_qkv, _gpt2_out, _gpt2_ffn, _gpt2_norm, _gpt2_check
    ),
}
DECODER_MODEL_TYPES = {"llama": "llama", "qwen2": "llama", "mistral": "llama", "gpt2": "gpt2"}
"""Model types exitgym steps as decoders, and the adapter each uses."""


def decoder_family_of(config: PretrainedConfig) -> DecoderAdapter:
    """The decoder adapter for a config, or a clear error naming the supported model types."""
    model_type = getattr(config, "model_type", None)
    if model_type not in DECODER_MODEL_TYPES:
        raise ValueError(f"unsupported decoder model_type {model_type!r}; supported: "
                         f"{sorted(DECODER_MODEL_TYPES)}")
    adapter = DECODER_ADAPTERS[DECODER_MODEL_TYPES[model_type]]
    adapter.check(config)
    return adapter


def decoder_dims(config: PretrainedConfig) -> dict[str, Any]:
    """Sizes the FLOPs model and the cache need, and the attention scale, for every family."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    inner = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
    return {
        "hidden_size": config.hidden_size, "num_layers": config.num_hidden_layers,
        "num_heads": heads, "num_kv_heads": getattr(config, "num_key_value_heads", None) or heads,
        "head_dim": head_dim, "intermediate_size": inner or 4 * config.hidden_size,
        "vocab_size": config.vocab_size, "llama_family": config.model_type != "gpt2",
        "scaling": head_dim**-0.5 if getattr(config, "scale_attn_weights", True) else 1.0,
    }


def causal_lm_from_config(config: PretrainedConfig, seed: int = 0) -> PreTrainedModel:
    """A random-init causal LM (tests): seeded, so two builds are equal."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)


def causal_lm_from_pretrained(source: str) -> PreTrainedModel:
    """Load a float32 causal LM from a local directory or a hub id."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)


def tokenizer_from_pretrained(source: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


def convert_gguf(directory: Path, gguf_file: str, out: Path) -> None:
    """De-quantize a GGUF model to float32 and save it with its tokenizer as safetensors.

    transformers refuses to ``save_pretrained`` a model loaded from GGUF, so the weights go
    through ``safetensors.torch.save_model`` (which keeps tied embeddings once) and the config
    is saved without its quantization entry: the result loads as a plain float32 checkpoint.
    """
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file,
                                                 dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)


def greedy_generate(
    lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int
) -> torch.Tensor:
    """Hugging Face's own greedy ``generate`` (the reference and the speed baseline).

    No stopping token: exactly ``max_new_tokens`` tokens, so it compares one to one with stepping.
    """
    out = lm.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                      max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                      pad_token_id=0, eos_token_id=None)
    return out[:, input_ids.shape[1]:]
