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

__all__ = ["CALIBRATION_TAUS", "GREEDY_TAU", "CalibratedExit", "calibration_grid",
           "exit_probabilities", "is_exit_policy"]

GREEDY_TAU = 0.5
"""The threshold of the greedy reading (argmax of two actions)."""

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
        if not is_exit_policy(policy):
            config = getattr(policy, "config", None)
            nvec = getattr(config, "nvec", None)
            raise ValueError("CalibratedExit reads a policy with one Discrete(2) exit decision "
                             f"(an MLPPolicy, or a policy with exit_probability(obs)), got "
                             f"{type(policy).__name__}"
                             + ("" if nvec is None else f" with nvec {tuple(nvec)}"))
        self.policy, self.tau = policy, float(tau)
        self.required_observation = policy.required_observation

    def reset(self, num_envs: int) -> None:
        self.policy.reset(num_envs)

    def exit_probability(self, obs: np.ndarray) -> np.ndarray:
        """``P(exit | obs)`` per row (float64 ``[B]``)."""
        return exit_probabilities(self.policy, obs)

    def act(self, obs: np.ndarray, infos: dict[str, Any] | None = None,
            deterministic: bool = True) -> np.ndarray:
        """Exit (1) where ``P(exit) >= tau``; the same reading whether or not deterministic."""
        return (self.exit_probability(obs) >= self.tau).astype(np.int64)

    @property
    def policy_flops(self) -> float:
        return float(self.policy.policy_flops)

    def describe(self) -> dict[str, Any]:
        return {"method": "calibrated-exit", "tau": self.tau, "policy": self.policy.describe()}


def is_exit_policy(policy: Any) -> bool:
    """A policy :class:`CalibratedExit` can read: one ``Discrete(2)`` decision whose exit
    probability it gives (an MLPPolicy-like ``config`` and ``logits``, or ``exit_probability``)."""
    if callable(getattr(policy, "exit_probability", None)):
        return True
    config = getattr(policy, "config", None)
    return (config is not None and tuple(getattr(config, "nvec", ())) == (2,)
            and not getattr(config, "multi_discrete", True) and hasattr(policy, "logits"))


def exit_probabilities(policy: Any, obs: np.ndarray) -> np.ndarray:
    """``P(exit | obs)`` of an exit policy (:func:`is_exit_policy`) per row (float64 ``[B]``)."""
    own = getattr(policy, "exit_probability", None)
    if callable(own):
        return np.asarray(own(obs), dtype=np.float64)
    import torch

    obs_t = torch.as_tensor(np.atleast_2d(np.asarray(obs, dtype=np.float32)))
    with torch.inference_mode():
        logits = policy.logits(obs_t)[0].double()
        return torch.softmax(logits, dim=-1)[:, 1].numpy()


def calibration_grid(policy: Any, env: Any, size: int = 12, seed: int = 0) -> tuple[float, ...]:
    """Thresholds ``τ`` whose readings of ``policy`` spread its mean exit depth evenly over the
    range it can reach on ``env`` (the greedy ``τ = 0.5`` always included).

    Why per policy: a fixed grid in ``[0, 1]`` wastes most of its points where a trained policy's
    probabilities never fall (an agent whose ``P(exit)`` is 0.11–0.14 at every layer needs
    thresholds in that band). One never-exit probe rollout records ``P(exit)`` at every layer of
    every sample (on an exit env the observation at a layer does not depend on earlier decisions:
    continuing is the only way to reach it); a sample exits at the first layer whose probability
    reaches ``τ``, so the mean exit depth of any ``τ`` follows without another rollout, and up to
    ``size`` thresholds are picked (among 401 quantiles of the running maxima) whose depths are
    closest to ``size`` evenly spaced depths between the earliest and the latest reachable. Every
    returned ``τ`` is then evaluated by the ordinary evaluation like any rule's knob. Run the probe
    on the selection split: the grid is part of what validation chooses.
    """
    from exitgym.agents.rollout import num_samples_of, run_episodes

    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    ids = np.arange(num_samples_of(env))
    blocks = run_episodes(env, lambda o, i: np.zeros(len(np.atleast_2d(o)), dtype=np.int64),
                          ids, seed, on_block_start=getattr(policy, "reset", None))
    maxima = []
    for ro in blocks:  # [T, B]: every probe episode runs to the last layer
        steps, width = ro.alive.shape
        probs = np.stack([exit_probabilities(policy, ro.obs[t]) for t in range(steps - 1)]) \
            if steps > 1 else np.zeros((0, width))
        probs = np.where(ro.alive[:steps - 1], probs, 0.0)
        maxima.append(np.maximum.accumulate(probs, axis=0).T)  # [B, decisions]
    running = np.concatenate(maxima, axis=0)
    candidates = np.unique(np.concatenate([
        np.quantile(running, np.linspace(0.0, 1.0, 401)) if running.size else np.zeros(0),
        [0.0, GREEDY_TAU, 1.0]]))
    candidates = candidates[(candidates >= 0.0) & (candidates <= 1.0)]
    # mean exit layer of each candidate: 1 + the decision layers whose running max stays below
    mean_depth = np.array([1.0 + (running < tau).sum(axis=1).mean() for tau in candidates])
    targets = np.linspace(mean_depth.min(), mean_depth.max(), size)
    # six significant digits: a threshold is a name (trajectory files, summary rows) too
    chosen = {float(f"{candidates[int(np.argmin(np.abs(mean_depth - t)))]:.6g}")
              for t in targets}
    return tuple(sorted(chosen | {GREEDY_TAU}))
