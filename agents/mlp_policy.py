"""The small MLP policy of the learned agents (ConsistentEE's per-layer nets subclass it).

One network for Discrete(n) and MultiDiscrete(nvec) action spaces: it outputs ``sum(nvec)`` logits
read as independent categoricals (one per action dimension). It implements the
:class:`~exitgym.agents.base.Policy` protocol (greedy = argmax, sampling with its own seeded numpy
generator so runs are reproducible; initialisation and sampling are independent children of the
seed, :mod:`exitgym.agents.seeding`) and reports its own cost, ``policy_flops``, so the env can
charge it (``gym.make(..., policy_flops=policy.policy_flops)``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from exitgym.agents.io import load_module_state, save_module
from exitgym.agents.seeding import SeedLike, policy_streams
from exitgym.backbones.flops import mlp_flops


def chain_flops(*modules: nn.Module | None) -> float:
    """FLOPs per input of the chain of ``nn.Linear`` layers found in ``modules``, in order.

    The one cost function of every decision network exitgym charges (REINFORCE policies, SB3's
    acting network, PALBERT's Λ, BERxiT's scorer): the widths go to
    :func:`~exitgym.backbones.flops.mlp_flops`, the same function as the exit heads'.

    Raises:
        ValueError: no linear layer, or consecutive layers whose widths do not chain.
    """
    linears = [m for part in modules if part is not None for m in part.modules()
               if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("chain_flops needs at least one nn.Linear layer")
    sizes = [linears[0].in_features]
    for layer in linears:
        if layer.in_features != sizes[-1]:
            raise ValueError(f"linear layers do not chain: {sizes[-1]} -> {layer.in_features}")
        sizes.append(layer.out_features)
    return mlp_flops(sizes)


@dataclass(frozen=True)
class MLPPolicyConfig:
    """Architecture of the policy network."""

    obs_dim: int
    """Length of the observation vector."""
    nvec: tuple[int, ...]
    """Number of choices per action dimension (``(2,)`` for EarlyExit's Discrete(2))."""
    hidden: int = 64
    """Width of the hidden layer."""
    num_layers: int = 2
    """Number of linear layers (2 = Linear-ReLU-Linear)."""
    multi_discrete: bool = False
    """True when the env's action space is MultiDiscrete (actions are ``[B, k]``)."""
    observation: str = "features"
    """Observation spec the policy was trained on (checked by ``evaluate``)."""

    def __post_init__(self) -> None:
        if self.obs_dim <= 0 or self.hidden <= 0 or self.num_layers < 1:
            raise ValueError(f"bad MLPPolicyConfig sizes: {self}")
        if not self.nvec or min(self.nvec) < 1:
            raise ValueError(f"nvec must be non-empty positive ints, got {self.nvec}")

    @classmethod
    def from_spaces(
        cls, observation_space: Any, action_space: Any, hidden: int, num_layers: int,
        observation: str,
    ) -> MLPPolicyConfig:
        """The policy acting in an env with these (single-slot) spaces; no other size matters."""
        nvec, multi = nvec_of(action_space)
        return cls(obs_dim=int(np.prod(observation_space.shape)), nvec=nvec, hidden=hidden,
                   num_layers=num_layers, multi_discrete=multi, observation=observation)

    @property
    def layer_sizes(self) -> list[int]:
        """Widths from the observation to the logits (one linear layer between neighbours)."""
        return [self.obs_dim] + [self.hidden] * (self.num_layers - 1) + [sum(self.nvec)]

    @property
    def flops(self) -> float:
        """FLOPs of one forward pass (:func:`~exitgym.backbones.flops.mlp_flops`, per step).

        Known from the config alone, so an env can be made charging them before the policy
        exists (``gym.make(..., policy_flops=config.flops)``); it equals :func:`chain_flops` of
        the built network.
        """
        return mlp_flops(self.layer_sizes)


def nvec_of(action_space: Any) -> tuple[tuple[int, ...], bool]:
    """``(nvec, multi_discrete)`` of a gymnasium Discrete or MultiDiscrete space."""
    from gymnasium import spaces

    if isinstance(action_space, spaces.Discrete):
        return (int(action_space.n),), False
    if isinstance(action_space, spaces.MultiDiscrete):
        return tuple(int(n) for n in np.asarray(action_space.nvec).ravel()), True
    raise TypeError(
        f"the MLP policy supports Discrete and MultiDiscrete action spaces, got {action_space}"
    )


def linear_chain(sizes: list[int], activation: type[nn.Module]) -> nn.Sequential:
    """``Linear(sizes[0], sizes[1])``, ``activation``, ..., ``Linear(sizes[-2], sizes[-1])``."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)



class MLPPolicy(nn.Module):
    """Observation -> independent categorical logits per action dimension.

    Subclasses with another network (ConsistentEE's per-layer nets) override
    :meth:`build_network` and :meth:`logits` and name their config class; sampling, the greedy
    reading, log-probabilities, cost and persistence are this class's.
    """

    config_class: ClassVar[type[Any]] = MLPPolicyConfig
    """The config dataclass :meth:`load` rebuilds from ``policy.json`` (a subclass's own)."""

    def __init__(self, config: Any, seed: SeedLike = 0) -> None:
        """Build the network; ``seed`` (an int or a trainer's spawned stream) fixes the weights
        and, through an independent child stream, the sampled actions."""
        super().__init__()
        self.config = config
        self.required_observation = config.observation
        init_seed, self._rng = policy_streams(seed)
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(init_seed)  # initialisation depends on the seed only
        self.net = self.build_network(config)
        torch.random.set_rng_state(gen_state)
        self.epsilon = 0.0
        """Exploration: with this probability a sampled action is uniform (training only)."""

    @staticmethod
    def build_network(config: Any) -> nn.Module:
        """The network (``self.net``), built under the seeded initialisation."""
        return linear_chain(config.layer_sizes, nn.ReLU)

    # ----- distribution --------------------------------------------------------------------
    def logits(self, obs: torch.Tensor) -> list[torch.Tensor]:
        """One ``[..., n_i]`` logits tensor per action dimension."""
        return list(torch.split(self.net(obs), list(self.config.nvec), dim=-1))

    def log_prob_entropy(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of ``actions`` and policy entropy, both summed over action dims.

        Args:
            obs: ``[..., D]`` observations.
            actions: ``[...]`` (Discrete) or ``[..., k]`` (MultiDiscrete) int64 actions.
        """
        acts = actions if self.config.multi_discrete else actions.unsqueeze(-1)
        logp, ent = torch.zeros(obs.shape[:-1]), torch.zeros(obs.shape[:-1])
        for i, lg in enumerate(self.logits(obs)):
            lsm = torch.log_softmax(lg, dim=-1)
            logp = logp + lsm.gather(-1, acts[..., i : i + 1]).squeeze(-1)
            ent = ent - (lsm.exp() * lsm).sum(-1)
        return logp, ent

    # ----- Policy protocol -----------------------------------------------------------------
    def reset(self, num_envs: int) -> None:
        """Stateless: nothing to reset."""

    def seed(self, seed: SeedLike) -> None:
        """Reseed the sampling generator (sampled actions and epsilon-greedy): the stream a
        policy built with ``seed`` starts with."""
        self._rng = policy_streams(seed)[1]

    @property
    def rng_state(self) -> dict[str, Any]:
        """State of the sampling generator (JSON-able; checkpoints store it)."""
        return self._rng.bit_generator.state

    @rng_state.setter
    def rng_state(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state

    def act(
        self, obs: np.ndarray, infos: dict[str, Any] | None = None, deterministic: bool = True
    ) -> np.ndarray:
        """Greedy (argmax) or sampled actions for a batch ``[B, D]``."""
        obs_t = torch.as_tensor(np.atleast_2d(np.asarray(obs, dtype=np.float32)))
        if deterministic:  # argmax of the logits is argmax of the softmax: skip it (hot path)
            with torch.inference_mode():
                greedy = [lg.argmax(-1).numpy() for lg in self.logits(obs_t)]
            actions = np.stack(greedy, -1).astype(np.int64)
            return actions if self.config.multi_discrete else actions[:, 0]
        with torch.no_grad():
            groups = [torch.softmax(lg.double(), -1).numpy() for lg in self.logits(obs_t)]
        cols = []
        for probs in groups:
            u = self._rng.random((probs.shape[0], 1))
            choice = (u > np.cumsum(probs, axis=-1)).sum(-1).clip(max=probs.shape[-1] - 1)
            if self.epsilon > 0:
                explore = self._rng.random(probs.shape[0]) < self.epsilon
                uniform = self._rng.integers(probs.shape[-1], size=probs.shape[0])
                choice = np.where(explore, uniform, choice)
            cols.append(choice)
        actions = np.stack(cols, -1).astype(np.int64)
        return actions if self.config.multi_discrete else actions[:, 0]

    # ----- cost and persistence ------------------------------------------------------------
    @property
    def policy_flops(self) -> float:
        """FLOPs of one forward pass (:attr:`MLPPolicyConfig.flops`), what the env charges."""
        return self.config.flops

    def describe(self) -> dict[str, Any]:
        return {"method": "mlp-policy", **asdict(self.config)}

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``policy.safetensors`` + ``policy.json`` (config and ``extra``), atomically."""
        meta = {"config": asdict(self.config), **(extra or {})}
        return save_module(self, Path(directory), "policy", meta)

    @classmethod
    def load(cls, directory: str | Path) -> MLPPolicy:
        """Inverse of :meth:`save` (safetensors, no pickle); a subclass loads its own config."""
        meta = json.loads((Path(directory) / "policy.json").read_text())
        # JSON has lists; the configs hold tuples (nvec, a conditioned policy's alpha range)
        cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
        policy = cls(cls.config_class(**cfg))
        policy.load_state_dict(load_module_state(Path(directory), "policy"))
        policy.restore_meta(meta)
        return policy

    def restore_meta(self, meta: dict[str, Any]) -> None:
        """Set what :meth:`save` stored besides the config and weights (nothing here)."""
