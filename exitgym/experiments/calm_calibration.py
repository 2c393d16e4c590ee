"""CALM's calibration of an exit rule's threshold with a statistical guarantee (Learn-then-Test).

Goal (Schuster et al. 2022, "Confident Adaptive Language Modeling", §4; Angelopoulos et al.,
"Learn then Test"): pick the most aggressive threshold ``θ`` such that, with probability at least
``1 − ε`` over the calibration prompts, the expected disagreement with the full model is at most
``δ``. For each threshold of a grid ordered from the most conservative, test
``H0: R(θ) > δ`` with a p-value of the empirical risk on ``n`` calibration units; fixed-sequence
testing rejects while ``p ≤ ε`` and stops at the first non-rejection (the family-wise error stays
``ε`` without a multiplicity correction because the order is fixed in advance); the answer is the
last rejected threshold (None: none is safe, decode at full depth).

p-values (losses in ``[0, 1]``, risk estimate ``R̂``):

- ``"hb"`` (CALM's choice, Bates et al.'s Hoeffding-Bentkus):
  ``min(exp(−n·h1(min(R̂, δ), δ)), e·P(Bin(n, δ) ≤ ⌈n·R̂⌉))`` with
  ``h1(a, b) = a·ln(a/b) + (1 − a)·ln((1 − a)/(1 − b))``;
- ``"binomial"``: the exact binomial tail ``P(Bin(n, δ) ≤ n·R̂)`` (valid for 0/1 losses only:
  ``unit="token"``).

Units: ``"prompt"`` (default) takes each prompt's share of disagreeing tokens as its loss, so the
guarantee is on the mean per-prompt disagreement over i.i.d. prompts; ``"token"`` takes every
token as a unit, tighter but assuming the tokens independent, which tokens of one continuation
are not (CALM calibrates per sequence too).

CALM's decaying threshold (§3.2 of the paper, eq. 5 as we read it; no copy of the paper is kept
in the repository): ``θ_t = clip(w·θ + (1 − w)·exp(−τ·t / N))`` with ``w = 0.9``, ``τ = 4`` and
``N`` the generation length, clipped to the rule's knob bounds (the paper clips to ``[0, 1]``;
saturation's cosine lives in ``[−1, 1]``). Early tokens get a stricter threshold. Deviation:
``t`` counts from 0 at the first generated token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

UNITS = ("prompt", "token")
"""What one calibration unit is."""
P_VALUES = ("hb", "binomial")
"""The p-values of ``H0: R > δ``."""


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(Bin(n, p) ≤ k)``, summed in log space (exact to float rounding for any ``n``)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def _h1(a: float, b: float) -> float:
    first = 0.0 if a == 0.0 else a * math.log(a / b)
    return first + (1.0 - a) * math.log((1.0 - a) / (1.0 - b))


def p_value(risk: float, n: int, delta: float, method: str = "hb") -> float:
    """p-value of ``H0: R > delta`` given the empirical risk ``risk`` of ``n`` units.

    Raises:
        ValueError: ``method`` not in :data:`P_VALUES`, ``delta`` outside ``(0, 1)``, ``n < 1``
            or ``risk`` outside ``[0, 1]``.
    """
    if method not in P_VALUES:
        raise ValueError(f"method must be one of {list(P_VALUES)}, got {method!r}")
    if not 0.0 < delta < 1.0 or n < 1 or not 0.0 <= risk <= 1.0:
        raise ValueError(f"need 0 < delta < 1, n >= 1 and 0 <= risk <= 1; got delta={delta}, "
                         f"n={n}, risk={risk}")
    if method == "binomial":
        return binomial_cdf(int(round(n * risk)), n, delta)
    hoeffding = math.exp(-n * _h1(min(risk, delta), delta))
    bentkus = math.e * binomial_cdf(math.ceil(n * risk - 1e-9), n, delta)
    return min(1.0, hoeffding, bentkus)


def fixed_sequence(p_values: list[float], epsilon: float) -> int:
    """Index of the last rejection of fixed-sequence testing (−1: the first is not rejected)."""
    last = -1
    for j, p in enumerate(p_values):
        if p > epsilon:
            break
        last = j
    return last


def calm_threshold(theta: float | np.ndarray, t: Any, horizon: int, tau: float = 4.0,
                   weight: float = 0.9, bounds: tuple[float, float] = (0.0, 1.0)) -> Any:
    """CALM's threshold at token ``t`` (0-based) of ``horizon`` tokens (see the module doc)."""
    decayed = weight * np.asarray(theta, dtype=np.float64) + (1.0 - weight) * np.exp(
        -tau * np.asarray(t, dtype=np.float64) / horizon)
    return np.clip(decayed, bounds[0], bounds[1])


