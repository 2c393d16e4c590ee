"""A plug-in of exitgym methods: one exit rule and one trainer, registered when imported.

Put this file's folder on ``PYTHONPATH`` and pass ``--import my_exit_methods`` to any command::

    exitgym compare --import my_exit_methods --rules falling-maxprob,entropy ...
    exitgym train --import my_exit_methods --agent reinforce-wide ...

The comparison or run records the import and imports it again for ``evaluate`` / ``replay``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from exitgym import register_agent, register_rule
from exitgym.agents.base import softmax_stats
from exitgym.agents.reinforce import Reinforce, ReinforceConfig
from exitgym.agents.rules import ExitRule


@register_rule("falling-maxprob")
class FallingMaxProb(ExitRule):
    """Exit when the max probability exceeds theta minus 0.05 per layer already run."""

    knob = "theta"  # what compare sweeps over default_grid
    knob_bounds = (0.0, 1.0)

    def __init__(self, theta: float = 0.9) -> None:
        super().__init__(theta)

    @classmethod
    def default_grid(cls, num_layers: int) -> tuple[float, ...]:
        return (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)

    def exit_mask(self, layer: np.ndarray, new: np.ndarray, logits: np.ndarray | None,
                  infos: dict[str, Any] | None) -> np.ndarray:
        """Bool per slot: exit now (``layer`` is 1-based; the logits of the current head)."""
        return softmax_stats(logits).max_prob > self.theta - 0.05 * (layer - 1)


@dataclass(frozen=True)
class WideConfig(ReinforceConfig):
    """REINFORCE's settings with a wider policy layer."""

    hidden: int = 128


@register_agent("reinforce-wide", config=WideConfig)
class WideReinforce(Reinforce):
    """REINFORCE with a 128-unit policy layer."""
