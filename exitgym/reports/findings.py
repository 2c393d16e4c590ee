"""The papers' claims as paired comparisons of two methods at matched budgets, from the same
evaluations as the budget table.

For every budget both methods' operating points are chosen per seed **on validation** at exactly
that budget (the envelope of each method's validation curve, mixtures of two points included, as
:func:`~exitgym.reports.budget.select_per_seed` does) and reported on **test**:
``delta = mean_{s,i}(outcome_{method,s}(i) − outcome_{reference,s}(i))`` with the two-level
bootstrap 95 % CI (seeds, then test samples; the budget table's draws, so both members of a pair
are resampled on the same seeds and inputs). A side may be a *category's best*: at each budget
the method of that category whose selected points have the highest mean **validation** accuracy
(never test), so "the best non-RL method" does not peek at what it reports.

Findings (:data:`FINDINGS`): 0. the best RL method against the best non-RL method (rules and
supervised exits, :mod:`exitgym.reports.categories`), and against static truncation; 1. learned
(ConsistentEE, REINFORCE-hardness) vs the best rule and static truncation; 2. hardness vs vanilla
reward; 3. PALBERT's Q-exit vs its sampling criterion (at the sampling criterion's own validation
cost: it has no knob); 4. lexicographic λ vs a fixed λ (REINFORCE on the same ``−CE − α·cost``
objective at fixed α); 5. a trained policy read at a validation-chosen threshold τ against its
greedy reading (``-greedy`` rows).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from exitgym.reports.budget import (
    STATIC,
    Draws,
    Evaluation,
    Operating,
    bootstrap_draws,
    outcomes,
    select_per_seed,
    two_level_ci,
)
from exitgym.reports.categories import NON_RL, category

BEST_RULE = "best-rule"
"""Side name: the validation-best exit rule (category ``rule``) at each budget."""
BEST_NON_RL = "best-non-rl"
"""Side name: the validation-best rule or supervised exit at each budget."""
BEST_RL = "best-rl"
"""Side name: the validation-best RL method at each budget."""
BEST_SKIP = "best-skip"
"""Side name (skip comparisons): the validation-best skip method, learned or a fixed pattern."""
BEST_EXIT = "best-exit"
"""Side name (skip comparisons): the validation-best exit rule or supervised exit."""
SKIP_PREFIX = "skip-"
"""Names of the skip environments' fixed baselines (:mod:`exitgym.agents.skip_baselines`)."""
BEST_OF: dict[str, tuple[str, ...]] = {BEST_RULE: ("rule",), BEST_NON_RL: NON_RL,
                                       BEST_RL: ("rl",), BEST_SKIP: ("rl", "rule"),
                                       BEST_EXIT: NON_RL}
"""Category sides and the categories they choose among (static truncation and random exit are
rules too, but never "the best" of a side: they are the references). In a skip comparison every
``rl`` method skips and every rule or supervised method but the ``skip-`` ones exits."""
EXCLUDED_FROM_BEST: tuple[str, ...] = (STATIC, "random", "oracle", "full-depth", "skip-random")
"""Never a side's best: the references and the trivial baselines."""
MATCHED = "matched"
"""Budget spec: the reference's own (largest per-seed) validation cost."""
FINDINGS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("0", (BEST_RL,), BEST_NON_RL, "grid"),
    ("0", (BEST_RL,), STATIC, "grid"),
    ("1", ("consistentee", "reinforce-hardness-budget", "reinforce-hardness"), BEST_RULE,
     "grid"),
    ("1", ("consistentee", "reinforce-hardness-budget", "reinforce-hardness"), STATIC, "grid"),
    ("2", ("reinforce-hardness-budget",), "reinforce-vanilla-budget", "grid"),
    ("2", ("reinforce-hardness",), "reinforce-vanilla", "grid"),
    ("3", ("qexit",), "palbert-sample", MATCHED),
    ("4", ("lexicographic",), "reinforce-vanilla", "grid"),
    ("5", ("reinforce-hardness-budget",), "reinforce-hardness-budget-greedy", "grid"),
    ("5", ("reinforce-vanilla-budget",), "reinforce-vanilla-budget-greedy", "grid"),
    ("5", ("reinforce-hardness-conditioned",), "reinforce-hardness-conditioned-greedy", "grid"),
)
"""``(finding, methods, reference, budgets)``: each method present is compared with the
reference, on the budget grid or at the reference's matched cost."""
SKIP_FINDINGS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("S1", (BEST_RL,), "skip-pattern", "grid"),
    ("S1", (BEST_RL,), "skip-random", "grid"),
    ("S2", ("lexicographic",), "reinforce-vanilla", "grid"),
    ("S3", (BEST_SKIP,), BEST_EXIT, "grid"),
    ("S3", (BEST_SKIP, "skip-pattern"), STATIC, "grid"),
)
"""The skip comparison's findings (issue 26, Switchable Decision): S1 learned skipping against the
best static pattern and random skipping; S2 the lexicographic constraint against a fixed weight;
S3 skipping against exiting at matched budgets (the best of each, and static truncation)."""


def _on_side(side: str, name: str) -> bool:
    """``name`` may be ``side``'s best: its category is one of the side's, and a skip side takes
    skip methods only, an exit side exit methods only."""
    if category(name) not in BEST_OF[side]:
        return False
    if side == BEST_SKIP:
        return category(name) == "rl" or name.startswith(SKIP_PREFIX)
    if side == BEST_EXIT:
        return not name.startswith(SKIP_PREFIX)
    return True


