"""Cost-conditioned exit policies: one trained policy for every budget.

Why: a policy trained at one cost weight α (or one target cost) is one operating point, and a
curve needs one training run per point. A conditioned network (Abels, Roijers, Lenaerts, Nowé &
Steckelmacher, "Dynamic Weights in Multi-Objective Deep Reinforcement Learning", ICML 2019)
takes the preference itself as an input: the policy reads α as one extra feature, and each
REINFORCE update draws α log-uniformly from a range and trains on the reward with that α
(:class:`AlphaConditioning`; the self-critical greedy baseline runs at the same α). A user then
picks α per budget on validation: ``policy.at(alpha)`` is a policy like any
:class:`~exitgym.agents.mlp_policy.MLPPolicy`, and ``CalibratedExit(policy.at(alpha), tau)``
reads it at a threshold too, so one run gives a two-knob family of operating points.

The feature is ``2·(log α − log lo)/(log hi − log lo) − 1``: in ``[−1, 1]`` over the training
range, like the other features' scale, and log-scaled because the useful cost weights span two
orders of magnitude (0.02 and 0.04 differ as much in effect as 0.5 and 1).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exitgym.agents.mlp_policy import MLPPolicy, MLPPolicyConfig
from exitgym.agents.rollout import cost_weighted_shape
from exitgym.agents.seeding import SeedLike

CONDITIONED_RANGE: tuple[float, float] = (0.02, 1.0)
"""Default range α is drawn from in training: from nearly free layers to a weight at which most
inputs exit at layer 1 (issue 22's measurement: on rt-polarity × MiniLM the useful budget-targeted
α lay between about 0.1 and 0.25)."""
CONDITIONED_ALPHAS: tuple[float, ...] = tuple(
    round(float(a), 4) for a in np.geomspace(*CONDITIONED_RANGE, 12))
"""Default α grid a conditioned policy is read at (12 log-spaced values over
:data:`CONDITIONED_RANGE`, both ends included): each α is one operating point, as each θ is for a
rule."""


def check_alpha_range(alpha_range: tuple[float, float]) -> None:
    """Raises ValueError unless ``0 < lo < hi`` (both finite)."""
    lo, hi = (float(a) for a in alpha_range)
    if not (0 < lo < hi < math.inf):
        raise ValueError(f"alpha_range must be (lo, hi) with 0 < lo < hi, got {alpha_range}")


def alpha_feature(alpha: float, alpha_range: tuple[float, float]) -> float:
    """The policy's extra input: ``log α`` mapped linearly onto ``[−1, 1]`` over the range
    (outside it the map extrapolates; the trainer never draws there)."""
    if not alpha > 0:
        raise ValueError(f"a conditioned policy reads a cost weight alpha > 0, got {alpha}")
    lo, hi = (math.log(a) for a in alpha_range)
    return 2.0 * (math.log(alpha) - lo) / (hi - lo) - 1.0


@dataclass(frozen=True)
class ConditionedPolicyConfig(MLPPolicyConfig):
    """An :class:`MLPPolicyConfig` whose ``obs_dim`` counts the α feature (so ``flops``, from the
    widths, charges the extra input)."""

    alpha_range: tuple[float, float] = CONDITIONED_RANGE
    """Range α is drawn from in training (the feature's ``[−1, 1]``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_alpha_range(self.alpha_range)

    @classmethod
    def conditioning(cls, base: MLPPolicyConfig,
                     alpha_range: tuple[float, float]) -> ConditionedPolicyConfig:
        """``base`` (the env's observation) with one more input, the α feature."""
        return cls(**{**asdict(base), "obs_dim": base.obs_dim + 1,
                      "alpha_range": tuple(alpha_range)})


class ConditionedPolicy(MLPPolicy):
    """An MLP policy reading the cost weight α as an extra feature; ``alpha`` is the one it is
    read at now (observations are the env's, the feature is appended)."""

    config: ConditionedPolicyConfig
    config_class = ConditionedPolicyConfig

    def __init__(self, config: ConditionedPolicyConfig, seed: SeedLike = 0,
                 alpha: float | None = None) -> None:
        super().__init__(config, seed)
        lo, hi = config.alpha_range
        self.alpha = math.sqrt(lo * hi) if alpha is None else float(alpha)
        """The cost weight read now (default: the range's geometric middle)."""

    def logits(self, obs: torch.Tensor) -> list[torch.Tensor]:
        """Logits of env observations (``[..., obs_dim − 1]``, the α feature appended) or of
        observations that already hold it (``[..., obs_dim]``)."""
        if obs.shape[-1] == self.config.obs_dim - 1:
            feature = alpha_feature(self.alpha, self.config.alpha_range)
            obs = torch.cat([obs, torch.full((*obs.shape[:-1], 1), feature, dtype=obs.dtype)], -1)
        return super().logits(obs)

    def at(self, alpha: float) -> ConditionedPolicy:
        """This policy read at cost weight ``alpha``: the same weights (shared, not copied) and
        a copy of the sampling generator, so a reading's sampling leaves this one's alone."""
        alpha_feature(alpha, self.config.alpha_range)  # refuses alpha <= 0
        reading = copy.copy(self)
        reading.alpha = float(alpha)
        reading._rng = copy.deepcopy(self._rng)
        return reading

    def describe(self) -> dict[str, Any]:
        return {"method": "cost-conditioned", "alpha": self.alpha, **asdict(self.config)}

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """:meth:`MLPPolicy.save` plus the α it is read at (``policy_class`` names the class
        :func:`load_exit_policy` rebuilds)."""
        return super().save(directory, {**(extra or {}), "policy_class": "ConditionedPolicy",
                                        "alpha": self.alpha})

    def restore_meta(self, meta: dict[str, Any]) -> None:
        self.alpha = float(meta["alpha"])


def load_exit_policy(directory: str | Path) -> MLPPolicy:
    """The MLP policy saved in ``directory``: a :class:`ConditionedPolicy` where one was saved
    (``policy.json``'s ``policy_class``), else an :class:`MLPPolicy`."""
    import json

    meta = json.loads((Path(directory) / "policy.json").read_text())
    cls = ConditionedPolicy if meta.get("policy_class") == "ConditionedPolicy" else MLPPolicy
    return cls.load(directory)


class AlphaConditioning:
    """Cost-conditioned training: one α per update, drawn log-uniformly from the policy's range
    and set on both the env's reward and the policy, so the sampled batch, its self-critical
    greedy baseline and the log-probabilities all use it; :meth:`restore` puts back the env's
    own α afterwards (the policy then reads it, clamped into the range)."""

    def __init__(self, env: Any, policy: ConditionedPolicy, rng: np.random.Generator) -> None:
        self.shape = cost_weighted_shape(env, "cost-conditioned training")
        self.policy, self.rng = policy, rng
        self.home = float(self.shape.alpha)
        """The env's α as made (what the run's final evaluation reads)."""
        lo, hi = policy.config.alpha_range
        self.reading = min(max(self.home, lo), hi)
        """The α the policy is left at between updates: the env's, clamped into the range."""
        policy.alpha = self.reading

    def draw(self) -> float:
        """Draw this update's α and set it on the env's reward and on the policy."""
        lo, hi = (math.log(a) for a in self.policy.config.alpha_range)
        alpha = math.exp(self.rng.uniform(lo, hi))
        self.shape.alpha = self.policy.alpha = alpha
        return alpha

    def restore(self) -> None:
        self.shape.alpha, self.policy.alpha = self.home, self.reading

    @property
    def rng_state(self) -> dict[str, Any]:
        return self.rng.bit_generator.state

    @rng_state.setter
    def rng_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state


def conditioned_config(base: MLPPolicyConfig, alpha_range: tuple[float, float] | None
                       ) -> MLPPolicyConfig:
    """``base`` conditioned on α over ``alpha_range`` (None: ``base`` itself)."""
    if alpha_range is None:
        return base
    return ConditionedPolicyConfig.conditioning(base, alpha_range)


def make_policy(config: MLPPolicyConfig, seed: SeedLike) -> MLPPolicy:
    """The policy of ``config``: conditioned when it is a :class:`ConditionedPolicyConfig`."""
    cls = ConditionedPolicy if isinstance(config, ConditionedPolicyConfig) else MLPPolicy
    return cls(config, seed)


__all__ = ["CONDITIONED_ALPHAS", "CONDITIONED_RANGE", "AlphaConditioning", "ConditionedPolicy",
           "ConditionedPolicyConfig", "alpha_feature", "conditioned_config", "load_exit_policy",
           "make_policy"]
