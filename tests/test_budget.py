"""The budget table (exitgym.reports.budget): selection on validation only, static truncation's
deepest affordable layer, seeds, and the paired bootstrap CI, against hand-made evaluations."""

from __future__ import annotations

import numpy as np
import pytest

from exitgym.reports.budget import (
    Evaluation,
    budget_table,
    paired_ci,
    select_per_seed,
    smallest_detectable,
)

N = 200


def correct(k: int, offset: int = 0) -> np.ndarray:
    """Correct on samples offset..offset+k-1 (of N)."""
    out = np.zeros(N, dtype=bool)
    out[offset:offset + k] = True
    return out


def static_evals() -> list[Evaluation]:
    """Static truncation at layers 1..3: validation costs 0.3 / 0.6 / 1.0."""
    return [Evaluation("static", k, 0, cost, acc, cost, correct(n))
            for k, cost, acc, n in ((1, 0.3, 0.6, 120), (2, 0.6, 0.7, 140), (3, 1.0, 0.8, 160))]


def row(rows: list[dict], method: str, budget: float) -> dict:
    (found,) = [r for r in rows if r["method"] == method and r["budget"] == budget]
    return found


def test_selection_reads_validation_never_test() -> None:
    """Knob a is best on test but over budget on validation, knob b is best on test within
    budget but worse on validation: the table must report knob c, the validation choice."""
    evals = [*static_evals(),
             Evaluation("m", 1.0, 0, 0.55, 0.90, 0.40, correct(200)),  # over budget on val
             Evaluation("m", 2.0, 0, 0.45, 0.60, 0.45, correct(180)),  # best test, worse val
             Evaluation("m", 3.0, 0, 0.50, 0.70, 0.50, correct(150))]
    rows = budget_table(evals, seeds=[0], budgets=(0.5,))
    chosen = row(rows, "m", 0.5)
    assert chosen["knobs"] == [3.0] and chosen["accuracy"] == pytest.approx(0.75)
    # static: the deepest layer whose validation cost fits (layer 1 at 0.3), not the best
    static = row(rows, "static", 0.5)
    assert static["knobs"] == [1] and static["accuracy"] == pytest.approx(0.6)
    assert chosen["delta_vs_static"] == pytest.approx(0.75 - 0.6)
    assert static["delta_vs_static"] == 0.0 and static["ci95"] == [0.0, 0.0]


def test_static_takes_the_deepest_affordable_layer_even_when_a_shallower_one_validates_better(
) -> None:
    evals = [Evaluation("static", 1, 0, 0.3, 0.9, 0.3, correct(180)),
             Evaluation("static", 2, 0, 0.6, 0.5, 0.6, correct(100))]
    assert select_per_seed(evals, 0.7, [0], deepest=True)[0].knob == 2
    assert select_per_seed(evals, 0.7, [0])[0].knob == 1  # other methods: best validation
    assert select_per_seed(evals, 0.2, [0]) is None


def test_seeds_mean_std_and_seedless_reuse_and_missing_budgets() -> None:
    evals = [*static_evals(),
             Evaluation("m", 0.1, 0, 0.5, 0.7, 0.5, correct(150)),
             Evaluation("m", 0.1, 1, 0.5, 0.7, 0.5, correct(170)),
             Evaluation("m", 0.2, 1, 0.9, 0.8, 0.9, correct(190)),
             Evaluation("cheap-only-seed0", 0.5, 0, 0.3, 0.5, 0.3, correct(100)),
             Evaluation("cheap-only-seed0", 0.5, 1, 0.95, 0.5, 0.3, correct(100))]
    rows = budget_table(evals, seeds=[0, 1], budgets=(0.5, 0.95))
    m = row(rows, "m", 0.5)
    assert m["accuracy"] == pytest.approx(0.8) and m["accuracy_std"] == pytest.approx(0.05)
    assert m["knobs"] == [0.1, 0.1] and m["seeds"] == 2
    assert row(rows, "m", 0.95)["knobs"] == [0.1, 0.2]
    # seedless static (seed 0 only) serves both seeds
    assert row(rows, "static", 0.95)["knobs"] == [2, 2]
    # a method with a seed that has no point within budget gets no row at that budget
    assert not [r for r in rows if r["method"] == "cheap-only-seed0" and r["budget"] == 0.5]
    assert row(rows, "cheap-only-seed0", 0.95)["knobs"] == [0.5, 0.5]


def test_paired_bootstrap_ci_is_paired_and_covers_the_difference() -> None:
    """A method right wherever static is, plus 10 more samples: every paired resample shows a
    gain, so the CI excludes 0, while an unpaired comparison of the same accuracies would not.
    Equal outcomes give exactly [0, 0]."""
    static = Evaluation("static", 1, 0, 0.3, 0.7, 0.3, correct(140))
    better = Evaluation("m", 1.0, 0, 0.3, 0.75, 0.3, correct(150))
    same = Evaluation("twin", 1.0, 0, 0.3, 0.7, 0.3, correct(140))
    rows = budget_table([static, better, same], seeds=[0], budgets=(0.5,), resamples=1000)
    lo, hi = row(rows, "m", 0.5)["ci95"]
    assert row(rows, "m", 0.5)["delta_vs_static"] == pytest.approx(0.05)
    assert 0.0 < lo < 0.05 < hi
    assert row(rows, "twin", 0.5)["ci95"] == [0.0, 0.0]
    # unpaired: resampling the two methods independently gives a CI reaching below 0
    rng = np.random.default_rng(0)
    a = better.test_correct[rng.integers(0, N, (1000, N))].mean(1)
    b = static.test_correct[rng.integers(0, N, (1000, N))].mean(1)
    assert np.percentile(a - b, 2.5) < 0 < lo


def test_paired_ci_percentiles_by_hand() -> None:
    diff = np.array([0.0, 1.0])
    indices = np.array([[0, 0], [0, 1], [1, 1], [1, 0]])
    lo, hi = paired_ci(diff, indices)
    assert lo == pytest.approx(np.percentile([0, 0.5, 1, 0.5], 2.5))
    assert hi == pytest.approx(np.percentile([0, 0.5, 1, 0.5], 97.5))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="needs 'static'"):
        budget_table([Evaluation("m", 1.0, 0, 0.3, 0.7, 0.3, correct(1))], seeds=[0])
    short = Evaluation("m", 1.0, 0, 0.3, 0.7, 0.3, np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match="same test samples"):
        budget_table([*static_evals(), short], seeds=[0])


def test_smallest_detectable_is_half_the_median_ci_width() -> None:
    rows = [{"ci95": [0.0, 0.0]}, {"ci95": [-0.02, 0.04]}, {"ci95": [0.01, 0.03]},
            {"ci95": [-0.1, 0.1]}]
    assert smallest_detectable(rows) == pytest.approx(0.06 / 2)  # median of 0.06, 0.02, 0.2
    assert smallest_detectable([{"ci95": [0.0, 0.0]}]) is None
