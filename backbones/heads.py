"""Exit heads: one classifier per layer on that layer's pooled state, stored as safetensors + JSON.

A head at layer l lets an episode stop after l layers and still answer; the per-layer cache stores
every head's logits so exit environments never run them inside ``step``. Weights are saved with
safetensors and the configuration as JSON, so loading a downloaded heads folder never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from exitgym.backbones.fingerprint import update_with_tensors
from exitgym.utils.atomic import atomic_write

HEADS_WEIGHTS = "heads.safetensors"
HEADS_CONFIG = "heads.json"


@dataclass(frozen=True)
class HeadsConfig:
    """Shape of a set of exit heads (everything needed to rebuild them before loading weights)."""

    num_layers: int
    """Number of backbone layers; one head each."""
    hidden_size: int
    """Size of the pooled state the heads read."""
    num_labels: int
    """Number of classes."""
    kind: str = "linear"
    """Head architecture, a key of :data:`HEAD_BUILDERS` (``linear`` or ``mlp``)."""
    mlp_hidden: int | None = None
    """Hidden width of the ``mlp`` head (default: ``hidden_size``)."""
    dropout: float = 0.1
    """Dropout on the pooled state during training (as in BERT's classifier)."""
    label_names: tuple[str, ...] = field(default=())
    """Label vocabulary, kept with the weights so predictions can be named."""

    def __post_init__(self) -> None:
        if self.kind not in HEAD_BUILDERS:
            raise ValueError(f"unknown head kind {self.kind!r}; allowed: {sorted(HEAD_BUILDERS)}")
        if min(self.num_layers, self.hidden_size, self.num_labels) < 1:
            raise ValueError(f"HeadsConfig sizes must be positive: {self}")
        if self.label_names and len(self.label_names) != self.num_labels:
            raise ValueError(f"{len(self.label_names)} label names for {self.num_labels} labels")
        object.__setattr__(self, "label_names", tuple(self.label_names))

    @property
    def head_hidden(self) -> int | None:
        """Hidden width used by the FLOPs model (None for linear heads)."""
        return (self.mlp_hidden or self.hidden_size) if self.kind == "mlp" else None


def _linear(cfg: HeadsConfig) -> nn.Module:
    return nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden_size, cfg.num_labels))


def _mlp(cfg: HeadsConfig) -> nn.Module:
    width = cfg.mlp_hidden or cfg.hidden_size
    return nn.Sequential(
        nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden_size, width), nn.Tanh(),
        nn.Dropout(cfg.dropout), nn.Linear(width, cfg.num_labels),
    )


HEAD_BUILDERS: dict[str, Callable[[HeadsConfig], nn.Module]] = {"linear": _linear, "mlp": _mlp}
"""Head kind -> constructor; FLOPs for each kind come from ``FlopsModel.head``."""


class ExitHeads(nn.Module):
    """One classifier per layer: ``forward`` maps pooled ``[B, L, H]`` to logits ``[B, L, C]``."""

    def __init__(self, config: HeadsConfig) -> None:
        super().__init__()
        self.config = config
        build = HEAD_BUILDERS[config.kind]
        self.heads = nn.ModuleList(build(config) for _ in range(config.num_layers))

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def head(self, layer: int, pooled: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C]`` of the head after 0-based ``layer`` (the Backbone.layer index)."""
        if not 0 <= layer < self.num_layers:
            raise IndexError(f"layer index {layer} outside 0..{self.num_layers - 1} (0-based)")
        return self.heads[layer](pooled)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        if pooled.dim() != 3 or pooled.shape[1] != self.num_layers:
            raise ValueError(f"expected pooled states [B, {self.num_layers}, H], got "
                             f"{tuple(pooled.shape)}")
        return torch.stack([h(pooled[:, i]) for i, h in enumerate(self.heads)], dim=1)

    def flops(self, flops_model: Any) -> float:
        """FLOPs of one head evaluation, from the backbone's ``FlopsModel``."""
        return float(flops_model.head(self.config.num_labels, kind=self.config.kind,
                                      hidden=self.config.head_hidden))

    def fingerprint(self) -> str:
        """sha256 over the config and the exact weights: caches keyed on it never go stale."""
        digest = hashlib.sha256(json.dumps(_config_json(self.config), sort_keys=True).encode())
        update_with_tensors(digest, sorted(self.state_dict().items()))
        return digest.hexdigest()

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``heads.safetensors`` and ``heads.json`` (config + fingerprint) atomically."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write(path / HEADS_WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
        info = {"config": _config_json(self.config), "fingerprint": self.fingerprint()}
        atomic_write(path / HEADS_CONFIG, lambda tmp: tmp.write_text(json.dumps(info, indent=2)))
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ExitHeads:
        """Rebuild from ``heads.json`` and load ``heads.safetensors`` (strict; never unpickles)."""
        path = Path(directory)
        for name in (HEADS_CONFIG, HEADS_WEIGHTS):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path / name} is missing; not a saved ExitHeads folder")
        info = json.loads((path / HEADS_CONFIG).read_text())
        heads = cls(HeadsConfig(**{**info["config"],
                                   "label_names": tuple(info["config"]["label_names"])}))
        heads.load_state_dict(load_file(str(path / HEADS_WEIGHTS)), strict=True)
        heads.eval()
        if info.get("fingerprint") not in (None, heads.fingerprint()):
            raise ValueError(f"{path}: weights do not match the fingerprint in {HEADS_CONFIG}")
        return heads


