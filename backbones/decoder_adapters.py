"""Trained exit heads of a frozen decoder LM: one low-rank residual adapter per layer
(``h + U_l V_l h``, rank ``r``) in front of the shared final norm and LM head, trained to
reproduce the last layer's next-token distribution.

Why beside the distilled maps (:mod:`exitgym.backbones.decoder_heads`): a ridge map matches the
last layer's *state* in the mean-squared sense, which spends its capacity on directions the LM
head barely reads; a KL to the last layer's softmax spends it on the tokens. The adapter also
costs ``4·H·r + H`` FLOPs per head instead of ``2·H² + H`` (r = 32 on SmolLM2: 11 % of a map).

Training: Adam on a KL from the last layer's distribution to the adapter head's, both restricted
to a *candidate vocabulary* per batch, the union of the teacher's top-k tokens over the batch's
positions. Why not the whole vocabulary: the softmax over 49,152 tokens per layer and position is
~95 % of the cost of a step (minutes per epoch on a CPU); the union holds every token the teacher
gives real mass to, so the restricted KL is the full one up to the teacher's tail mass. The
student's mass outside the union goes unpenalized, which is why the agreement ``prepare`` reports
is measured with the full head (:func:`~exitgym.backbones.decoder_heads.head_agreement`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from exitgym.backbones.decoder_heads import tensors_to

ADAPTERS_FILE = "adapters.safetensors"
"""File of the adapters in a prepared directory."""


@dataclass(frozen=True, eq=False)
class LowRankMaps:
    """Residual adapters of layers ``1..L-1`` (0-based ``0..L-2``); the last layer needs none.

    Duck-types :class:`~exitgym.backbones.decoder_heads.LayerMaps` (``apply``, ``flops``,
    ``fingerprint``, ``num_layers``, ``hidden_size``), so TokenExit-v0, ``generate`` and the
    speculative mode run and charge them unchanged.
    """

    down: torch.Tensor
    """float32 ``[L - 1, r, H]`` (``V``)."""
    up: torch.Tensor
    """float32 ``[L - 1, H, r]`` (``U``; zeros at init: the adapter starts as the LM head)."""

    @property
    def num_layers(self) -> int:
        return int(self.down.shape[0]) + 1

    @property
    def hidden_size(self) -> int:
        return int(self.down.shape[2])

    @property
    def rank(self) -> int:
        return int(self.down.shape[1])

    def to(self, device: torch.device | str, dtype: torch.dtype) -> LowRankMaps:
        """These maps with every tensor on ``device`` in ``dtype`` (itself when already so):
        where the decoder runs, so heads and states meet without a copy per token."""
        return tensors_to(self, device, dtype)

    def apply(self, i: int, hidden: torch.Tensor) -> torch.Tensor:
        """Layer ``i``'s (0-based) state adapted for the LM head (``[..., H]``)."""
        if i >= self.num_layers - 1:
            return hidden
        return hidden + (hidden @ self.down[i].T) @ self.up[i].T

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the weights (cached TokenExit tables are shared by content)."""
        import hashlib

        from exitgym.backbones.fingerprint import update_with_tensors

        digest = hashlib.sha256(b"low-rank")
        update_with_tensors(digest, ((str(tuple(t.shape)), t) for t in (self.down, self.up)))
        return digest.hexdigest()

    def flops(self, i: int) -> float:
        """FLOPs of layer ``i``'s adapter on one position: two products (``2·H·r`` each) and the
        residual sum (``H``); 0 at the last layer."""
        h, r = self.hidden_size, self.rank
        return 0.0 if i >= self.num_layers - 1 else 4.0 * h * r + h

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        from exitgym.utils.atomic import atomic_write

        atomic_write(path, lambda tmp: save_file(
            {"down": self.down.contiguous(), "up": self.up.contiguous()}, str(tmp)))

    @classmethod
    def load(cls, path: str | Path) -> LowRankMaps:
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        return cls(tensors["down"], tensors["up"])


@dataclass(frozen=True)
class AdapterTraining:
    """How the adapters are trained (part of the prepared cache's key)."""

    rank: int = 32
    """``r``, the adapters' inner width."""
    top_k: int = 16
    """Teacher tokens per position whose union over a batch is the softmax's support."""
    epochs: int = 12
    """Passes over the training positions."""
    batch: int = 256
    """Positions per Adam step."""
    lr: float = 3e-3
    """Adam's learning rate."""
    seed: int = 0
    """Seeds the init and the batch order (CPU training is then bit-for-bit repeatable)."""
    warm_start: bool = True
    """Start from the truncated ridge maps of the same states (:func:`init_adapters`) rather
    than from the plain LM head."""


def _head(backbone: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    lm = backbone.model.get_output_embeddings()
    return lm.weight, getattr(lm, "bias", None)


def _candidate_logits(backbone: Any, hidden: torch.Tensor, support: torch.Tensor
                      ) -> torch.Tensor:
    """The exit head's logits on the ``support`` tokens only (``[N, |support|]``)."""
    weight, bias = _head(backbone)
    out = backbone.final_norm(hidden) @ weight[support].T
    return out if bias is None else out + bias[support]


def init_adapters(num_layers: int, hidden_size: int, rank: int, seed: int,
                  warm: Any = None) -> LowRankMaps:
    """The adapters training starts from.

    Cold (``warm=None``): ``V`` random (scaled to keep ``V h`` at the size of ``h``), ``U`` zero,
    so the head at init is the plain LM head. Warm (``warm``: ridge ``LayerMaps`` of the same
    states): the rank-``r`` truncated SVD of each map's residual ``A_l − I``, the closest
    adapter to the closed-form fit (its bias dropped), which the KL then refines.
    """
    gen = torch.Generator().manual_seed(seed)
    down = torch.randn(num_layers - 1, rank, hidden_size, generator=gen) / hidden_size ** 0.5
    if warm is None:
        return LowRankMaps(down, torch.zeros(num_layers - 1, hidden_size, rank))
    ups, downs = [], []
    for i in range(num_layers - 1):
        u, s, vh = torch.linalg.svd(warm.weight[i].double() - torch.eye(hidden_size,
                                                                         dtype=torch.float64))
        ups.append((u[:, :rank] * s[:rank]).float())
        downs.append(vh[:rank].float())
    return LowRankMaps(torch.stack(downs), torch.stack(ups))


def adapter_kl(backbone: Any, maps: LowRankMaps, states: torch.Tensor, top_k: int = 16
               ) -> list[float]:
    """Per layer, the mean KL (nats) from the last layer's distribution to the adapter head's on
    the batch's candidate vocabulary (the training loss; ``states``: ``[N, L, H]``)."""
    with torch.no_grad():
        support, teacher = _teacher(backbone, states[:, -1], top_k)
        out = []
        for i in range(states.shape[1] - 1):
            student = torch.log_softmax(_candidate_logits(
                backbone, maps.apply(i, states[:, i]), support), dim=-1)
            out.append(float((teacher.exp() * (teacher - student)).sum(-1).mean()))
        return out


def _teacher(backbone: Any, last: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    top = backbone.logits(last).topk(min(top_k, backbone.vocab_size), dim=-1).indices
    support = torch.unique(top)
    return support, torch.log_softmax(_candidate_logits(backbone, last, support), dim=-1)


def train_adapters(backbone: Any, states: torch.Tensor, config: AdapterTraining | None = None,
                   warm: Any = None) -> LowRankMaps:
    """Adapters of every layer but the last, trained on ``states`` (``[N, L, H]``) of a frozen
    ``backbone`` (its weights get no gradient), from ``warm`` ridge maps when given.

    Raises:
        ValueError: states of another depth / width than the decoder's, or no positions.
    """
    config = config or AdapterTraining()
    n, num_layers, hidden = states.shape
    if n < 1 or (num_layers, hidden) != (backbone.num_layers, backbone.hidden_size):
        raise ValueError(f"states must be [N >= 1, {backbone.num_layers}, "
                         f"{backbone.hidden_size}] for {backbone.name!r}, got "
                         f"{tuple(states.shape)}")
    if config.rank < 1 or config.top_k < 1 or config.epochs < 0 or config.batch < 1:
        raise ValueError(f"rank, top_k and batch must be >= 1 and epochs >= 0, got {config}")
    init = init_adapters(num_layers, hidden, config.rank, config.seed, warm)
    down = init.down.clone().requires_grad_(True)
    up = init.up.clone().requires_grad_(True)
    params = [down, up]
    opt = torch.optim.Adam(params, lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed + 1)
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen)
        for first in range(0, n, config.batch):
            batch = states[order[first: first + config.batch]]
            with torch.no_grad():
                support, teacher = _teacher(backbone, batch[:, -1], config.top_k)
            loss = torch.zeros(())
            for i in range(num_layers - 1):
                h = batch[:, i]
                adapted = h + (h @ down[i].T) @ up[i].T
                student = torch.log_softmax(_candidate_logits(backbone, adapted, support), -1)
                loss = loss + (teacher.exp() * (teacher - student)).sum(-1).mean()
            opt.zero_grad()
            loss.backward(inputs=params)
            opt.step()
    return LowRankMaps(down.detach().clone(), up.detach().clone())


__all__ = ["ADAPTERS_FILE", "AdapterTraining", "LowRankMaps", "adapter_kl", "init_adapters",
           "train_adapters"]
