"""The budget table: each method's validation-selected operating point per FLOPs budget, its test
accuracy over seeds, and a paired bootstrap CI of its difference to static truncation.

Input: one :class:`Evaluation` per (method, knob, seed) holding the validation cost and accuracy
(what selection may read) and the per-sample test correctness (what is reported). For every
budget ``b`` (default 0.3, 0.4, ..., 0.8):

1. **selection (validation only)**: per seed, among the method's knob values whose validation
   mean cost is ``<= b``, the one with the highest validation accuracy (ties: the cheaper one).
   Static truncation, the reference, takes the deepest layer whose validation cost is ``<= b``.
   Seedless methods (one evaluation) serve every seed.
2. **report (test)**: the selected points' test accuracies, mean and population std over seeds.
   A method with no point within budget for some seed gets no row at that budget.
3. **paired bootstrap**: ``D_i = mean_s correct_{method,s}(i) − correct_static(i)`` per test
   sample ``i`` (seeds averaged first), ``delta_vs_static = mean_i D_i``; the 95 % CI is the
   2.5 / 97.5 percentiles of ``mean(D[idx])`` over ``resamples`` index draws ``idx`` of the test
   samples with replacement. The same draws serve every method and budget, so both members of a
   pair are resampled on the same inputs. The CI covers test-sample noise of the seed-averaged
   method; the seed spread is the separate ``accuracy_std``.
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
"""Bootstrap resamples of the test samples."""


@dataclass(frozen=True)
class Evaluation:
    """One (method, knob, seed): validation numbers for selection, test outcomes for reporting."""

    method: str
    """Method name (a summary row's ``method``)."""
    knob: float | None
    """Knob value (α, θ, k, ...)."""
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


def _select(points: Sequence[Evaluation], budget: float, deepest: bool) -> Evaluation | None:
    """The validation-selected point within ``budget`` (None when no point fits)."""
    fits = [p for p in points if p.val_cost <= budget + 1e-12]
    if not fits:
        return None
    if deepest:
        return max(fits, key=lambda p: (p.val_cost, p.val_accuracy))
    return max(fits, key=lambda p: (p.val_accuracy, -p.val_cost))


def select_per_seed(evals: Sequence[Evaluation], budget: float, seeds: Sequence[int],
                    deepest: bool = False) -> list[Evaluation] | None:
    """One selected evaluation per seed of one method (None when a seed has no point in budget).

    A method evaluated under fewer seeds than ``seeds`` (a seedless rule) reuses its first
    seed's evaluations for the others.
    """
    by_seed: dict[int, list[Evaluation]] = defaultdict(list)
    for e in evals:
        by_seed[e.seed].append(e)
    chosen = []
    for seed in seeds:
        group = by_seed.get(seed) or by_seed[min(by_seed)]
        pick = _select(group, budget, deepest)
        if pick is None:
            return None
        chosen.append(pick)
    return chosen


def bootstrap_indices(num_samples: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``[resamples, num_samples]`` test-sample indices drawn with replacement (seeded)."""
    return np.random.default_rng(seed).integers(0, num_samples, size=(resamples, num_samples))


def paired_ci(diff: np.ndarray, indices: np.ndarray) -> tuple[float, float]:
    """2.5 / 97.5 percentiles of ``mean(diff[idx])`` over the rows ``idx`` of ``indices``."""
    means = diff[indices].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def budget_table(evals: Sequence[Evaluation], seeds: Sequence[int],
                 budgets: Sequence[float] = BUDGETS, reference: str = STATIC,
                 resamples: int = RESAMPLES, seed: int = 0) -> list[dict[str, Any]]:
    """Rows ``{"method", "budget", "accuracy", "delta_vs_static", "ci95", ...}`` (module doc).

    Extra keys: ``accuracy_std`` (over seeds), ``cost`` (mean test cost of the selected points),
    ``val_cost``, ``knobs`` (the selected knob per seed), ``seeds``. The reference's own rows
    have ``delta_vs_static = 0`` and ``ci95 = [0, 0]``.

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
    indices = bootstrap_indices(n, resamples, seed)
    rows = []
    for budget in budgets:
        static = select_per_seed(by_method[reference], budget, seeds, deepest=True)
        if static is None:
            continue
        static_correct = np.mean([e.test_correct for e in static], axis=0)
        for method, group in by_method.items():
            chosen = select_per_seed(group, budget, seeds, deepest=method == reference)
            if chosen is None:
                continue
            accs = np.array([e.test_correct.mean() for e in chosen])
            diff = np.mean([e.test_correct for e in chosen], axis=0) - static_correct
            rows.append({
                "method": method, "budget": float(budget), "accuracy": float(accs.mean()),
                "accuracy_std": float(accs.std()), "delta_vs_static": float(diff.mean()),
                "ci95": list(paired_ci(diff, indices)),
                "cost": float(np.mean([e.test_cost for e in chosen])),
                "val_cost": float(np.mean([e.val_cost for e in chosen])),
                "knobs": [e.knob for e in chosen], "seeds": len(chosen)})
    return rows


def smallest_detectable(rows: Sequence[dict[str, Any]]) -> float | None:
    """Half the median CI width over the non-reference rows: differences smaller than this are
    not separable from static truncation by this design (None without such rows)."""
    widths = [r["ci95"][1] - r["ci95"][0] for r in rows if r["ci95"][1] > r["ci95"][0]]
    return float(np.median(widths) / 2) if widths else None


__all__ = ["BUDGETS", "RESAMPLES", "STATIC", "Evaluation", "bootstrap_indices", "budget_table",
           "paired_ci", "select_per_seed", "smallest_detectable"]
