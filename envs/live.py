"""Live stepping for the exit environments: run the real backbone one layer per step.

Cached mode reads a layer's pooled state and head logits from the :class:`LayerCache`; live mode
computes them with the :class:`~exitgym.backbones.base.Backbone` layer API and the exit heads,
one sample at a time, exactly as a deployed early-exit model would. Everything else an episode
needs (label, FLOPs per layer, memorized and oracle layer, observation bounds) still comes from the
cache, which must describe the same backbone, heads and texts; the equality of the two modes is
tested.

torch is imported here only; the environment modules import this module lazily. Batch-1 layers
are too small to gain from intra-op threads: on a shared CPU, ``torch.set_num_threads(1)`` is
usually several times faster (the benchmark sets it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from exitgym.backbones.layer_cache import LayerCache
from exitgym.utils.devices import place

__all__ = ["LiveRunner"]


class LiveRunner:
    """Steps one text through a backbone, returning each layer's pooled state and head logits.

    Args:
        cache: The cache of the same backbone, heads and split (texts, labels and FLOPs).
        backbone: A ``Backbone`` model, or a backbone name: then the prepared backbone of
            ``(task, backbone, heads)`` is loaded (fine-tuned weights for fine-tuned recipes).
        heads: An ``ExitHeads`` model (with a ``Backbone`` model) or a heads variant name
            (``"joint"``, ``"two-stage"``, ``"frozen"``) with a backbone name.
        task: Task name, used to load named heads.
        max_length: Token limit; defaults to the cache's ``meta["max_length"]`` or 128, which is
            what the cache builder uses, so both modes see the same tokens.
        prepare_options: Further prepare options of named heads (a local file's columns).
        device: Where backbone and heads run (:func:`~exitgym.utils.devices.place`; model
            objects are moved there in place). Each layer's outputs come back to the host once.
        dtype: Their floating dtype (``"float32"`` keeps episodes equal to the cache's).
    """

    def __init__(
        self,
        cache: LayerCache,
        backbone: Any,
        heads: Any,
        task: str,
        max_length: int | None = None,
        prepare_options: dict[str, Any] | None = None,
        device: str = "auto",
        dtype: str = "float32",
    ) -> None:
        if cache.texts is None:
            raise ValueError("live=True needs the input texts, but this cache has texts=None")
        if isinstance(backbone, str):
            if not isinstance(heads, str):
                raise ValueError("live=True with heads given as a model needs the backbone as one")
            # The prepared backbone: fine-tuned weights for fine-tuned recipes.
            from exitgym.data.prepare import load_heads, load_prepared_backbone

            names = {"task": task, "backbone": backbone, "heads": heads,
                     **(prepare_options or {})}
            backbone = load_prepared_backbone(**names)
            heads = load_heads(**names)
        elif isinstance(heads, str):
            raise ValueError("live=True with a backbone model needs heads= as an ExitHeads model")
        if backbone.num_layers != cache.num_layers or heads.num_layers != cache.num_layers:
            raise ValueError(
                f"live backbone has {backbone.num_layers} layers and heads "
                f"{heads.num_layers}, but the cache has {cache.num_layers}"
            )
        self.device, self.dtype = place([backbone.model, heads], device, dtype)
        self.backbone = backbone
        self.heads = heads
        self.texts = cache.texts
        self.pairs = cache.meta.get("text_pairs") if isinstance(cache.meta, dict) else None
        self.max_length = int(max_length or cache.meta.get("max_length", 128))
        self._state: Any = None
        backbone.model.eval()
        heads.eval()

    @torch.inference_mode()
    def start(self, sample_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Embed sample ``sample_id`` and run layer 1: ``(pooled [H], logits [C])``."""
        pair = None if self.pairs is None else [self.pairs[sample_id]]
        batch = self.backbone.tokenize([self.texts[sample_id]], pair, max_length=self.max_length)
        self._state = self.backbone.embed(batch)
        return self.advance(0)

    @torch.inference_mode()
    def advance(self, layer_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Run 0-based layer ``layer_index`` on the current sample and its exit head."""
        if self._state is None:
            raise RuntimeError("LiveRunner.advance() before start()")
        self._state = self.backbone.layer(layer_index, self._state)
        pooled = self.backbone.pool(self._state)
        logits = self.heads.head(layer_index, pooled)
        # One device-to-host copy per layer: pooled state and logits travel together.
        both = torch.cat([pooled[0].float(), logits[0].float()]).cpu().numpy()
        size = pooled.shape[-1]
        return both[:size].astype(np.float32), both[size:].astype(np.float32)
