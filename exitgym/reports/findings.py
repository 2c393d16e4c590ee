"""The papers' claims as paired comparisons of two methods at matched budgets (issue 13's
findings), from the same evaluations as the budget table.

For every budget both methods' points are chosen per seed **on validation** (best validation
accuracy within the budget, as :func:`~exitgym.reports.budget.select_per_seed` does) and reported
on **test**: ``delta = mean_i(mean_s correct_{method,s}(i) − mean_s correct_{reference,s}(i))``
with the paired bootstrap 95 % CI over test samples (the budget table's index draws, so both
members of a pair are resampled on the same inputs). The reference may be ``best-rule``: at each
budget the exit rule whose selected points have the highest mean *validation* accuracy (never
test), so the comparison with "the best rule" does not peek at what it reports.

Findings (:data:`FINDINGS`): 1. learned (ConsistentEE, REINFORCE-hardness) vs the best rule and
static truncation; 2. hardness vs vanilla reward; 3. PALBERT's Q-exit vs its sampling criterion
(at the sampling criterion's own validation cost: it has no knob); 4. lexicographic λ vs a fixed
λ (REINFORCE on the same ``−CE − α·cost`` objective at fixed α).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from exitgym.reports.budget import Evaluation, bootstrap_indices, paired_ci, select_per_seed

BEST_RULE = "best-rule"
"""Reference name: the validation-best exit rule at each budget."""
RULES: tuple[str, ...] = ("entropy", "maxprob", "patience", "qexit", "palbert-sample", "berxit")
"""The rules ``best-rule`` chooses among (static truncation and random exit are references)."""
MATCHED = "matched"
"""Budget spec: the reference's own (largest per-seed) validation cost."""
FINDINGS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("1", ("consistentee", "reinforce-hardness-budget", "reinforce-hardness"), BEST_RULE,
     "grid"),
    ("1", ("consistentee", "reinforce-hardness-budget", "reinforce-hardness"), "static", "grid"),
    ("2", ("reinforce-hardness-budget",), "reinforce-vanilla-budget", "grid"),
    ("2", ("reinforce-hardness",), "reinforce-vanilla", "grid"),
    ("3", ("qexit",), "palbert-sample", MATCHED),
    ("4", ("lexicographic",), "reinforce-vanilla", "grid"),
)
"""``(finding, methods, reference, budgets)``: each method present is compared with the
reference, on the budget grid or at the reference's matched cost."""


def _chosen(group: Sequence[Evaluation], budget: float,
            seeds: Sequence[int]) -> list[Evaluation] | None:
    return select_per_seed(group, budget, seeds, deepest=group[0].method == "static")


def _best_rule(by_method: dict[str, list[Evaluation]], budget: float,
               seeds: Sequence[int]) -> tuple[str, list[Evaluation]] | None:
    """The rule whose validation-selected points have the best mean validation accuracy."""
    best = None
    for name in RULES:
        if name not in by_method:
            continue
        chosen = _chosen(by_method[name], budget, seeds)
        if chosen is None:
            continue
        score = float(np.mean([e.val_accuracy for e in chosen]))
        if best is None or score > best[0]:
            best = (score, name, chosen)
    return None if best is None else (best[1], best[2])


def paired_rows(evals: Sequence[Evaluation], method: str, reference: str,
                seeds: Sequence[int], budgets: Sequence[float] | str,
                indices: np.ndarray) -> list[dict[str, Any]]:
    """``method`` against ``reference`` at each budget (``MATCHED``: the reference's cost).

    Rows: ``{"method", "reference", "budget", "accuracy", "reference_accuracy", "delta",
    "ci95", "cost", "reference_cost", "reference_method"}`` (the last names the rule that
    ``best-rule`` chose); a budget where either has no point within it gets no row.
    """
    by_method: dict[str, list[Evaluation]] = defaultdict(list)
    for e in evals:
        by_method[e.method].append(e)
    if method not in by_method or (reference != BEST_RULE and reference not in by_method):
        return []
    if budgets == MATCHED:
        budgets = [max(e.val_cost for e in by_method[reference])]
    rows = []
    for budget in budgets:
        mine = _chosen(by_method[method], budget, seeds)
        if reference == BEST_RULE:
            found = _best_rule(by_method, budget, seeds)
            ref_name, ref = found if found is not None else (None, None)
        else:
            ref_name, ref = reference, _chosen(by_method[reference], budget, seeds)
        if mine is None or ref is None:
            continue
        a = np.mean([e.test_correct for e in mine], axis=0)
        b = np.mean([e.test_correct for e in ref], axis=0)
        diff = a - b
        rows.append({"method": method, "reference": reference, "reference_method": ref_name,
                     "budget": float(budget), "accuracy": float(a.mean()),
                     "reference_accuracy": float(b.mean()), "delta": float(diff.mean()),
                     "ci95": list(paired_ci(diff, indices)),
                     "cost": float(np.mean([e.test_cost for e in mine])),
                     "reference_cost": float(np.mean([e.test_cost for e in ref]))})
    return rows


def findings(evals: Sequence[Evaluation], seeds: Sequence[int], budgets: Sequence[float],
             resamples: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Every row of :data:`FINDINGS` whose methods were evaluated, ``finding`` added."""
    if not evals:
        return []
    indices = bootstrap_indices(len(evals[0].test_correct), resamples, seed)
    rows = []
    for finding, methods, reference, grid in FINDINGS:
        for method in methods:
            for row in paired_rows(evals, method, reference, seeds,
                                   MATCHED if grid == MATCHED else budgets, indices):
                rows.append({"finding": finding, **row})
    return rows


def findings_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The findings as a Markdown section (empty without rows)."""
    if not rows:
        return []
    out = ["## Findings (paired, at matched budgets)", "",
           "Both methods' points chosen per seed on validation within the budget, test "
           "accuracy (mean over seeds); Δ in points with the paired bootstrap 95 % CI. "
           "1: learned vs the best rule (chosen on validation) and static truncation; 2: "
           "hardness vs vanilla reward; 3: Q-exit vs PALBERT sampling at the latter's cost; "
           "4: lexicographic λ vs fixed α.", "",
           "| finding | method | vs | budget | accuracy | vs accuracy | Δ (points) | 95 % CI |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = r["reference"] + (f" ({r['reference_method']})"
                                if r["reference"] == BEST_RULE else "")
        lo, hi = r["ci95"]
        out.append(f"| {r['finding']} | {r['method']} | {ref} | {r['budget']:.2f} | "
                   f"{r['accuracy']:.4f} | {r['reference_accuracy']:.4f} | "
                   f"{100 * r['delta']:+.1f} | [{100 * lo:+.1f}, {100 * hi:+.1f}] |")
    return [*out, ""]


__all__ = ["BEST_RULE", "FINDINGS", "findings", "findings_markdown", "paired_rows"]