class DecayedThreshold:
    """A threshold rule whose ``theta`` decays with the token index (:func:`calm_threshold`).

    Reads the token index from the ``infos`` every TokenExit-v0 step carries (``"token"``).
    """

    def __init__(self, rule: Any, horizon: int, tau: float = 4.0, weight: float = 0.9) -> None:
        if getattr(rule, "knob", None) != "theta":
            raise ValueError(f"the decay needs a rule with a theta knob, got {rule.name!r}")
        low, high = rule.knob_bounds
        self.rule, self.horizon, self.tau, self.weight = rule, horizon, tau, weight
        self.theta = float(rule.theta)
        self.bounds = (low if low is not None else -np.inf, high if high is not None else np.inf)
        self.required_observation = rule.required_observation

    def reset(self, num_envs: int) -> None:
        self.rule.reset(num_envs)

    def act(self, obs: np.ndarray, infos: dict[str, Any] | None = None,
            deterministic: bool = True) -> np.ndarray:
        if not infos or "token" not in infos:
            raise ValueError("the decayed threshold needs infos with 'token' (TokenExit-v0)")
        token = np.atleast_1d(np.asarray(infos["token"], dtype=np.float64))
        self.rule.theta = calm_threshold(self.theta, token, self.horizon, self.tau, self.weight,
                                         self.bounds)
        try:
            return self.rule.act(obs, infos, deterministic)
        finally:
            self.rule.theta = self.theta


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` chose and why."""

    theta: float | None
    """The last threshold rejected (None: none is safe; decode at full depth)."""
    delta: float
    """The tolerated disagreement."""
    epsilon: float
    """The tolerated probability that the guarantee fails."""
    units: int
    """``n``, the calibration units (prompts or tokens)."""
    tested: list[float] = field(default_factory=list)
    """Thresholds tested, most conservative first (testing stops at the first non-rejection)."""
    risks: list[float] = field(default_factory=list)
    """Empirical disagreement of each tested threshold."""
    p_values: list[float] = field(default_factory=list)
    """p-value of ``H0: R > delta`` of each tested threshold."""
    costs: list[float] = field(default_factory=list)
    """Mean FLOPs cost (fraction of full depth) of each tested threshold."""


def choose(losses: list[np.ndarray], thresholds: list[float], delta: float, epsilon: float,
           method: str = "hb", costs: list[float] | None = None) -> Calibration:
    """Learn-then-Test on per-unit ``losses`` in ``[0, 1]`` of each threshold (most conservative
    first; ``losses[j]`` may be missing past the first non-rejection)."""
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
    risks, ps = [], []
    for loss in losses:
        loss = np.asarray(loss, dtype=np.float64)
        risks.append(float(loss.mean()))
        ps.append(p_value(min(1.0, max(0.0, risks[-1])), loss.size, delta, method))
        if ps[-1] > epsilon:
            break
    last = fixed_sequence(ps, epsilon)
    n = int(np.asarray(losses[0]).size)
    return Calibration(None if last < 0 else float(thresholds[last]), delta, epsilon, n,
                       [float(t) for t in thresholds[: len(ps)]], risks, ps,
                       list(costs or [])[: len(ps)])


def _episode(env: Any, policy: Any, sid: int) -> dict[str, Any]:
    obs, info = env.reset(options={"sample_id": sid})
    policy.reset(1)
    done = False
    while not done:
        action = int(np.asarray(policy.act(obs, info)).reshape(-1)[0])
        obs, _, done, _, info = env.step(action)
    return info


def calibrate(rule: Any, env: Any, delta: float, epsilon: float,
              thresholds: list[float] | None = None, unit: str = "prompt", method: str = "hb",
              decay: float | None = None) -> Calibration:
    """The most aggressive threshold of ``rule`` whose disagreement with the full model is
    ``<= delta`` with probability ``>= 1 - epsilon`` over ``env``'s prompts (calibration split).

    Args:
        rule: an exit rule with a ``theta`` knob that exits when a confidence exceeds it.
        env: a single ``exitgym/TokenExit-v0`` (``cached=True`` is fast); every prompt is a
            calibration unit (or every token with ``unit="token"``).
        thresholds: most conservative first; default the rule's grid, descending.
        decay: CALM's ``τ``: apply :func:`calm_threshold` with this temperature (None: none).

    Raises:
        ValueError: unknown ``unit`` / ``method``, or ``delta`` / ``epsilon`` outside (0, 1).
    """
    _check_arguments(unit, delta, method)
    horizon = int(env.unwrapped.settings.max_new_tokens)
    grid = (list(thresholds) if thresholds is not None
            else sorted(rule.default_grid(int(env.unwrapped.num_layers)), reverse=True))

    def evaluate(theta: float) -> tuple[np.ndarray, float]:
        policy = rule.with_knob(theta)
        if decay is not None:
            policy = DecayedThreshold(policy, horizon, tau=decay)
        infos = [_episode(env, policy, sid) for sid in range(env.unwrapped.num_samples)]
        disagree = [1.0 - np.equal(i["generated_ids"], i["reference_ids"]) for i in infos]
        return (np.concatenate(disagree) if unit == "token"
                else np.array([d.mean() for d in disagree]),
                float(np.mean([i["episode_cost"] for i in infos])))

    return _test_in_sequence(grid, evaluate, delta, epsilon, method)


def _check_arguments(unit: str, delta: float, method: str) -> None:
    """Refuse a bad ``unit``, ``delta`` or ``method`` before any episode or generation runs."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {list(UNITS)}, got {unit!r}")
    p_value(0.0, 1, delta, method)


def _test_in_sequence(grid: list[float], evaluate: Any, delta: float, epsilon: float,
                      method: str) -> Calibration:
    """Fixed-sequence testing down ``grid``: ``evaluate(theta) -> (losses, mean cost)`` runs
    only until the first threshold that is not rejected."""
    losses, costs = [], []
    for theta in grid:
        loss, cost = evaluate(theta)
        losses.append(loss)
        costs.append(cost)
        if choose(losses, grid, delta, epsilon, method, costs).p_values[-1] > epsilon:
            break  # fixed-sequence testing stops: later thresholds are never tested
    return choose(losses, grid, delta, epsilon, method, costs)


def calibrate_generation(rule: Any, prompts: list[Any], delta: float, epsilon: float,
                         thresholds: list[float] | None = None, unit: str = "token",
                         method: str = "hb", **generate_kwargs: Any) -> Calibration:
    """:func:`calibrate` on the setting the rule is deployed in: :func:`exitgym.generate` (live,
    ``kv="copy"``, its own tokens fed back) with the full-depth reference, each of ``prompts`` a
    calibration prompt. The cached env of :func:`calibrate` is teacher-forced with ``kv="full"``,
    so its guarantee is for a setting that is not deployed; this one costs a generation per
    threshold tested.

    Args:
        generate_kwargs: passed to ``generate`` (``backbone``, ``heads``, ``max_new_tokens``,
            ``batch_size``, ...); ``reference`` and ``progress`` are set here.

    Raises:
        ValueError: as :func:`calibrate`.
    """
    from exitgym.experiments.generation import generate

    _check_arguments(unit, delta, method)
    depth = int(getattr(generate_kwargs.get("backbone"), "num_layers", 0))
    grid = (list(thresholds) if thresholds is not None
            else sorted(rule.default_grid(depth), reverse=True))

    def evaluate(theta: float) -> tuple[np.ndarray, float]:
        result = generate(rule.with_knob(theta), prompts, reference=True, progress=False,
                          **generate_kwargs)
        sizes = [len(g) for g in result.generated_ids]
        if unit == "prompt":
            return 1.0 - result.agreement, float(result.cost.mean())
        wrong = np.rint((1.0 - result.agreement) * sizes).astype(int)  # agreement: a mean
        return (np.concatenate([np.r_[np.ones(w), np.zeros(n - w)]
                                for w, n in zip(wrong, sizes, strict=True)]),
                float(result.cost.mean()))

    return _test_in_sequence(grid, evaluate, delta, epsilon, method)


__all__ = ["P_VALUES", "UNITS", "Calibration", "DecayedThreshold", "binomial_cdf", "calibrate",
           "calibrate_generation", "calm_threshold", "choose", "fixed_sequence", "p_value"]
