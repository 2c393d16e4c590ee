"""A trained exit policy read at a calibrated threshold: exit when ``P(exit | obs) >= τ``.

Why: a budget-targeted agent is trained towards one cost, but its greedy reading (exit when
``P(exit) > 0.5``) lands wherever the learned probabilities fall, often far from the target: an
agent whose exit probabilities hover near 0.5 exits every input or none (measured in the
comparisons, design §5). The exit rules do not have that problem because their threshold θ is
chosen on validation for each budget. Reading the trained policy at a threshold ``τ`` does the
same for a learned method: one trained agent becomes a curve of operating points (lower ``τ``
exits earlier), and the budget table selects ``τ`` on validation like any rule's knob. ``τ = 0.5``
is the greedy reading. The policy's own FLOPs are unchanged (one forward pass per decision).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["CALIBRATION_TAUS", "CalibratedExit"]

CALIBRATION_TAUS: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.99)
"""Default thresholds ``τ`` a trained exit policy is read at (0.5: its greedy reading). Spread in
log-odds, not evenly in ``[0, 1]``: trained policies are confident, and on the generation demo
``τ`` from 0.1 to 0.9 moved a hardness agent's cost by under 1 % (measured)."""


class CalibratedExit:
    """``policy`` (an exit-or-continue :class:`~exitgym.agents.mlp_policy.MLPPolicy`) exiting
    when its exit probability reaches ``tau``.

    Args:
        policy: a trained policy with one ``Discrete(2)`` action (0 continue, 1 exit).
        tau: the threshold, in ``[0, 1]`` (0 exits at once, 1 only when ``P(exit) = 1``).

    Raises:
        ValueError: ``tau`` outside ``[0, 1]``, or a policy that is not a single exit decision.
    """

    knob = "tau"

    def __init__(self, policy: Any, tau: float) -> None:
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau must be a number in [0, 1], got {tau!r}")
        config = getattr(policy, "config", None)
        if config is None or tuple(config.nvec) != (2,) or config.multi_discrete:
            raise ValueError("CalibratedExit reads a policy with one Discrete(2) exit decision "
                             f"(an MLPPolicy), got {type(policy).__name__}"
                             + ("" if config is None else f" with nvec {tuple(config.nvec)}"))
        self.policy, self.tau = policy, float(tau)
        self.required_observation = policy.required_observation

    def reset(self, num_envs: int) -> None:
        self.policy.reset(num_envs)

    def exit_probability(self, obs: np.ndarray) -> np.ndarray:
        """``P(exit | obs)`` per row (float64 ``[B]``)."""
        import torch

        obs_t = torch.as_tensor(np.atleast_2d(np.asarray(obs, dtype=np.float32)))
        with torch.inference_mode():
            logits = self.policy.logits(obs_t)[0].double()
            return torch.softmax(logits, dim=-1)[:, 1].numpy()

    def act(self, obs: np.ndarray, infos: dict[str, Any] | None = None,
            deterministic: bool = True) -> np.ndarray:
        """Exit (1) where ``P(exit) >= tau``; the same reading whether or not deterministic."""
        return (self.exit_probability(obs) >= self.tau).astype(np.int64)

    @property
    def policy_flops(self) -> float:
        return float(self.policy.policy_flops)

    def describe(self) -> dict[str, Any]:
        return {"method": "calibrated-exit", "tau": self.tau, "policy": self.policy.describe()}
