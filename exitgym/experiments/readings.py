"""Every trained exit policy of a comparison as a curve: its readings at thresholds ``τ``.

Why: reading a trained policy only greedily (exit when ``P(exit) > 0.5``) gives one operating
point per agent, wherever its probabilities happen to fall; an agent with ``P(exit)`` of 0.11–0.14
at every layer meets a 0.68 budget in expectation and never exits when read greedily. The rules
get a θ grid chosen on validation, so the trained policies get one too:
:class:`~exitgym.agents.calibrated.CalibratedExit` at every ``τ`` of the policy's own
:func:`~exitgym.agents.calibrated.calibration_grid` (probed on the selection split), each reading
evaluated by the same :func:`~exitgym.agents.rollout.evaluate` as every rule on validation (to
choose) and on test (recorded, so ``replay --verify`` re-executes it). The greedy reading is kept
as the method ``<method>-greedy`` (finding 5 compares the two); the calibrated readings, the greedy
``τ = 0.5`` among them, are the method's own rows.

Cost-conditioned policies (``ConditionedPolicy``, a cost weight α as an input) are read at every
α of their grid and, at each, at a few thresholds: one trained policy for every budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exitgym.agents.calibrated import CalibratedExit, calibration_grid, is_exit_policy
from exitgym.experiments.env_spec import EnvSpec

GREEDY_SUFFIX = "-greedy"
"""Row suffix of a trained method's greedy reading."""
TAUS_PER_POLICY = 10
"""Thresholds per trained policy (besides the greedy one): enough that the readings cover the
policy's reachable cost range in steps of about a tenth of it."""
TAUS_PER_ALPHA = 3
"""Thresholds per cost weight of a cost-conditioned policy (its α grid already spans the costs)."""


@dataclass(frozen=True)
class Reading:
    """One operating point of a trained policy."""

    policy: Any
    """The acting policy (a :class:`CalibratedExit`)."""
    tau: float
    """Its threshold on ``P(exit)``."""
    alpha: float | None = None
    """The cost weight a cost-conditioned policy is read at (None: not conditioned)."""

    @property
    def slug(self) -> str:
        alpha = "" if self.alpha is None else f"-a{self.alpha:.4g}"
        return f"{alpha}-t{self.tau:.6g}"


def reading(policy: Any, tau: float, alpha: float | None = None) -> Reading:
    """``policy`` read at threshold ``tau`` (a cost-conditioned one at cost weight ``alpha``):
    the one way ``compare``, deployment and ``replay --verify --policy`` rebuild a reading."""
    fixed = policy if alpha is None else policy.at(alpha)
    return Reading(CalibratedExit(fixed, tau), float(tau), None if alpha is None else float(alpha))


def _grid(policy: Any, probe_env: Callable[[Any], Any], size: int,
          seed: int) -> tuple[float, ...]:
    """:func:`calibration_grid` of ``policy`` on a probe env made for it (closed after)."""
    env = probe_env(policy)
    try:
        return calibration_grid(policy, env, size, seed)
    finally:
        env.close()


def readings(policy: Any, probe_env: Callable[[Any], Any], seed: int = 0) -> list[Reading]:
    """The readings of ``policy`` (empty when it is not a single exit decision).

    Args:
        policy: a trained policy (MLPPolicy, ConsistentEE's, a conditioned one, ...).
        probe_env: ``policy -> env`` on the selection split, for the calibration probe.
        seed: seed of the probe's first reset.
    """
    from exitgym.agents.conditioned import CONDITIONED_ALPHAS, ConditionedPolicy

    if isinstance(policy, ConditionedPolicy):
        lo, hi = policy.config.alpha_range
        return [reading(policy, t, a) for a in CONDITIONED_ALPHAS if lo <= a <= hi
                for t in _grid(policy.at(a), probe_env, TAUS_PER_ALPHA, seed)]
    if not is_exit_policy(policy):
        return []
    return [reading(policy, t) for t in _grid(policy, probe_env, TAUS_PER_POLICY, seed)]


def record_name(run: str, reading: Reading) -> str:
    """Trajectory file stem of one reading of the agent in ``runs/<run>``."""
    return f"{run}{reading.slug}"


def spec_for(spec: EnvSpec, reading: Reading) -> EnvSpec:
    """The env a reading acts in: the run's own (a conditioned policy reads α as an input, so
    the env's reward weight is set to it too: the recorded rewards are the ones it optimised)."""
    if reading.alpha is None:
        return spec
    return spec.with_kwargs(alpha=reading.alpha)


__all__ = ["GREEDY_SUFFIX", "Reading", "reading", "readings", "record_name", "spec_for"]
