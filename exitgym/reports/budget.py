"""The budget table: each method's validation-selected operating point at *exactly* each FLOPs
budget, its test accuracy over seeds, and a two-level bootstrap CI of its difference to static
truncation.

Input: one :class:`Evaluation` per (method, knob, reading, seed) holding the validation cost and
accuracy (what selection may read) and the per-sample test correctness (what is reported). For
every budget ``b`` (default 0.3, 0.4, ..., 0.8):

1. **selection (validation only), at exactly ``b``**: per seed, a method's operating point is a
   *mixture* of at most two of its evaluated points: exit as point ``p`` on a fraction ``w`` of
   the inputs (drawn at random per input) and as point ``q`` on the rest, which costs
   ``w·c_p + (1 − w)·c_q`` and scores ``w·a_p + (1 − w)·a_q`` in expectation. Among the pure points
   with validation cost ``<= b`` and the mixtures of a cheaper and a dearer point that cost exactly
   ``b``, the one with the highest validation accuracy is chosen (the upper concave envelope of
   the method's validation curve at ``b``). So a budget never sits on a layer boundary by accident
   and the density of a method's knob grid decides nothing beyond the envelope it spans.
   **Static truncation**, the reference, mixes the two *adjacent* layers whose costs bracket ``b``
   (exit at layer ``k`` for a fraction of the inputs, ``k + 1`` for the rest), so its cost equals
   the budget. A seedless method (one evaluation) serves every seed. Without
   ``interpolate`` only pure points are chosen (static: the deepest layer within ``b``).
2. **report (test)**: a mixture's test outcome per sample is the expected correctness
   ``w·correct_p(i) + (1 − w)·correct_q(i)`` and its test cost ``w·c_p + (1 − w)·c_q``; the
   table gives the mean and population std over seeds. A method with no point within ``b`` for
   some seed gets no row at that budget.
3. **two-level bootstrap** (``D_s(i) = outcome_{method,s}(i) − outcome_{reference,s}(i)``,
   ``delta_vs_static = mean_{s,i} D_s(i)``): each resample draws the seeds with replacement, then
   the test samples with replacement, and takes the mean of ``D`` over the drawn seeds and
   samples; the 95 % CI is its 2.5 / 97.5 percentiles. The same draws serve every method and
   budget (both members of a pair are resampled on the same seeds and inputs), so the CI covers
   seed variance (training randomness) as well as test-sample noise. Heads, a fine-tuned backbone
   and the splits are one prepared cache shared by every seed: their variance is not in the CI.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BUDGETS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
"""FLOPs budgets of the table (fractions of the full model)."""
STATIC = "static"
"""The reference method: static truncation (exit at layer ``k``)."""
RESAMPLES = 2000
"""Bootstrap resamples (each draws seeds, then test samples)."""
_EPS = 1e-12


@dataclass(frozen=True)
class Evaluation:
    """One (method, knob, reading, seed): validation numbers for selection, test outcomes."""

    method: str
    """Method name (a summary row's ``method``)."""
    knob: float | None
    """Knob value (α, θ, k, target cost, ...)."""
    seed: int
    """Seed of the evaluated policy (seedless methods: the first seed)."""
    val_cost: float
    """Mean cost on the selection split."""
    val_accuracy: float
    """Accuracy on the selection split."""
    test_cost: float
    """Mean cost on the test split."""
    test_correct: np.ndarray
    """Bool ``[N]``: correctness per test sample, in sample-id order."""
    tau: float | None = None
    """The reading of a trained policy (exit when ``P(exit) >= tau``; None: its greedy reading,
    or a method that is not a trained policy)."""
    alpha: float | None = None
    """The cost weight a cost-conditioned policy was read at (None: not conditioned)."""


@dataclass(frozen=True)
class Operating:
    """A selected operating point of one seed: ``weight`` of ``low``, ``1 − weight`` of
    ``high`` (``high`` None: the pure point ``low``)."""

    low: Evaluation
    """The cheaper (or only) point."""
    high: Evaluation | None = None
    """The dearer point of a mixture."""
    weight: float = 1.0
    """Fraction of inputs run as ``low``."""

    @property
    def seed(self) -> int:
        return self.low.seed

    def _mix(self, a: Any, b: Any) -> Any:
        return a if self.high is None else self.weight * a + (1.0 - self.weight) * b

    @property
    def val_cost(self) -> float:
        return float(self._mix(self.low.val_cost, self.high and self.high.val_cost))

    @property
    def val_accuracy(self) -> float:
        return float(self._mix(self.low.val_accuracy, self.high and self.high.val_accuracy))

    @property
    def test_cost(self) -> float:
        return float(self._mix(self.low.test_cost, self.high and self.high.test_cost))

    @property
    def test_outcome(self) -> np.ndarray:
        """Expected correctness per test sample (float ``[N]``)."""
        low = self.low.test_correct.astype(np.float64)
        if self.high is None:
            return low
        return self.weight * low + (1.0 - self.weight) * self.high.test_correct

    def describe(self) -> dict[str, Any]:
        """The knob(s), reading(s) and weight, for ``summary.json``."""
        parts = [self.low] if self.high is None else [self.low, self.high]
        out: dict[str, Any] = {"knob": [p.knob for p in parts], "weight": self.weight}
        if any(p.tau is not None for p in parts):
            out["tau"] = [p.tau for p in parts]
        if any(p.alpha is not None for p in parts):
            out["alpha"] = [p.alpha for p in parts]
        return out


def _select(points: Sequence[Evaluation], budget: float, deepest: bool,
            interpolate: bool = True) -> Operating | None:
    """The validation-selected operating point at ``budget`` (module doc; None: none fits)."""
    fits = [p for p in points if p.val_cost <= budget + _EPS]
    if not fits:
        return None
    if deepest:  # the reference: the deepest layer within budget, mixed with the next one
        low = max(fits, key=lambda p: (p.val_cost, p.val_accuracy))
        if not interpolate or low.val_cost >= budget - _EPS:
            return Operating(low)
        dearer = [p for p in points if p.val_cost > budget + _EPS]
        if not dearer:
            return Operating(low)
        high = min(dearer, key=lambda p: (p.val_cost, -p.val_accuracy))
        return Operating(low, high, (high.val_cost - budget) / (high.val_cost - low.val_cost))
    best = Operating(max(fits, key=lambda p: (p.val_accuracy, -p.val_cost)))
    if not interpolate:
        return best
    dearer = [p for p in points if p.val_cost > budget + _EPS]
    if not dearer:
        return best
    lc, la = (np.array([[p.val_cost, p.val_accuracy] for p in fits]).T)
    hc, ha = (np.array([[p.val_cost, p.val_accuracy] for p in dearer]).T)
    w = (hc[None, :] - budget) / (hc[None, :] - lc[:, None])  # [low, high]
    acc = w * la[:, None] + (1.0 - w) * ha[None, :]
    i, j = np.unravel_index(int(np.argmax(acc)), acc.shape)
    if acc[i, j] > best.val_accuracy + 1e-12:
        return Operating(fits[i], dearer[j], float(w[i, j]))
    return best


def select_per_seed(evals: Sequence[Evaluation], budget: float, seeds: Sequence[int],
                    deepest: bool = False, interpolate: bool = True) -> list[Operating] | None:
    """One selected operating point per seed of one method (None when a seed has no point in
    budget).

    A method evaluated under fewer seeds than ``seeds`` (a seedless rule) reuses its first
    seed's evaluations for the others.
    """
    by_seed: dict[int, list[Evaluation]] = defaultdict(list)
    for e in evals:
        by_seed[e.seed].append(e)
    chosen = []
    for seed in seeds:
        group = by_seed.get(seed) or by_seed[min(by_seed)]
        pick = _select(group, budget, deepest, interpolate)
        if pick is None:
            return None
        chosen.append(pick)
    return chosen


@dataclass(frozen=True)
class Draws:
    """The bootstrap's index draws: seeds ``[R, S]`` then test samples ``[R, N]``."""

    seeds: np.ndarray
    """Seed positions (into the seed axis) per resample."""
    samples: np.ndarray
    """Test-sample indices per resample."""


def bootstrap_draws(num_seeds: int, num_samples: int, resamples: int = RESAMPLES,
                    seed: int = 0) -> Draws:
    """Two-level draws with replacement (seeded): seeds first, then test samples."""
    rng = np.random.default_rng(seed)
    return Draws(rng.integers(0, num_seeds, size=(resamples, num_seeds)),
                 rng.integers(0, num_samples, size=(resamples, num_samples)))


def paired_ci(diff: np.ndarray, indices: np.ndarray) -> tuple[float, float]:
    """2.5 / 97.5 percentiles of ``mean(diff[idx])`` over the rows ``idx`` of ``indices`` (one
    level: test samples only)."""
    means = diff[indices].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def two_level_ci(diff: np.ndarray, draws: Draws) -> tuple[float, float]:
    """2.5 / 97.5 percentiles of the two-level bootstrap of ``diff`` (``[S, N]``, per seed and
    test sample): per resample the mean over the drawn seeds of the drawn samples' mean."""
    diff = np.atleast_2d(np.asarray(diff, dtype=np.float64))
    if diff.shape[0] != draws.seeds.shape[1]:
        raise ValueError(f"diff has {diff.shape[0]} seeds, the draws {draws.seeds.shape[1]}")
    # mean over drawn seeds first ([R, N]), then over the drawn samples
    per_sample = diff[draws.seeds].mean(axis=1)
    means = np.take_along_axis(per_sample, draws.samples, axis=1).mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def outcomes(chosen: Sequence[Operating]) -> np.ndarray:
    """``[S, N]`` expected test correctness of the chosen points."""
    return np.stack([c.test_outcome for c in chosen])


def budget_table(evals: Sequence[Evaluation], seeds: Sequence[int],
                 budgets: Sequence[float] = BUDGETS, reference: str = STATIC,
                 resamples: int = RESAMPLES, seed: int = 0, interpolate: bool = True,
                 categories: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Rows ``{"method", "budget", "accuracy", "delta_vs_static", "ci95", ...}`` (module doc).

    Extra keys: ``accuracy_std`` (over seeds), ``cost`` (mean test cost of the selected points),
    ``val_cost``, ``knobs`` (the selected knob per seed; a mixture's cheaper point), ``points``
    (per seed: knobs, readings and weight of the selected mixture), ``tau`` (per seed, for
    trained policies read at a threshold), ``seeds``, ``category`` (from ``categories``). The
    reference's own rows have ``delta_vs_static = 0`` and ``ci95 = [0, 0]``.

    Raises:
        ValueError: no evaluation of ``reference``, or test outcomes of different lengths.
    """
    by_method: dict[str, list[Evaluation]] = defaultdict(list)
    for e in evals:
        by_method[e.method].append(e)
    if reference not in by_method:
        raise ValueError(f"the budget table needs {reference!r} evaluations (the reference); "
                         f"got methods {sorted(by_method)}")
    sizes = {e.test_correct.shape for e in evals}
    if len(sizes) != 1:
        raise ValueError(f"every evaluation must cover the same test samples; got shapes {sizes}")
    (n,) = sizes.pop()
    draws = bootstrap_draws(len(seeds), n, resamples, seed)
    rows = []
    for budget in budgets:
        static = select_per_seed(by_method[reference], budget, seeds, deepest=True,
                                 interpolate=interpolate)
        if static is None:
            continue
        static_out = outcomes(static)
        for method, group in by_method.items():
            chosen = select_per_seed(group, budget, seeds, deepest=method == reference,
                                     interpolate=interpolate)
            if chosen is None:
                continue
            mine = outcomes(chosen)
            accs = mine.mean(axis=1)
            diff = mine - static_out
            row = {
                "method": method, "budget": float(budget), "accuracy": float(accs.mean()),
                "accuracy_std": float(accs.std()), "delta_vs_static": float(diff.mean()),
                "ci95": list(two_level_ci(diff, draws)),
                "cost": float(np.mean([c.test_cost for c in chosen])),
                "val_cost": float(np.mean([c.val_cost for c in chosen])),
                "knobs": [c.low.knob for c in chosen],
                "points": [c.describe() for c in chosen], "seeds": len(chosen)}
            if any(c.low.tau is not None for c in chosen):
                row["tau"] = [c.low.tau for c in chosen]
            if categories is not None:
                row["category"] = categories.get(method, "rl")
            rows.append(row)
    return rows


def target_costs(selection_rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Budget-targeted agents (``*-budget-greedy`` rows): target cost against the achieved
    validation cost of the greedy reading, per seed, with the median over seeds and its miss."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for row in selection_rows:
        if row["method"].endswith("-budget-greedy") and row["knob"] is not None:
            groups[(row["method"].removesuffix("-greedy"), float(row["knob"]))].append(row)
    out = []
    for (method, target), rows in sorted(groups.items()):
        costs = [r["cost"] for r in sorted(rows, key=lambda r: r["seed"])]
        median = float(np.median(costs))
        out.append({"method": method, "target": target, "val_costs": costs,
                    "median": median, "median_miss": median - target})
    return out


def smallest_detectable(rows: Sequence[dict[str, Any]]) -> float | None:
    """Half the median CI width over the non-reference rows: differences smaller than this are
    not separable from static truncation by this design (None without such rows)."""
    widths = [r["ci95"][1] - r["ci95"][0] for r in rows if r["ci95"][1] > r["ci95"][0]]
    return float(np.median(widths) / 2) if widths else None


__all__ = ["BUDGETS", "RESAMPLES", "STATIC", "Draws", "Evaluation", "Operating",
           "bootstrap_draws", "budget_table", "outcomes", "paired_ci",
           "select_per_seed", "smallest_detectable", "target_costs", "two_level_ci"]