def _chosen(group: Sequence[Evaluation], budget: float,
            seeds: Sequence[int]) -> list[Operating] | None:
    return select_per_seed(group, budget, seeds, deepest=group[0].method == STATIC)


def best_of(by_method: dict[str, list[Evaluation]], side: str, budget: float,
            seeds: Sequence[int]) -> tuple[str, list[Operating]] | None:
    """The method of ``side``'s categories whose validation-selected points have the best mean
    validation accuracy at ``budget`` (None: no such method has a point within it)."""
    best = None
    for name, group in by_method.items():
        if name in EXCLUDED_FROM_BEST or name.endswith("-greedy"):
            continue
        if not _on_side(side, name):
            continue
        chosen = _chosen(group, budget, seeds)
        if chosen is None:
            continue
        score = float(np.mean([c.val_accuracy for c in chosen]))
        if best is None or score > best[0]:
            best = (score, name, chosen)
    return None if best is None else (best[1], best[2])


def _side(by_method: dict[str, list[Evaluation]], name: str, budget: float,
          seeds: Sequence[int]) -> tuple[str, list[Operating]] | None:
    if name in BEST_OF:
        return best_of(by_method, name, budget, seeds)
    chosen = _chosen(by_method[name], budget, seeds)
    return None if chosen is None else (name, chosen)


def paired_rows(evals: Sequence[Evaluation], method: str, reference: str,
                seeds: Sequence[int], budgets: Sequence[float] | str,
                draws: Draws) -> list[dict[str, Any]]:
    """``method`` against ``reference`` at each budget (``MATCHED``: the reference's cost).

    Rows: ``{"method", "reference", "budget", "accuracy", "reference_accuracy", "delta",
    "ci95", "cost", "reference_cost", "method_chosen", "reference_method"}`` (the last two name
    what a category side chose); a budget where either has no point within it gets no row.
    """
    by_method: dict[str, list[Evaluation]] = defaultdict(list)
    for e in evals:
        by_method[e.method].append(e)
    for side in (method, reference):
        if side not in BEST_OF and side not in by_method:
            return []
    if budgets == MATCHED:
        budgets = [max(e.val_cost for e in by_method[reference])]
    rows = []
    for budget in budgets:
        mine, ref = (_side(by_method, method, budget, seeds),
                     _side(by_method, reference, budget, seeds))
        if mine is None or ref is None:
            continue
        a, b = outcomes(mine[1]), outcomes(ref[1])
        diff = a - b
        rows.append({"method": method, "reference": reference, "method_chosen": mine[0],
                     "reference_method": ref[0], "budget": float(budget),
                     "accuracy": float(a.mean()), "reference_accuracy": float(b.mean()),
                     "delta": float(diff.mean()), "ci95": list(two_level_ci(diff, draws)),
                     "cost": float(np.mean([c.test_cost for c in mine[1]])),
                     "reference_cost": float(np.mean([c.test_cost for c in ref[1]]))})
    return rows


def findings(evals: Sequence[Evaluation], seeds: Sequence[int], budgets: Sequence[float],
             resamples: int = 2000, seed: int = 0,
             table: Sequence[tuple[str, tuple[str, ...], str, str]] = FINDINGS
             ) -> list[dict[str, Any]]:
    """Every row of ``table`` (:data:`FINDINGS`, or :data:`SKIP_FINDINGS` for a skip
    comparison) whose methods were evaluated, ``finding`` added."""
    if not evals:
        return []
    draws = bootstrap_draws(len(seeds), len(evals[0].test_correct), resamples, seed)
    rows = []
    for finding, methods, reference, grid in table:
        for method in methods:
            for row in paired_rows(evals, method, reference, seeds,
                                   MATCHED if grid == MATCHED else budgets, draws):
                rows.append({"finding": finding, **row})
    return rows


def _side_label(name: str, chosen: str | None) -> str:
    return name + (f" ({chosen})" if name in BEST_OF and chosen else "")


def findings_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The findings as a Markdown section (empty without rows)."""
    if not rows:
        return []
    out = ["## Findings (paired, at matched budgets)", "",
           "Both sides' points chosen per seed on validation at the budget, test accuracy (mean "
           "over seeds); Δ in points with the two-level bootstrap 95 % CI (seeds, then test "
           "samples). 0: the best RL method vs the best non-RL method (rules and supervised "
           "exits) and static truncation; 1: learned vs the best rule and static truncation; 2: "
           "hardness vs vanilla reward; 3: Q-exit vs PALBERT sampling at the latter's cost; "
           "4: lexicographic λ vs fixed α; 5: calibrated vs greedy reading of the same agents. "
           "Skip environments: S1 learned skipping vs the best static pattern and random "
           "skipping; S2 lexicographic λ vs fixed α; S3 the best skip method vs the best exit "
           "method, and skipping vs static truncation.",
           "",
           "| finding | method | vs | budget | accuracy | vs accuracy | Δ (points) | 95 % CI |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["ci95"]
        out.append(f"| {r['finding']} | {_side_label(r['method'], r.get('method_chosen'))} | "
                   f"{_side_label(r['reference'], r.get('reference_method'))} | "
                   f"{r['budget']:.2f} | {r['accuracy']:.4f} | {r['reference_accuracy']:.4f} | "
                   f"{100 * r['delta']:+.1f} | [{100 * lo:+.1f}, {100 * hi:+.1f}] |")
    return [*out, ""]


__all__ = ["BEST_EXIT", "BEST_NON_RL", "BEST_OF", "BEST_RL", "BEST_RULE", "BEST_SKIP",
           "FINDINGS", "SKIP_FINDINGS", "best_of", "findings",
           "findings_markdown", "paired_rows"]
