"""BERxiT learning-to-exit (LTE): a small regressor of "this layer's head is correct".

BERxiT trains an LTE module with a squared error to the 0/1 correctness of each layer's head and
exits when its score exceeds a threshold (0.5 in the paper; here the knob ``theta`` is swept).
We train it on the cache with the heads frozen. Inputs (``inputs=``):

- ``"stats"`` (default): ``[max prob, normalised entropy, top-2 margin, layer fraction]`` computed
  from the head logits — needs observation ``"features+logits"``, same as the other rules.
- ``"hidden"``: the pooled state plus the layer fraction (closer to the paper, which reads the
  hidden state) — needs observation ``"features+logits+hidden"``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from exitgym.agents.base import TrackedPolicy, softmax_stats
from exitgym.backbones.layer_cache import LayerCache

_OBS = {"stats": "features+logits", "hidden": "features+logits+hidden"}


@dataclass(frozen=True)
class BerxitConfig:
    """Hyper-parameters of the LTE regressor."""

    inputs: str = "stats"
    """``"stats"`` (confidence statistics of the head) or ``"hidden"`` (pooled state)."""
    width: int = 32
    """Hidden width of the one-hidden-layer MLP (0 = linear, as in BERxiT)."""
    lr: float = 3e-3
    """Adam learning rate."""
    epochs: int = 30
    """Passes over the (sample, layer) pairs."""
    batch_size: int = 512
    """Pairs per gradient step."""
    seed: int = 0
    """Seed of initialisation and shuffling."""

    def __post_init__(self) -> None:
        if self.inputs not in _OBS:
            raise ValueError(
                f"BerxitConfig.inputs must be one of {sorted(_OBS)}, got {self.inputs!r}"
            )


def lte_inputs(
    logits: np.ndarray, layer_fraction: np.ndarray, hidden: np.ndarray | None, inputs: str
) -> np.ndarray:
    """Regressor inputs ``[..., D]`` from logits ``[..., C]`` and the layer fraction ``[...]``."""
    frac = np.asarray(layer_fraction, dtype=np.float64)[..., None]
    if inputs == "hidden":
        if hidden is None:
            raise ValueError("BERxiT with inputs='hidden' needs the pooled states")
        return np.concatenate([np.asarray(hidden, dtype=np.float64), frac], -1).astype(np.float32)
    s = softmax_stats(logits)
    cols = [s.max_prob[..., None], s.norm_entropy[..., None], s.margin[..., None], frac]
    return np.concatenate(cols, -1).astype(np.float32)


class Berxit(TrackedPolicy):
    """Trained LTE regressor + threshold, usable as a :class:`~exitgym.agents.base.Policy`."""

    name = "berxit"
    knob = "theta"

    def __init__(self, net: nn.Module, config: BerxitConfig, theta: float = 0.5) -> None:
        super().__init__()
        self.net, self.config, self.theta = net.eval(), config, float(theta)
        self.required_observation = _OBS[config.inputs]

    @staticmethod
    def _make_net(in_dim: int, width: int) -> nn.Module:
        if width == 0:
            return nn.Sequential(nn.Linear(in_dim, 1), nn.Sigmoid())
        return nn.Sequential(nn.Linear(in_dim, width), nn.Tanh(), nn.Linear(width, 1), nn.Sigmoid())

    @classmethod
    def fit(
        cls, cache: LayerCache, config: BerxitConfig | None = None, theta: float = 0.5
    ) -> Berxit:
        """Fit the regressor to the heads' 0/1 correctness on every (sample, layer) pair (MSE)."""
        config = config or BerxitConfig()
        num_layers = cache.num_layers
        frac = np.broadcast_to(np.arange(1, num_layers + 1) / num_layers, cache.correct.shape)
        x = lte_inputs(cache.logits, frac, cache.pooled, config.inputs)
        x = x.reshape(cache.num_samples * num_layers, -1)
        y = cache.correct.reshape(-1).astype(np.float32)
        torch.manual_seed(config.seed)
        gen = torch.Generator().manual_seed(config.seed)
        net = cls._make_net(x.shape[1], config.width)
        xt, yt = torch.as_tensor(x), torch.as_tensor(y)
        opt = torch.optim.Adam(net.parameters(), lr=config.lr)
        for _ in range(config.epochs):
            for idx in torch.randperm(len(yt), generator=gen).split(config.batch_size):
                loss = nn.functional.mse_loss(net(xt[idx]).squeeze(-1), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return cls(net, config, theta)

    def scores(self, cache: LayerCache) -> np.ndarray:
        """LTE score ``[N, L]`` of every cached (sample, layer)."""
        num_layers = cache.num_layers
        frac = np.broadcast_to(np.arange(1, num_layers + 1) / num_layers, cache.correct.shape)
        x = lte_inputs(cache.logits, frac, cache.pooled, self.config.inputs)
        with torch.no_grad():
            return self.net(torch.as_tensor(x)).squeeze(-1).numpy()

    def with_knob(self, theta: float) -> Berxit:
        return Berxit(self.net, self.config, theta)

    @staticmethod
    def default_grid(num_layers: int) -> tuple[float, ...]:
        return (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99)

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "theta": self.theta, "inputs": self.config.inputs}

    @property
    def policy_flops(self) -> float:
        """FLOPs of the exit scorer per decision, charged like an RL policy's."""
        from exitgym.agents.mlp_policy import chain_flops

        return chain_flops(self.net)

    def layout_hidden_size(self) -> int | None:
        if self.config.inputs != "hidden":
            return None
        first = self.net[0]
        assert isinstance(first, nn.Linear)
        return first.in_features - 1

    def act(
        self, obs: np.ndarray, infos: dict[str, Any] | None = None, deterministic: bool = True
    ) -> np.ndarray:
        obs, frac, _ = self._track(obs, np.float32)
        hid = self._part(obs, "hidden", optional=True)
        x = lte_inputs(self._part(obs, "logits"), frac, hid, self.config.inputs)
        with torch.no_grad():
            score = self.net(torch.as_tensor(x)).squeeze(-1).numpy()
        return self._actions(score > self.theta, frac)

    def save(self, directory: str | Path) -> Path:
        from exitgym.agents.io import save_module

        return save_module(self.net, Path(directory), "berxit",
                           {"config": asdict(self.config), "theta": self.theta,
                            "in_dim": int(self.net[0].in_features)})

    @classmethod
    def load(cls, directory: str | Path) -> Berxit:
        from exitgym.agents.io import load_module_state

        meta = json.loads((Path(directory) / "berxit.json").read_text())
        config = BerxitConfig(**meta["config"])
        net = cls._make_net(meta["in_dim"], config.width)
        net.load_state_dict(load_module_state(Path(directory), "berxit"))
        return cls(net, config, meta["theta"])
