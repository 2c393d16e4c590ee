"""A learned exit-confidence predictor of a decoder LM: per layer, a logistic model on the hidden
state estimating P(the exit head's token at this layer == the full-depth token).

Why: CALM's softmax response reads the LM head at every layer (``2·H·V`` FLOPs: a quarter of a
SmolLM2-135M token per layer), so a confidence rule pays more for deciding than early exit saves.
A linear read of the state costs ``2·H + 1`` FLOPs (0.002 % of that head); the head then runs once,
at the exit. The inputs are clipped to ``clip`` (TokenExit-v0's ``hidden_clip``: the ``hidden``
observation the rule reads is clipped there, so the fit sees what the rule will see).

Fit: per layer, L2-regularised logistic regression on standardised states by Newton's method
(float64, closed-form steps: deterministic, no seed), the standardisation folded into the
weights afterwards so a decision is one dot product.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

PREDICTOR_FILE = "predictor.safetensors"
"""File of the predictor in a prepared directory."""


@dataclass(frozen=True, eq=False)
class ExitPredictor:
    """Logistic models of layers ``1..L-1`` (0-based ``0..L-2``; the last layer always exits)."""

    weight: torch.Tensor
    """float64 ``[L - 1, H]`` (on the clipped raw state)."""
    bias: torch.Tensor
    """float64 ``[L - 1]``."""
    clip: float = 1000.0
    """Inputs are clipped to ``[-clip, clip]`` first."""

    @property
    def num_layers(self) -> int:
        return int(self.weight.shape[0]) + 1

    @property
    def hidden_size(self) -> int:
        return int(self.weight.shape[1])

    def probability(self, i: int, hidden: torch.Tensor) -> torch.Tensor:
        """P(exit head of layer ``i`` (0-based) agrees with the last layer) for ``[..., H]``
        (1 at the last layer)."""
        if i >= self.num_layers - 1:
            return torch.ones(hidden.shape[:-1], dtype=torch.float64)
        x = hidden.double().clamp(-self.clip, self.clip)
        return torch.sigmoid(x @ self.weight[i] + self.bias[i])

    def flops(self) -> float:
        """FLOPs of one decision: a dot product, the bias and the sigmoid (``2·H + 2``)."""
        return 2.0 * self.hidden_size + 2.0

    @cached_property
    def fingerprint(self) -> str:
        import hashlib

        from exitgym.backbones.fingerprint import update_with_tensors

        digest = hashlib.sha256(f"predictor{self.clip}".encode())
        update_with_tensors(digest, (("w", self.weight), ("b", self.bias)))
        return digest.hexdigest()

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        from exitgym.utils.atomic import atomic_write

        atomic_write(path, lambda tmp: save_file(
            {"weight": self.weight.contiguous(), "bias": self.bias.contiguous(),
             "clip": torch.tensor([self.clip], dtype=torch.float64)}, str(tmp)))

    @classmethod
    def load(cls, path: str | Path) -> ExitPredictor:
        from safetensors.torch import load_file

        t = load_file(str(path))
        return cls(t["weight"], t["bias"], float(t["clip"][0]))


def _logistic(x: torch.Tensor, y: torch.Tensor, l2: float, steps: int) -> torch.Tensor:
    """Newton's method on the mean log-loss + ``l2/2·|w|²`` (bias unpenalised); ``x`` has a
    trailing column of ones."""
    w = torch.zeros(x.shape[1], dtype=torch.float64)
    reg = torch.eye(x.shape[1], dtype=torch.float64) * l2
    reg[-1, -1] = 0.0
    n = x.shape[0]
    for _ in range(steps):
        p = torch.sigmoid(x @ w)
        grad = x.T @ (p - y) / n + reg @ w
        hess = (x.T * (p * (1 - p))) @ x / n + reg + 1e-9 * torch.eye(x.shape[1],
                                                                       dtype=torch.float64)
        w = w - torch.linalg.solve(hess, grad)
    return w


def fit_predictor(states: torch.Tensor, agree: torch.Tensor, l2: float = 1e-2, steps: int = 12,
                  clip: float = 1000.0) -> ExitPredictor:
    """Per-layer logistic models of ``agree`` from ``states``.

    Args:
        states: ``[N, L, H]`` states after every layer.
        agree: ``[N, L]`` bool: the layer's exit head picks the last layer's token.
        l2: ridge weight on the standardised weights (keeps a separable layer finite).
        steps: Newton steps (the loss is convex; a dozen converge to float precision).
        clip: input bound, see :class:`ExitPredictor`.

    Raises:
        ValueError: shapes that do not match or fewer than two layers.
    """
    if states.ndim != 3 or states.shape[1] < 2 or tuple(agree.shape) != tuple(states.shape[:2]):
        raise ValueError(f"states must be [N, L >= 2, H] and agree [N, L], got "
                         f"{tuple(states.shape)} and {tuple(agree.shape)}")
    weights, biases = [], []
    for i in range(states.shape[1] - 1):
        x = states[:, i].double().clamp(-clip, clip)
        mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
        z = torch.cat([(x - mu) / sd, torch.ones(x.shape[0], 1, dtype=torch.float64)], dim=1)
        w = _logistic(z, agree[:, i].double(), l2, steps)
        weights.append(w[:-1] / sd)
        biases.append(w[-1] - (w[:-1] * mu / sd).sum())
    return ExitPredictor(torch.stack(weights), torch.stack(biases), clip)


@torch.no_grad()
def head_agrees(backbone: object, states: torch.Tensor, maps: object | None = None
                ) -> torch.Tensor:
    """``[N, L]`` bool: each layer's exit head (``maps`` in front of the LM head, or the plain
    head) picks the last layer's token (the predictor's labels)."""
    logits = backbone.logits  # type: ignore[attr-defined]
    final = logits(states[:, -1]).argmax(dim=-1)
    cols = []
    for i in range(states.shape[1]):
        h = states[:, i] if maps is None else maps.apply(i, states[:, i])  # type: ignore[attr-defined]
        cols.append(logits(h).argmax(dim=-1) == final)
    return torch.stack(cols, dim=1)


__all__ = ["PREDICTOR_FILE", "ExitPredictor", "fit_predictor", "head_agrees"]
