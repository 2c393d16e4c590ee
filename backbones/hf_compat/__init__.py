"""Every use of transformers internals, in one place (this package; decoders in ``decoders``).

transformers 5.x changed layer outputs (tensors, not tuples) and mask construction; keeping all of
that here means a new transformers release touches one module. Each supported family gets an
:class:`FamilyAdapter` that knows how to embed, build the attention mask, and run a layer's
attention and feed-forward sub-blocks separately (so either can be skipped). The sub-block
functions call the model's own modules, so stepping all layers reproduces the model's forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask

Block = Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _bert_attention(
    layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    return layer.attention(hidden, mask)[0]


def _bert_ffn(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return layer.output(layer.intermediate(hidden), hidden)


def _albert_attention(
    layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    return layer.attention(hidden, mask)[0]


def _albert_ffn(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return layer.full_layer_layer_norm(layer.ff_chunk(hidden) + hidden)


def _distil_attention(
    layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    return layer.sa_layer_norm(layer.attention(hidden, attention_mask=mask)[0] + hidden)


def _distil_ffn(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return layer.output_layer_norm(layer.ffn(hidden) + hidden)


def _bert_layers(model: nn.Module) -> list[nn.Module]:
    return list(model.encoder.layer)


def _albert_layers(model: nn.Module) -> list[nn.Module]:
    """ALBERT shares parameters: layer i applies the group ``i // (L / G)``.

    Only ``inner_group_num == 1`` maps one "layer" to one AlbertLayer (the released checkpoints);
    other values are refused rather than silently stepped wrongly.
    """
    cfg = model.config
    if cfg.inner_group_num != 1:
        raise ValueError(
            f"ALBERT with inner_group_num={cfg.inner_group_num} is not supported (only 1, as in "
            "the released checkpoints)"
        )
    groups = model.encoder.albert_layer_groups
    per_group = cfg.num_hidden_layers / cfg.num_hidden_groups
    return [groups[int(i / per_group)].albert_layers[0] for i in range(cfg.num_hidden_layers)]


def _distil_layers(model: nn.Module) -> list[nn.Module]:
    return list(model.transformer.layer)


def _embed_with_types(
    model: nn.Module, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None
) -> torch.Tensor:
    return model.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)


def _albert_embed(
    model: nn.Module, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None
) -> torch.Tensor:
    hidden = model.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    return model.encoder.embedding_hidden_mapping_in(hidden)


def _distil_embed(
    model: nn.Module, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None
) -> torch.Tensor:
    return model.embeddings(input_ids)


@dataclass(frozen=True)
class FamilyAdapter:
    """How to step one model family."""

    family: str
    """Family name: bert, roberta, albert, distilbert."""
    layers: Callable[[nn.Module], list[nn.Module]]
    """The L layer modules in order (ALBERT repeats its shared module)."""
    embed: Callable[[nn.Module, torch.Tensor, torch.Tensor | None], torch.Tensor]
    """input ids (and token types) -> hidden states entering layer 1."""
    attention: Block
    """Attention sub-block including its residual and layer norm."""
    ffn: Block
    """Feed-forward sub-block including its residual and layer norm."""
    default_pooling: str
    """Pooling a classifier of this family reads (all four use the first token, ``cls``)."""


ADAPTERS: dict[str, FamilyAdapter] = {
    "bert": FamilyAdapter(
        "bert", _bert_layers, _embed_with_types, _bert_attention, _bert_ffn, "cls"
    ),
    "roberta": FamilyAdapter(
        "roberta", _bert_layers, _embed_with_types, _bert_attention, _bert_ffn, "cls"
    ),
    "albert": FamilyAdapter(
        "albert", _albert_layers, _albert_embed, _albert_attention, _albert_ffn, "cls"
    ),
    "distilbert": FamilyAdapter(
        "distilbert", _distil_layers, _distil_embed, _distil_attention, _distil_ffn, "cls"
    ),
}
# Model types whose architecture is one of the above.
MODEL_TYPE_TO_FAMILY = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "camembert": "roberta",
    "albert": "albert",
    "distilbert": "distilbert",
}


def family_of(config: PretrainedConfig) -> FamilyAdapter:
    """The adapter for a config, or a clear error naming the supported model types."""
    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_TYPE_TO_FAMILY:
        raise ValueError(
            f"unsupported model_type {model_type!r}; supported: {sorted(MODEL_TYPE_TO_FAMILY)}"
        )
    return ADAPTERS[MODEL_TYPE_TO_FAMILY[model_type]]


def attention_mask_4d(
    model: nn.Module, hidden: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor | None:
    """The mask the model itself would pass to its layers (None when nothing is padded)."""
    return create_bidirectional_mask(
        config=model.config, inputs_embeds=hidden, attention_mask=mask.to(torch.long)
    )


def model_from_config(config: PretrainedConfig, seed: int = 0) -> PreTrainedModel:
    """A random-init base model (tests and tiny examples): seeded so two builds are equal."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    return model


def model_from_pretrained(name_or_path: str) -> PreTrainedModel:
    """Load the base encoder (no task head) from a local directory or the hub."""
    return AutoModel.from_pretrained(name_or_path)


def config_from_pretrained(name_or_path: str) -> PretrainedConfig:
    return AutoConfig.from_pretrained(name_or_path)


def full_forward_hidden_states(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """The model's own ``output_hidden_states`` (reference for exactness tests and benchmarks)."""
    kwargs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "output_hidden_states": True,
    }
    if token_type_ids is not None and getattr(model.config, "model_type", "") != "distilbert":
        kwargs["token_type_ids"] = token_type_ids
    return tuple(model(**kwargs).hidden_states)


def plain_forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The model's plain forward (last hidden state): the baseline speed benchmarks compare to."""
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None and getattr(model.config, "model_type", "") != "distilbert":
        kwargs["token_type_ids"] = token_type_ids
    return model(**kwargs).last_hidden_state


def use_eager_attention(model: nn.Module) -> None:
    """Switch to the eager attention path (plain matmuls).

    ``FlopCounterMode`` does not count the fused CPU SDPA kernel, so FLOPs verification runs the
    eager path, which computes the same thing with countable matmuls.
    """
    model.set_attn_implementation("eager")



# Decoders live in their own module of this package; re-exported so callers keep one name.
from exitgym.backbones.hf_compat.decoders import (  # noqa: E402
    DECODER_ADAPTERS,
    DECODER_MODEL_TYPES,
    DecoderAdapter,
    causal_lm_from_config,
    causal_lm_from_pretrained,
    convert_gguf,
    decoder_dims,
    decoder_family_of,
    greedy_generate,
    tokenizer_from_pretrained,
)

__all__ = [
    "ADAPTERS", "DECODER_ADAPTERS", "DECODER_MODEL_TYPES", "DecoderAdapter", "FamilyAdapter",
    "MODEL_TYPE_TO_FAMILY", "attention_mask_4d", "causal_lm_from_config",
    "causal_lm_from_pretrained", "config_from_pretrained", "convert_gguf", "decoder_dims",
    "decoder_family_of", "family_of", "full_forward_hidden_states", "greedy_generate",
    "model_from_config", "model_from_pretrained", "plain_forward", "tokenizer_from_pretrained",
    "use_eager_attention",
]
