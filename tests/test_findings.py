"""Paired findings (exitgym.reports.findings): the best rule / non-RL / RL method is chosen on
validation, never on test; categories; matched budgets; the paired difference and its two-level
CI, against hand-made evaluations."""

from __future__ import annotations

import numpy as np
import pytest

from exitgym.reports.budget import Evaluation, bootstrap_draws
from exitgym.reports.categories import category
from exitgym.reports.findings import (
    BEST_NON_RL,
    BEST_RL,
    BEST_RULE,
    MATCHED,
    findings,
    paired_rows,
)

N = 200


def correct(k: int, offset: int = 0) -> np.ndarray:
    out = np.zeros(N, dtype=bool)
    out[offset:offset + k] = True
    return out


def test_best_rule_is_the_validation_best_not_the_test_best() -> None:
    evals = [  # entropy validates better but tests worse than maxprob
        Evaluation("entropy", 0.1, 0, 0.4, 0.90, 0.4, correct(100)),
        Evaluation("maxprob", 0.9, 0, 0.4, 0.80, 0.4, correct(180)),
        Evaluation("lexicographic", 0.05, 0, 0.35, 0.85, 0.35, correct(150)),
        Evaluation("lexicographic", 0.01, 0, 0.7, 0.99, 0.7, correct(200)),  # over budget
    ]
    (row,) = paired_rows(evals, "lexicographic", BEST_RULE, [0], [0.5],
                         bootstrap_draws(1, N, 500))
    assert row["reference_method"] == "entropy"
    # at exactly 0.5: 4/7 of the 0.35 knob, 3/7 of the 0.7 one (validation costs), against
    # entropy's 100/200; the test outcomes never entered the choice
    w = (0.7 - 0.5) / (0.7 - 0.35)
    assert row["delta"] == pytest.approx(w * 0.75 + (1 - w) * 1.0 - 0.5)
    lo, hi = row["ci95"]
    assert lo < row["delta"] < hi and 0.2 < lo and hi < 0.5


def test_paired_difference_averages_seeds_and_pairs_samples() -> None:
    # Two seeds of a method each right on a different half; the reference right on the first.
    evals = [Evaluation("lexicographic", 0.05, 0, 0.5, 0.8, 0.5, correct(100)),
             Evaluation("lexicographic", 0.05, 1, 0.5, 0.8, 0.5, correct(100, 100)),
             Evaluation("reinforce-vanilla", 0.1, 0, 0.5, 0.7, 0.5, correct(100)),
             Evaluation("reinforce-vanilla", 0.1, 1, 0.5, 0.7, 0.5, correct(100))]
    (row,) = paired_rows(evals, "lexicographic", "reinforce-vanilla", [0, 1], [0.6],
                         bootstrap_draws(2, N, 500))
    assert row["delta"] == 0.0 and row["accuracy"] == row["reference_accuracy"] == 0.5
    lo, hi = row["ci95"]  # per-sample diffs are ±0.5, so the CI is wide, not [0, 0]
    assert lo < -0.03 and hi > 0.03


def test_matched_budget_is_the_references_cost_and_findings_label_rows() -> None:
    evals = [Evaluation("palbert-sample", None, 0, 0.82, 0.8, 0.8, correct(150)),
             Evaluation("qexit", 0.5, 0, 0.78, 0.85, 0.78, correct(160)),
             Evaluation("qexit", 0.9, 0, 0.90, 0.90, 0.90, correct(190)),  # dearer: mixed in
             Evaluation("static", 1, 0, 0.3, 0.6, 0.3, correct(120))]
    (row,) = paired_rows(evals, "qexit", "palbert-sample", [0], MATCHED,
                         bootstrap_draws(1, N, 200))
    # Q-exit at exactly the sampling criterion's cost: 2/3 of the 0.78 knob, 1/3 of the 0.90 one
    assert row["budget"] == 0.82 and row["cost"] == pytest.approx(0.82)
    assert row["delta"] == pytest.approx((2 * 160 + 190) / 3 / N - 150 / N)
    rows = findings(evals, [0], [0.3, 0.5])
    assert [(r["finding"], r["method"], r["reference"]) for r in rows] == [
        ("3", "qexit", "palbert-sample")]


def test_categories_of_rules_supervised_exits_and_rl() -> None:
    assert [category(m) for m in ("entropy", "static", "random", "margin", "patience")] == [
        "rule"] * 5
    assert [category(m) for m in ("berxit", "qexit", "palbert-sample")] == ["supervised"] * 3
    assert [category(m) for m in ("reinforce-hardness-budget", "lexicographic", "consistentee",
                                  "ppo-vanilla", "reinforce-vanilla-greedy")] == ["rl"] * 5
    assert category("oracle") == category("full-depth") == "reference"


def test_best_rl_against_best_non_rl_counts_supervised_exits_and_chooses_on_validation() -> None:
    """BERxiT (supervised) validates best among non-RL methods and is the reference even though a
    rule tests better; among RL methods the validation-best one is chosen; static truncation and
    -greedy rows are never a side's best."""
    evals = [
        Evaluation("entropy", 0.1, 0, 0.4, 0.80, 0.4, correct(190)),
        Evaluation("berxit", 0.5, 0, 0.4, 0.85, 0.4, correct(150)),
        Evaluation("static", 2, 0, 0.4, 0.99, 0.4, correct(120)),
        Evaluation("reinforce-hardness-budget", 0.48, 0, 0.4, 0.84, 0.4, correct(170)),
        Evaluation("reinforce-hardness-budget-greedy", 0.48, 0, 0.4, 0.99, 0.4, correct(200)),
        Evaluation("lexicographic", 0.05, 0, 0.4, 0.83, 0.4, correct(200)),
    ]
    draws = bootstrap_draws(1, N, 300)
    (row,) = paired_rows(evals, BEST_RL, BEST_NON_RL, [0], [0.5], draws)
    assert (row["method_chosen"], row["reference_method"]) == ("reinforce-hardness-budget",
                                                                "berxit")
    assert row["delta"] == pytest.approx((170 - 150) / N)
    (rule,) = paired_rows(evals, BEST_RL, BEST_RULE, [0], [0.5], draws)
    assert rule["reference_method"] == "entropy"  # static is a reference, never "the best rule"
    rows = findings(evals, [0], [0.5])
    assert ("0", BEST_RL, BEST_NON_RL) in [(r["finding"], r["method"], r["reference"])
                                          for r in rows]
    greedy = [r for r in rows if r["finding"] == "5"]
    assert greedy and greedy[0]["reference"] == "reinforce-hardness-budget-greedy"
