"""PALBERT / PonderNet exit heads trained on a per-layer cache, with Q-exit and sampling criteria.

λ heads: ``λ_l = σ(Λ([h_l, h_{l-1}]))`` with Λ a 3-layer tanh MLP over the pooled states of the
current and previous layers (PALBERT Eq. 3; ``h_0`` is zeros because the cache does not store the
embedding output). The halting distribution is ``p(l|x) = λ_l Π_{j<l} (1 − λ_j)`` with the last
layer taking the remaining mass (λ_L := 1). The loss (PALBERT Eq. 2, negated; with frozen heads the
per-layer classifier term uses cross-entropy):

    loss = Σ_l p(l|x)·CE_l + β·KL(p(·|x) ‖ p_G(·|λ_p)),   β = 0.5, λ_p = 0.1,

where the prior ``p_G`` is the geometric distribution truncated the same way (last layer takes the
remaining mass). The exit heads are frozen: only Λ is trained, on ``LayerCache.pooled`` /
``LayerCache.logits``.

Inference: **Q-exit** (deterministic) exits at the first l whose CDF ``Σ_{j≤l} p(j|x)`` exceeds q;
the **sample** criterion exits at layer l with probability λ_l (PonderNet's original rule).
The policy needs the ``"features+hidden+prev"`` observation (pooled states of layers l and l-1).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from exitgym.agents.base import TrackedPolicy
from exitgym.backbones.layer_cache import LayerCache


@dataclass(frozen=True)
class PalbertConfig:
    """Hyper-parameters of the λ heads and their training."""

    hidden: int = 128
    """Width of the two hidden layers of the 3-layer tanh MLP Λ."""
    beta: float = 0.5
    """Weight of the KL term to the geometric prior (PALBERT: 0.5)."""
    lambda_prior: float = 0.1
    """λ_p of the geometric prior (PALBERT: 0.1)."""
    lr: float = 1e-3
    """Adam learning rate of Λ."""
    epochs: int = 20
    """Passes over the cache."""
    batch_size: int = 256
    """Samples per gradient step."""
    seed: int = 0
    """Seed of the initialisation and shuffling (same seed -> same weights)."""


def halting_distribution(lambdas: torch.Tensor) -> torch.Tensor:
    """``p(l|x) = λ_l Π_{j<l}(1 − λ_j)`` over the last axis; the last layer takes the rest.

    Args:
        lambdas: ``[..., L]`` exit probabilities in [0, 1]; the last entry is ignored (treated as
            1) so the distribution sums to one over L layers.
    """
    lam = torch.cat([lambdas[..., :-1], torch.ones_like(lambdas[..., -1:])], dim=-1)
    survive = torch.cumprod(1.0 - lam, dim=-1)
    before = torch.cat([torch.ones_like(survive[..., :1]), survive[..., :-1]], dim=-1)
    return lam * before


def geometric_prior(num_layers: int, lambda_prior: float) -> torch.Tensor:
    """Truncated geometric prior ``[L]`` with the last layer taking the remaining mass."""
    if not 0.0 < lambda_prior < 1.0:
        raise ValueError(f"lambda_prior must be in (0, 1), got {lambda_prior}")
    return halting_distribution(torch.full((num_layers,), float(lambda_prior), dtype=torch.float64))


def palbert_loss(
    lambdas: torch.Tensor, ce: torch.Tensor, beta: float = 0.5, lambda_prior: float = 0.1
) -> torch.Tensor:
    """Mean over the batch of ``Σ_l p(l|x)·CE_l + β·KL(p(·|x) ‖ p_G)``.

    Args:
        lambdas: ``[B, L]`` λ_l from the Lambda heads.
        ce: ``[B, L]`` cross-entropy of each (frozen) exit head on the gold label.
        beta: KL weight.
        lambda_prior: λ_p of the geometric prior.
    """
    p = halting_distribution(lambdas)
    prior = geometric_prior(p.shape[-1], lambda_prior).to(p.dtype)
    kl = (p * (torch.log(p.clamp_min(1e-12)) - torch.log(prior))).sum(-1)
    return ((p * ce).sum(-1) + beta * kl).mean()


def q_exit_layer(lambdas: np.ndarray, q: float = 0.5) -> np.ndarray:
    """1-based exit layer of Q-exit: the first l with CDF of p(l|x) > q (the last layer if none)."""
    p = halting_distribution(torch.as_tensor(np.asarray(lambdas, dtype=np.float64))).numpy()
    above = np.cumsum(p, axis=-1) > q
    return np.where(above.any(-1), above.argmax(-1) + 1, p.shape[-1]).astype(np.int64)


class LambdaNet(nn.Module):
    """Λ: 3-layer tanh MLP from ``[h_l, h_{l−1}]`` to the logit of λ_l (shared by all layers)."""

    def __init__(self, hidden_size: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * hidden_size, width), nn.Tanh(),
            nn.Linear(width, width), nn.Tanh(),
            nn.Linear(width, 1),
        )

    def forward(self, h: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
        """λ in (0, 1), shape ``h.shape[:-1]``."""
        return torch.sigmoid(self.net(torch.cat([h, h_prev], dim=-1)).squeeze(-1))


def _pairs(pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    prev = torch.cat([torch.zeros_like(pooled[:, :1]), pooled[:, :-1]], dim=1)
    return pooled, prev


class Palbert(TrackedPolicy):
    """Trained λ heads + exit criterion, usable as a :class:`~exitgym.agents.base.Policy`."""

    name = "palbert"
    knob = "q"
    required_observation = "features+hidden+prev"

    def __init__(
        self, net: LambdaNet, hidden_size: int, config: PalbertConfig, q: float = 0.5,
        criterion: str = "q-exit", seed: int = 0,
    ) -> None:
        if criterion not in ("q-exit", "sample"):
            raise ValueError(f"criterion must be 'q-exit' or 'sample', got {criterion!r}")
        if not 0.0 <= q < 1.0:
            raise ValueError(f"q must be in [0, 1), got {q}")
        super().__init__()
        self.net, self.hidden_size, self.config = net.eval(), hidden_size, config
        self.q, self.criterion, self.seed = float(q), criterion, seed
        self._rng = np.random.default_rng(seed)
        self._survive = np.ones(0)

    # ----- training ------------------------------------------------------------------------
    @classmethod
    def fit(cls, cache: LayerCache, config: PalbertConfig | None = None, **kw: Any) -> Palbert:
        """Train Λ on the cache with the exit heads frozen (their logits are cached)."""
        config = config or PalbertConfig()
        gen = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)
        net = LambdaNet(cache.hidden_size, config.hidden)
        pooled = torch.from_numpy(np.array(cache.pooled))
        ce = nn.functional.cross_entropy(
            torch.from_numpy(np.array(cache.logits)).flatten(0, 1),
            torch.from_numpy(np.array(cache.labels)).repeat_interleave(cache.num_layers),
            reduction="none",
        ).view(cache.num_samples, cache.num_layers)
        opt = torch.optim.Adam(net.parameters(), lr=config.lr)
        for _ in range(config.epochs):
            for idx in torch.randperm(cache.num_samples, generator=gen).split(config.batch_size):
                h, h_prev = _pairs(pooled[idx])
                loss = palbert_loss(net(h, h_prev), ce[idx], config.beta, config.lambda_prior)
                opt.zero_grad()
                loss.backward()
                opt.step()
        return cls(net, cache.hidden_size, config, **kw)

    def lambdas(self, cache: LayerCache) -> np.ndarray:
        """λ_l ``[N, L]`` of every cached sample (for analysis and curve sweeps)."""
        with torch.no_grad():
            return self.net(*_pairs(torch.from_numpy(np.array(cache.pooled)))).numpy()

    def with_knob(self, q: float) -> Palbert:
        """Same λ heads, another Q-exit threshold."""
        return Palbert(self.net, self.hidden_size, self.config, q, self.criterion, self.seed)

    def with_criterion(self, criterion: str) -> Palbert:
        """Same λ heads and knob, another exit criterion (``"q-exit"`` or ``"sample"``)."""
        return Palbert(self.net, self.hidden_size, self.config, self.q, criterion, self.seed)

    @staticmethod
    def default_grid(num_layers: int) -> tuple[float, ...]:
        return (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "q": self.q, "criterion": self.criterion}

    @property
    def policy_flops(self) -> float:
        """FLOPs of Λ per decision, charged like an RL policy's (one cost function for all)."""
        from exitgym.agents.mlp_policy import chain_flops

        return chain_flops(self.net)

    # ----- Policy protocol -----------------------------------------------------------------
    def reset(self, num_envs: int) -> None:
        super().reset(num_envs)
        self._survive = np.ones(num_envs)

    def layout_hidden_size(self) -> int:
        return self.hidden_size

    def act(
        self, obs: np.ndarray, infos: dict[str, Any] | None = None, deterministic: bool = True
    ) -> np.ndarray:
        obs, frac, new = self._track(obs, np.float32)
        h, h_prev = self._part(obs, "hidden"), self._part(obs, "prev")
        self._survive[new] = 1.0
        with torch.no_grad():
            lam = self.net(torch.as_tensor(h), torch.as_tensor(h_prev)).numpy()
        if self.criterion == "sample":
            exit_now = self._rng.random(lam.shape[0]) < lam
        else:
            self._survive = self._survive * (1.0 - lam)
            exit_now = (1.0 - self._survive) > self.q
        return self._actions(exit_now, frac)

    # ----- persistence ---------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``palbert.safetensors`` + ``palbert.json`` (atomic writes)."""
        from exitgym.agents.io import save_module

        meta = {"config": asdict(self.config), "hidden_size": self.hidden_size, "q": self.q,
                "criterion": self.criterion, "seed": self.seed}
        return save_module(self.net, Path(directory), "palbert", meta)

    @classmethod
    def load(cls, directory: str | Path) -> Palbert:
        """Inverse of :meth:`save` (safetensors, no pickle)."""
        from exitgym.agents.io import load_module_state

        meta = json.loads((Path(directory) / "palbert.json").read_text())
        config = PalbertConfig(**meta["config"])
        net = LambdaNet(meta["hidden_size"], config.hidden)
        net.load_state_dict(load_module_state(Path(directory), "palbert"))
        return cls(net, meta["hidden_size"], config, meta["q"], meta["criterion"], meta["seed"])
