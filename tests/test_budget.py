"""The budget table (exitgym.reports.budget): selection on validation only, operating points at
exactly the budget (mixtures of two points; static truncation mixes adjacent layers), seeds, and
the two-level bootstrap CI, against hand-made evaluations."""

from __future__ import annotations

import numpy as np
import pytest

from exitgym.reports.budget import (
    Draws,
    Evaluation,
    bootstrap_draws,
    budget_table,
    paired_ci,
    select_per_seed,
    smallest_detectable,
    two_level_ci,
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
    rows = budget_table(evals, seeds=[0], budgets=(0.5,), interpolate=False)
    chosen = row(rows, "m", 0.5)
    assert chosen["knobs"] == [3.0] and chosen["accuracy"] == pytest.approx(0.75)
    # static: the deepest layer whose validation cost fits (layer 1 at 0.3), not the best
    static = row(rows, "static", 0.5)
    assert static["knobs"] == [1] and static["accuracy"] == pytest.approx(0.6)
    assert chosen["delta_vs_static"] == pytest.approx(0.75 - 0.6)
    assert static["delta_vs_static"] == 0.0 and static["ci95"] == [0.0, 0.0]
    # with mixtures: knobs 2 and 1 mixed half and half cost 0.5 and validate at 0.75 > 0.70,
    # still read from validation alone (knob 1's test cost, 0.40, plays no part)
    mixed = row(budget_table(evals, seeds=[0], budgets=(0.5,)), "m", 0.5)
    assert mixed["points"] == [{"knob": [2.0, 1.0], "weight": pytest.approx(0.5)}]
    assert mixed["val_cost"] == pytest.approx(0.5)
    assert mixed["accuracy"] == pytest.approx(0.5 * 0.9 + 0.5 * 1.0)
    assert mixed["cost"] == pytest.approx(0.5 * 0.45 + 0.5 * 0.40)


def test_static_takes_the_deepest_affordable_layer_even_when_a_shallower_one_validates_better(
) -> None:
    evals = [Evaluation("static", 1, 0, 0.3, 0.9, 0.3, correct(180)),
             Evaluation("static", 2, 0, 0.6, 0.5, 0.6, correct(100))]
    pick = select_per_seed(evals, 0.7, [0], deepest=True)[0]
    assert pick.low.knob == 2 and pick.high is None  # nothing dearer to mix with
    assert select_per_seed(evals, 0.7, [0])[0].low.knob == 1  # other methods: best validation
    assert select_per_seed(evals, 0.2, [0]) is None


def test_static_mixes_the_adjacent_layers_to_cost_exactly_the_budget() -> None:
    """Layers at validation costs 0.3 / 0.6 / 1.0: at budget 0.5 static runs layer 1 on a third of
    the inputs and layer 2 on the rest, so its cost is the budget and its test outcome the
    expected correctness of that mixture; at 0.6 it is layer 2 alone."""
    rows = budget_table(static_evals(), seeds=[0], budgets=(0.5, 0.6, 0.8))
    half = row(rows, "static", 0.5)
    assert half["points"] == [{"knob": [1, 2], "weight": pytest.approx(1 / 3)}]
    assert half["cost"] == pytest.approx(0.5) and half["val_cost"] == pytest.approx(0.5)
    assert half["accuracy"] == pytest.approx((120 + 2 * 140) / 3 / N)
    assert row(rows, "static", 0.6)["points"] == [{"knob": [2], "weight": 1.0}]
    eight = row(rows, "static", 0.8)  # halfway from layer 2 (0.6) to layer 3 (1.0)
    assert eight["cost"] == pytest.approx(0.8)
    assert eight["accuracy"] == pytest.approx((140 + 160) / 2 / N)
    # the old reading (deepest layer within budget) sits on a layer boundary instead
    old = row(budget_table(static_evals(), seeds=[0], budgets=(0.5,), interpolate=False),
              "static", 0.5)
    assert old["cost"] == pytest.approx(0.3)


def test_a_method_is_read_on_its_validation_envelope_so_grid_density_decides_nothing() -> None:
    """Two grids of one method: a coarse one (costs 0.2 and 0.8) and the same plus a point under
    the chord. The envelope at 0.5 is the chord's mixture for both, so the denser grid gains
    nothing; a point above the chord is chosen as a pure point."""
    coarse = [Evaluation("m", 1.0, 0, 0.2, 0.6, 0.2, correct(120)),
              Evaluation("m", 2.0, 0, 0.8, 0.9, 0.8, correct(180))]
    under = [*coarse, Evaluation("m", 3.0, 0, 0.5, 0.7, 0.5, correct(200))]
    above = [*coarse, Evaluation("m", 3.0, 0, 0.5, 0.8, 0.5, correct(100))]
    (a,) = select_per_seed(coarse, 0.5, [0])
    (b,) = select_per_seed(under, 0.5, [0])
    (c,) = select_per_seed(above, 0.5, [0])
    assert a.val_accuracy == pytest.approx(0.75) and b.val_accuracy == pytest.approx(0.75)
    assert (b.low.knob, b.high.knob, b.weight) == (1.0, 2.0, pytest.approx(0.5))
    assert c.high is None and c.low.knob == 3.0


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
    assert m["points"][1] == {"knob": [0.1], "weight": 1.0}  # seed 1's 0.9 point is too dear
    assert row(rows, "m", 0.95)["knobs"] == [0.1, 0.2]
    assert row(rows, "m", 0.95)["points"][0] == {"knob": [0.1], "weight": 1.0}
    # seedless static (seed 0 only) serves both seeds
    assert row(rows, "static", 0.95)["points"] == [
        {"knob": [2, 3], "weight": pytest.approx(0.05 / 0.4)}] * 2
    # a method with a seed that has no point within budget gets no row at that budget
    assert not [r for r in rows if r["method"] == "cheap-only-seed0" and r["budget"] == 0.5]
    assert row(rows, "cheap-only-seed0", 0.95)["knobs"] == [0.5, 0.5]


def test_two_level_ci_by_hand_and_seed_variance_widens_it() -> None:
    """Two resamples by hand; then a method whose seeds disagree: the CI over seeds and samples
    is wider than the samples-only CI of the seed mean (the seed spread is in the interval)."""
    diff = np.array([[0.0, 1.0], [1.0, 1.0]])
    draws = Draws(np.array([[0, 0], [1, 0]]), np.array([[0, 1], [1, 1]]))
    # resample 0: seeds (0, 0) -> per-sample [0, 1], samples (0, 1) -> 0.5
    # resample 1: seeds (1, 0) -> per-sample [0.5, 1], samples (1, 1) -> 1.0
    lo, hi = two_level_ci(diff, draws)
    assert (lo, hi) == (pytest.approx(np.percentile([0.5, 1.0], 2.5)),
                        pytest.approx(np.percentile([0.5, 1.0], 97.5)))
    rng = np.random.default_rng(1)
    base = rng.random(N) < 0.5
    seeds = np.stack([base ^ (rng.random(N) < p) for p in (0.0, 0.3, 0.6)]).astype(float)
    diff = seeds - base
    draws = bootstrap_draws(3, N, 2000, 0)
    two = two_level_ci(diff, draws)
    one = paired_ci(diff.mean(axis=0), draws.samples)
    assert two[1] - two[0] > 1.3 * (one[1] - one[0])
    with pytest.raises(ValueError, match="seeds"):
        two_level_ci(diff[:2], draws)


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
