"""Paired findings (exitgym.reports.findings): the best rule is chosen on validation, never on
test; matched budgets; the paired difference and its CI, against hand-made evaluations."""

from __future__ import annotations

import numpy as np
import pytest

from exitgym.reports.budget import Evaluation, bootstrap_indices
from exitgym.reports.findings import BEST_RULE, MATCHED, findings, paired_rows

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
                         bootstrap_indices(N, 500))
    assert row["reference_method"] == "entropy"
    assert row["delta"] == pytest.approx(0.25)  # 150/200 − 100/200, the within-budget knob
    lo, hi = row["ci95"]
    assert 0.15 < lo <= 0.25 <= hi < 0.35


def test_paired_difference_averages_seeds_and_pairs_samples() -> None:
    # Two seeds of a method each right on a different half; the reference right on the first.
    evals = [Evaluation("lexicographic", 0.05, 0, 0.5, 0.8, 0.5, correct(100)),
             Evaluation("lexicographic", 0.05, 1, 0.5, 0.8, 0.5, correct(100, 100)),
             Evaluation("reinforce-vanilla", 0.1, 0, 0.5, 0.7, 0.5, correct(100)),
             Evaluation("reinforce-vanilla", 0.1, 1, 0.5, 0.7, 0.5, correct(100))]
    (row,) = paired_rows(evals, "lexicographic", "reinforce-vanilla", [0, 1], [0.6],
                         bootstrap_indices(N, 500))
    assert row["delta"] == 0.0 and row["accuracy"] == row["reference_accuracy"] == 0.5
    lo, hi = row["ci95"]  # per-sample diffs are ±0.5, so the CI is wide, not [0, 0]
    assert lo < -0.03 and hi > 0.03


def test_matched_budget_is_the_references_cost_and_findings_label_rows() -> None:
    evals = [Evaluation("palbert-sample", None, 0, 0.82, 0.8, 0.8, correct(150)),
             Evaluation("qexit", 0.5, 0, 0.78, 0.85, 0.78, correct(160)),
             Evaluation("qexit", 0.9, 0, 0.90, 0.90, 0.90, correct(190)),  # dearer: excluded
             Evaluation("static", 1, 0, 0.3, 0.6, 0.3, correct(120))]
    (row,) = paired_rows(evals, "qexit", "palbert-sample", [0], MATCHED,
                         bootstrap_indices(N, 200))
    assert row["budget"] == 0.82 and row["delta"] == pytest.approx(0.05)
    rows = findings(evals, [0], [0.3, 0.5])
    assert [(r["finding"], r["method"], r["reference"]) for r in rows] == [
        ("3", "qexit", "palbert-sample")]
