"""Lagrange multipliers of the budget-targeted mode: the cost weight α that makes a policy meet a
target cost (``ReinforceConfig.target_cost``).

The budget-targeted trainer maximises ``accuracy − α·cost`` while α plays the Lagrange multiplier
of ``E[cost] ≤ target``: after every update it moves with the batch's mean sampled cost ``c̄``.

- ``plain`` (gradient ascent on the dual): ``α ← max(0, α + lr·(c̄ − target))``. This is a pure
  integral controller on a noisy error, and it overshoots: on rt-polarity × MiniLM with step 2 α
  sat at 0 for 55–87 % of the updates, peaked at 1.7–2.9 (useful range about 0.1–0.25) and 4 of
  9 runs ended at 0 below target (issue 22). Kept so that those runs stay reproducible.
- ``pid`` (Stooke, Achiam & Abbeel, "Responsive Safety in Reinforcement Learning by PID
  Lagrangian Methods", ICML 2020, Algorithm 2): with ``e_raw = c̄ − target``, ``e`` its
  exponential moving average (decay ``smoothing``: the batch cost is a noisy 64-episode mean),

      I ← max(0, I + e_raw)
      α ← max(0, Kp·e + Ki·I + Kd·max(0, e − e_prev))

  The proportional term reacts at once and goes back to 0 when the cost meets the target, so α
  does not have to be unwound by an opposite error the way a pure integral must (the cause of
  the plain rule's oscillation); the integral, clamped at 0 (Stooke et al.'s choice), removes
  the steady-state error without winding up below 0 while the policy is under budget; the
  derivative acts on rising cost only (damping the overshoot when the policy heads over budget),
  computed on the smoothed error so noise is not amplified. The integral starts at
  ``α₀ / Ki``, so α begins at the env's α as in the plain rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

MULTIPLIERS: tuple[str, ...] = ("plain", "pid")
"""The multiplier rules of the budget-targeted mode (module docstring)."""


@dataclass(frozen=True)
class PIDGains:
    """Gains of the ``pid`` multiplier (Stooke et al. 2020), chosen on validation.

    Measured on rt-polarity × MiniLM (two-stage heads; REINFORCE, hardness reward, α from 0,
    200 updates × 64 episodes on the ``policy`` split; *sampled* policy cost on ``validation``):
    on seed 0 a grid ``kp ∈ {0.5, 1, 2} × ki ∈ {0.02, 0.05, 0.1}`` (plus ``kd = 2``) gave the
    smallest mean |cost − target| over targets 0.28 / 0.48 / 0.68 at ``kp = 1, ki = 0.05``
    (0.028; plain 0.062; ``kd = 2`` 0.074; ``smoothing = 0.9`` was worse on seeds 1–2). Over
    seeds 0, 1, 2 (per-seed costs, median):

    ======  =========================  =========================  ===========================
    target  plain (step 2)             pid (these gains)          pid, 400 updates
    ======  =========================  =========================  ===========================
    0.28    .315 / .210 / .274 → .274  .277 / .308 / .262 → .277  .266 / .316 / .228 → .266
    0.48    .370 / .411 / .374 → .374  .455 / .538 / .469 → .469  .409 / .432 / .463 → .432
    0.68    .637 / .606 / .695 → .637  .623 / .881 / .549 → .623  .659 / .726 / .567 → .659
    ======  =========================  =========================  ===========================

    The median lands within ±0.03 on 2 of 3 targets (plain: 1 of 3; plain with 400 updates
    .266 / .343 / .484). α stays in 0–0.56 (plain peaks at 1.1–2.5 and sits at 0 for 56–79 % of
    the updates; PID at 0 for 0–39 %, at the 0.68 target only), and the greedy reading misses
    far less (at 0.68: .906 / 1.0 / .670 against plain's 1.0 / 1.0 / 1.0). What is left is the
    spread between seeds of the final policy (one seed at 0.881 for target 0.68), not α."""

    kp: float = 1.0
    """Proportional gain on the smoothed cost error: α moves by ``kp·e`` at once, and that part
    vanishes when the target is met."""
    ki: float = 0.05
    """Integral gain: the clamped sum of errors gives the α that holds the cost at the target.
    Small because the error is summed once per update (a step of ``ki·|e|``, against the plain
    rule's ``2·|e|``)."""
    kd: float = 0.0
    """Derivative gain on rising smoothed error (``max(0, e − e_prev)``); 0 turns it off."""
    smoothing: float = 0.8
    """Decay of the exponential moving average of the cost error (0: the raw batch error)."""

    def __post_init__(self) -> None:
        if min(self.kp, self.ki, self.kd) < 0:
            raise ValueError(f"PID gains must be >= 0, got {self}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")


class Multiplier(Protocol):
    """What the trainer needs of a multiplier rule."""

    alpha: float
    """The current multiplier (the env's cost weight)."""

    def step(self, mean_cost: float) -> float:
        """One update with the batch's mean sampled cost; returns the new α."""

    def state(self) -> dict[str, Any]:
        """JSON-able state (a checkpoint stores it; resume is bit-identical)."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Put back a state returned by :meth:`state`."""


class PlainMultiplier:
    """``α ← max(0, α + lr·(c̄ − target))``: dual gradient ascent (module docstring)."""

    def __init__(self, target: float, lr: float, alpha: float) -> None:
        self.target, self.lr, self.alpha = float(target), float(lr), float(alpha)

    def step(self, mean_cost: float) -> float:
        self.alpha = max(0.0, self.alpha + self.lr * (mean_cost - self.target))
        return self.alpha

    def state(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def load_state(self, state: dict[str, Any]) -> None:
        self.alpha = float(state["alpha"])


class PIDMultiplier:
    """The PID Lagrange multiplier (module docstring; Stooke et al. 2020, Algorithm 2)."""

    def __init__(self, target: float, gains: PIDGains, alpha: float) -> None:
        self.target, self.gains, self.alpha = float(target), gains, float(alpha)
        self.integral = self.alpha / gains.ki if gains.ki > 0 else 0.0
        """Clamped sum of raw errors, ``I ≥ 0``; starts where ``Ki·I`` is the initial α."""
        self.error: float | None = None
        """Smoothed error ``e`` (None before the first step: the first error is taken raw)."""

    def step(self, mean_cost: float) -> float:
        g = self.gains
        raw = float(mean_cost) - self.target
        previous = self.error
        self.error = raw if previous is None else g.smoothing * previous + (1 - g.smoothing) * raw
        self.integral = max(0.0, self.integral + raw)
        rising = 0.0 if previous is None else max(0.0, self.error - previous)
        self.alpha = max(0.0, g.kp * self.error + g.ki * self.integral + g.kd * rising)
        return self.alpha

    def state(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "integral": self.integral, "error": self.error}

    def load_state(self, state: dict[str, Any]) -> None:
        self.alpha, self.integral = float(state["alpha"]), float(state["integral"])
        self.error = None if state["error"] is None else float(state["error"])


def make_multiplier(rule: str, target: float, alpha: float, lr: float,
                    gains: PIDGains) -> Multiplier:
    """The multiplier ``rule`` (one of :data:`MULTIPLIERS`) steering α from ``alpha``."""
    if rule == "plain":
        return PlainMultiplier(target, lr, alpha)
    if rule == "pid":
        return PIDMultiplier(target, gains, alpha)
    raise ValueError(f"unknown multiplier {rule!r}; choose one of {MULTIPLIERS}")


__all__ = ["MULTIPLIERS", "Multiplier", "PIDGains", "PIDMultiplier", "PlainMultiplier",
           "make_multiplier"]
