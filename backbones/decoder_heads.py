"""Distilled exit heads of a decoder LM: one affine map per layer in front of the shared final
norm and LM head, fitted to the last layer (a "tuned lens").

The model's own head applied to an intermediate layer (``heads="lm-head"``) reads states it was
never trained on: on SmolLM2-135M layers 2–8 agree with the full-depth token on ~2 % of tokens.
A map ``A_l h + b_l`` per layer that sends layer ``l``'s state towards the last layer's, then the
model's final norm and LM head, fixes much of that at ``2H² + H`` FLOPs per head (0.6 % of
SmolLM2's LM head, charged like the head).

Fitting: ridge regression of the last layer's state on layer ``l``'s over cached states
(closed form, float64). Why not a KL to the last layer's distribution: its gradient needs a
vocabulary-wide softmax per layer and position (~1 TFLOP per step of 256 positions on a 49k-token
vocabulary), minutes on a CPU for what the closed form gets in a second; the agreement it reaches
is measured and reported by ``prepare`` (:func:`head_agreement`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from exitgym.backbones.flops import mlp_flops

WEIGHTS_FILE = "layer_maps.safetensors"
"""File of the maps in a prepared directory."""


def tensors_to(maps: Any, device: torch.device | str, dtype: torch.dtype) -> Any:
    """A tensor dataclass (exit maps) with every field on ``device`` in ``dtype`` (itself when
    already so)."""
    tensors = {f.name: getattr(maps, f.name) for f in dataclasses.fields(maps)}
    if all(t.device == torch.device(device) and t.dtype == dtype for t in tensors.values()):
        return maps
    return dataclasses.replace(maps, **{k: t.to(device, dtype) for k, t in tensors.items()})


@dataclass(frozen=True, eq=False)
class LayerMaps:
    """Affine maps of layers ``1..L-1`` (0-based ``0..L-2``); the last layer needs none."""

    weight: torch.Tensor
    """float32 ``[L - 1, H, H]``."""
    bias: torch.Tensor
    """float32 ``[L - 1, H]``."""

    @property
    def num_layers(self) -> int:
        return int(self.weight.shape[0]) + 1

    @property
    def hidden_size(self) -> int:
        return int(self.weight.shape[1])

    def to(self, device: torch.device | str, dtype: torch.dtype) -> LayerMaps:
        """These maps with every tensor on ``device`` in ``dtype`` (itself when already so):
        where the decoder runs, so heads and states meet without a copy per token."""
        return tensors_to(self, device, dtype)

    def apply(self, i: int, hidden: torch.Tensor) -> torch.Tensor:
        """Layer ``i``'s (0-based) state mapped towards the last layer's (``[..., H]``)."""
        if i >= self.num_layers - 1:
            return hidden
        return torch.nn.functional.linear(hidden, self.weight[i], self.bias[i])

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the weights: two loads of the same file are the same heads (the cached
        TokenExit tables are shared by content, not by object identity)."""
        import hashlib

        from exitgym.backbones.fingerprint import update_with_tensors

        digest = hashlib.sha256()
        update_with_tensors(digest, ((str(tuple(t.shape)), t) for t in (self.weight, self.bias)))
        return digest.hexdigest()

    def flops(self, i: int) -> float:
        """FLOPs of layer ``i``'s map on one position (0 at the last layer)."""
        return 0.0 if i >= self.num_layers - 1 else mlp_flops([self.hidden_size] * 2)

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        from exitgym.utils.atomic import atomic_write

        atomic_write(path, lambda tmp: save_file(
            {"weight": self.weight.contiguous(), "bias": self.bias.contiguous()}, str(tmp)))

    @classmethod
    def load(cls, path: str | Path) -> LayerMaps:
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        return cls(tensors["weight"], tensors["bias"])


def fit_layer_maps(states: torch.Tensor, ridge: float = 1e-3) -> LayerMaps:
    """Least-squares maps from each layer's states to the last layer's.

    Args:
        states: ``[N, L, H]`` states of ``N`` positions after every layer.
        ridge: Tikhonov weight, relative to the mean squared input (keeps the solve stable when
            ``N`` is not much larger than ``H``).

    Raises:
        ValueError: fewer than two layers or no positions.
    """
    if states.ndim != 3 or states.shape[0] < 1 or states.shape[1] < 2:
        raise ValueError(f"states must be [N >= 1, L >= 2, H], got {tuple(states.shape)}")
    x = states.double()
    target = x[:, -1]
    weights, biases = [], []
    for i in range(x.shape[1] - 1):
        inputs = torch.cat([x[:, i], torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
        gram = inputs.T @ inputs
        scale = float(gram.diagonal()[:-1].mean()) or 1.0
        reg = torch.eye(gram.shape[0], dtype=x.dtype) * ridge * scale
        reg[-1, -1] = 0.0  # the bias is not shrunk
        solution = torch.linalg.solve(gram + reg, inputs.T @ target)  # [H + 1, H]
        weights.append(solution[:-1].T.float())
        biases.append(solution[-1].float())
    return LayerMaps(torch.stack(weights), torch.stack(biases))


@torch.no_grad()
def head_agreement(backbone: object, states: torch.Tensor,
                   maps: LayerMaps | None = None) -> list[float]:
    """Per layer, the share of positions whose exit head (``maps`` or the plain LM head) picks
    the last layer's token (``states``: ``[N, L, H]``)."""
    logits = backbone.logits  # type: ignore[attr-defined]
    # Where the decoder runs, in its dtype (states are collected and maps fitted on the host).
    model = backbone.model  # type: ignore[attr-defined]
    param = next(model.parameters())
    states = states.to(param.device, param.dtype)
    if maps is not None:
        maps = maps.to(param.device, param.dtype)
    final = logits(states[:, -1]).argmax(dim=-1)
    out = []
    for i in range(states.shape[1]):
        h = states[:, i] if maps is None else maps.apply(i, states[:, i])
        out.append(float((logits(h).argmax(dim=-1) == final).double().mean()))
    return out


__all__ = ["WEIGHTS_FILE", "LayerMaps", "fit_layer_maps", "head_agreement"]
