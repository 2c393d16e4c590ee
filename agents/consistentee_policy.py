"""ConsistentEE's exit policy as in its official code: one small network per layer.

The official ConsistentEE (``modeling_bert.py``: ``Policy_network = nn.ModuleList([Policy(H, 1)
for _ in range(num_hidden_layers)])``) adds a policy network at every layer, next to that
layer's internal classifier and reading the same input, the pooled state ``h_l``: ``Linear(H,
32)``-GELU-``Linear(32, 1)``-sigmoid gives ``P(exit at l | h_l)``. The networks share nothing,
so a layer's decision depends on that layer's weights alone. It is trained by REINFORCE with the
mean-of-K baseline (every sample rolled out K times, baseline = the mean of its K returns;
``sample_K = 8`` in the official ``run_glue.py``).

Here the per-layer networks are :class:`PerLayerExitPolicy`, an
:class:`~exitgym.agents.mlp_policy.MLPPolicy` whose network is ``L`` such nets: sampling, the
greedy reading, log-probabilities, persistence (safetensors) and the cost are the MLP policy's.
It reads the ``hidden+depth`` observation: ``hidden`` is the net's input, ``depth``'s layer
fraction ``l/L`` only picks net ``l`` (no layer input enters a net). The sigmoid output is
exposed as the two logits ``[0, z]`` of a ``Discrete(2)`` decision (``softmax([0, z])[1] =
σ(z)``), so :class:`~exitgym.agents.calibrated.CalibratedExit` reads it at a threshold τ
unchanged, and :meth:`PerLayerExitPolicy.exit_probability` gives ``σ(z)`` directly. One decision
is charged the FLOPs of the one net it evaluates, ``mlp_flops([H, 32, 1])``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from exitgym.agents.mlp_policy import MLPPolicy, linear_chain, nvec_of
from exitgym.agents.reinforce import Reinforce, ReinforceConfig
from exitgym.agents.rollout import env_attr
from exitgym.agents.seeding import SeedLike
from exitgym.backbones.flops import mlp_flops
from exitgym.envs.observations import ObsLayout

__all__ = ["MEAN_OF_K", "PER_LAYER_HIDDEN", "PER_LAYER_OBSERVATION", "PerLayerExitPolicy",
           "PerLayerPolicyConfig", "PerLayerReinforce", "official_reinforce",
           "rollouts_per_sample"]

PER_LAYER_OBSERVATION = "hidden+depth"
"""What the per-layer policy reads: the pooled state (each net's input) and the depth view
(whose layer fraction picks the net)."""
PER_LAYER_HIDDEN = 32
"""Width of each per-layer net (the official ``Policy``'s ``Linear(H, 32)``)."""
MEAN_OF_K = 8
"""Rollouts per sample of the mean-of-K baseline (the official ``sample_K``)."""


@dataclass(frozen=True)
class PerLayerPolicyConfig:
    """Architecture of :class:`PerLayerExitPolicy`."""

    obs_dim: int
    """Length of the observation vector (``H`` plus the depth view's entries)."""
    num_layers: int
    """``L``: one net per layer of the backbone."""
    hidden: int = PER_LAYER_HIDDEN
    """Width of each net's hidden layer."""
    observation: str = PER_LAYER_OBSERVATION
    """Observation spec (must hold ``hidden`` and ``depth``; checked by ``evaluate``)."""

    nvec: ClassVar[tuple[int, ...]] = (2,)
    """One exit-or-continue decision (what CalibratedExit and the trainer expect)."""
    multi_discrete: ClassVar[bool] = False
    """A ``Discrete(2)`` action, not MultiDiscrete."""

    def __post_init__(self) -> None:
        if self.num_layers < 1 or self.hidden < 1:
            raise ValueError(f"bad PerLayerPolicyConfig sizes: {self}")
        self.layout  # noqa: B018 - raises when the observation cannot hold hidden and depth

    @cached_property
    def layout(self) -> ObsLayout:
        """Where ``hidden`` and ``depth`` sit in the observation vector.

        Raises:
            ValueError: the observation lacks one of them, or its sizes do not add up.
        """
        layout = ObsLayout.from_spec(self.observation, self.obs_dim)
        missing = {"hidden", "depth"} - set(layout.slices)
        if missing:
            raise ValueError(f"the per-layer ConsistentEE policy reads {sorted(missing)}, "
                             f"missing from observation {self.observation!r}")
        return layout

    @property
    def hidden_size(self) -> int:
        """``H``, the input width of every net."""
        part = self.layout.slices["hidden"]
        return part.stop - part.start

    @property
    def layer_sizes(self) -> list[int]:
        """Widths of one net: ``[H, hidden, 1]``."""
        return [self.hidden_size, self.hidden, 1]

    @property
    def flops(self) -> float:
        """FLOPs of one decision: the one net of the current layer
        (:func:`~exitgym.backbones.flops.mlp_flops`), whatever ``L``."""
        return mlp_flops(self.layer_sizes)

    @classmethod
    def from_spaces(cls, observation_space: Any, action_space: Any, num_layers: int,
                    hidden: int = PER_LAYER_HIDDEN,
                    observation: str = PER_LAYER_OBSERVATION) -> PerLayerPolicyConfig:
        """The policy of an exit env with these (single-slot) spaces and depth ``L``.

        Raises:
            ValueError: the action is not one ``Discrete(2)`` exit decision.
        """
        nvec, multi = nvec_of(action_space)
        if nvec != cls.nvec or multi:
            raise ValueError(f"the per-layer ConsistentEE policy makes one exit-or-continue "
                             f"decision (Discrete(2)), got {action_space}")
        return cls(obs_dim=int(np.prod(observation_space.shape)), num_layers=num_layers,
                   hidden=hidden, observation=observation)


class PerLayerExitPolicy(MLPPolicy):
    """``L`` networks ``Linear(H, 32)``-GELU-``Linear(32, 1)``; net ``l`` decides at layer ``l``.

    ``self.net[l - 1]`` is layer ``l``'s net (its own parameters). Greedy: exit iff ``σ(z) >
    0.5`` (ties continue, as the official ``prob > 0.5``).
    """

    config_class: ClassVar[type[Any]] = PerLayerPolicyConfig

    @staticmethod
    def build_network(config: Any) -> nn.Module:
        return nn.ModuleList(linear_chain(config.layer_sizes, nn.GELU)
                             for _ in range(config.num_layers))

    def layer_index(self, obs: torch.Tensor) -> torch.Tensor:
        """0-based layer of each observation, from the depth view's ``l/L`` (int64 ``[...]``)."""
        depth = obs[..., self.config.layout.slices["depth"].start]
        layer = torch.round(depth.double() * self.config.num_layers).long() - 1
        return layer.clamp(0, self.config.num_layers - 1)

    def exit_logit(self, obs: torch.Tensor) -> torch.Tensor:
        """``z`` with ``P(exit) = σ(z)``, each row by its own layer's net (``[...]``)."""
        hidden = obs[..., self.config.layout.slices["hidden"]]
        layer = self.layer_index(obs)
        z = hidden.new_zeros(hidden.shape[:-1])
        for index in torch.unique(layer).tolist():  # rows of one layer go through its net
            rows = layer == index
            z = z.index_put((rows,), self.net[index](hidden[rows]).squeeze(-1))
        return z

    def logits(self, obs: torch.Tensor) -> list[torch.Tensor]:
        """``[0, z]`` per row: the Bernoulli ``σ(z)`` as a two-way softmax (continue, exit)."""
        z = self.exit_logit(obs)
        return [torch.stack([torch.zeros_like(z), z], dim=-1)]

    def exit_probability(self, obs: np.ndarray) -> np.ndarray:
        """``P(exit | obs) = σ(z)`` per row (float64 ``[B]``): what a threshold τ reads."""
        obs_t = torch.as_tensor(np.atleast_2d(np.asarray(obs, dtype=np.float32)))
        with torch.inference_mode():
            return torch.sigmoid(self.exit_logit(obs_t).double()).numpy()


def rollouts_per_sample(batch_size: int) -> int:
    """K of the mean-of-K baseline for ``batch_size`` episodes per update: the official
    :data:`MEAN_OF_K`, or the largest divisor of it that divides a smaller or odd-sized batch.

    Raises:
        ValueError: an odd batch size (K would be 1: no baseline at all).
    """
    k = math.gcd(batch_size, MEAN_OF_K)
    if k < 2:
        raise ValueError(f"ConsistentEE's mean-of-K baseline needs an even batch size (K "
                         f"rollouts per sample, K = {MEAN_OF_K} when it divides the batch), "
                         f"got {batch_size}")
    return k


def official_reinforce(**knobs: Any) -> ReinforceConfig:
    """ConsistentEE's REINFORCE: the mean-of-K baseline (K from :func:`rollouts_per_sample`
    unless ``k`` is given), nets of width :data:`PER_LAYER_HIDDEN`; ``knobs`` override or add
    (batch size, seed, target cost, learning rate, ...)."""
    batch_size = knobs.get("batch_size", ReinforceConfig.batch_size)
    return ReinforceConfig(**{"baseline": "mean-of-k", "k": rollouts_per_sample(batch_size),
                              "hidden": PER_LAYER_HIDDEN, **knobs})


class PerLayerReinforce(Reinforce):
    """REINFORCE (any :data:`~exitgym.agents.base.ADVANTAGE_BASELINES`) on
    :class:`PerLayerExitPolicy`; ConsistentEE uses it with ``mean-of-k``.

    ``config.hidden`` is each net's width; ``config.num_layers`` must be 2 (each net is two
    linear layers). The env must expose ``num_layers`` and the ``hidden+depth`` observation.
    """

    def __init__(self, env: Any, config: ReinforceConfig | None = None, **kwargs: Any) -> None:
        config = config or official_reinforce()
        if config.num_layers != 2:
            raise ValueError(f"each per-layer net has 2 linear layers; ReinforceConfig."
                             f"num_layers is {config.num_layers}")
        super().__init__(env, config, **kwargs)

    @staticmethod
    def policy_config(observation_space: Any, action_space: Any, config: ReinforceConfig,
                      observation: str, num_layers: int = 1) -> PerLayerPolicyConfig:
        """The policy's config; its FLOPs (one net per decision) do not depend on
        ``num_layers``, which the trainer takes from its env."""
        return PerLayerPolicyConfig.from_spaces(observation_space, action_space, num_layers,
                                                config.hidden, observation)

    def _make_policy(self, observation_space: Any, action_space: Any, observation: str,
                     seed: SeedLike) -> MLPPolicy:
        num_layers = env_attr(self.env, "num_layers")
        if not num_layers:
            raise ValueError("the per-layer policy needs an env exposing num_layers")
        cfg = self.policy_config(observation_space, action_space, self.config, observation,
                                 int(num_layers))
        return PerLayerExitPolicy(cfg, seed=seed)