def _config_json(config: HeadsConfig) -> dict[str, Any]:
    out = asdict(config)
    out["label_names"] = list(config.label_names)
    return out


EXIT_LOSSES = ("weighted", "last")
"""Which exits a fine-tuning loss trains: ``weighted`` = PABEE's ``Σ l·CE_l / Σ l`` over every
exit (the joint recipe); ``last`` = the last exit only (DeeBERT's first stage)."""


def exit_weights(loss: str, num_layers: int) -> torch.Tensor:
    """Per-exit loss weights of ``loss`` (one of :data:`EXIT_LOSSES`), summing to 1."""
    if loss not in EXIT_LOSSES:
        raise ValueError(f"unknown loss {loss!r}; allowed: {list(EXIT_LOSSES)}")
    if loss == "weighted":
        weights = torch.arange(1, num_layers + 1, dtype=torch.float32)
    else:
        weights = torch.zeros(num_layers)
        weights[-1] = 1.0
    return weights / weights.sum()


def weighted_exit_loss(logits: torch.Tensor, labels: torch.Tensor,
                       weights: torch.Tensor) -> torch.Tensor:
    """``Σ_l w_l·CE_l``: ``logits [B, K, C]`` of K exits, ``CE_l`` the batch-mean cross-entropy."""
    batch, exits, classes = logits.shape
    per_exit = nn.functional.cross_entropy(
        logits.reshape(batch * exits, classes), labels.repeat_interleave(exits), reduction="none"
    ).reshape(batch, exits).mean(dim=0)
    return (weights.to(per_exit.dtype) * per_exit).sum()


def pabee_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """PABEE's weighted multi-exit loss ``Σ_l l·CE_l / Σ_l l`` (deeper heads weigh more).

    Args:
        logits: ``[B, L, C]`` logits of every head.
        labels: ``[B]`` gold ids; ``CE_l`` is the batch-mean cross-entropy of head l (1-based l).
    """
    return weighted_exit_loss(logits, labels, exit_weights("weighted", logits.shape[1]))


@torch.inference_mode()
def evaluate_heads(
    heads: ExitHeads, pooled: torch.Tensor, labels: torch.Tensor, batch_size: int = 4096
) -> tuple[list[float], list[float]]:
    """Per-layer mean cross-entropy and accuracy of the heads on pooled states ``[N, L, H]``
    (how the frozen trainer and the fine-tuning trainer both score validation). The states move to
    the heads' device batch by batch (the fine-tuning trainer's heads may be on a GPU)."""
    heads.eval()
    device = next(heads.parameters()).device
    labels = labels.to(device)
    logits = torch.cat([heads(pooled[i:i + batch_size].to(device))
                        for i in range(0, len(pooled), batch_size)])
    num_layers = logits.shape[1]
    ce = nn.functional.cross_entropy(
        logits.flatten(0, 1), labels.repeat_interleave(num_layers), reduction="none"
    ).reshape(-1, num_layers).mean(dim=0)
    acc = (logits.argmax(dim=-1) == labels[:, None]).float().mean(dim=0)
    return ce.tolist(), acc.tolist()


def save_backbone_weights(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Save a fine-tuned backbone's state dict as safetensors (shared tensors handled)."""
    from safetensors.torch import save_model

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda tmp: save_model(model, str(tmp)))
    return target


def load_backbone_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load weights saved by :func:`save_backbone_weights` into ``model`` (strict)."""
    from safetensors.torch import load_model

    if not Path(path).is_file():
        raise FileNotFoundError(f"fine-tuned backbone weights {path} not found")
    load_model(model, str(path), strict=True)
    return model
