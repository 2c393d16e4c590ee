"""Comparison report: Pareto front, AUC against hand computations, summary schema, outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from exitgym.reports.comparison import FULL_DEPTH, ORACLE, make_row, summarize, write_report
from exitgym.reports.curves import (
    auc,
    auc_label,
    coverage,
    covered_range,
    envelope,
    pareto_front,
)
from exitgym.reports.plots import overview_methods


def test_pareto_front_drops_dominated_points_and_sorts_by_cost() -> None:
    points = [(0.6, 0.8), (0.4, 0.6), (0.5, 0.5), (1.2, 0.85), (0.7, 0.8), (0.4, 0.55)]
    assert pareto_front(points) == [(0.4, 0.6), (0.6, 0.8), (1.2, 0.85)]


def test_auc_matches_hand_computation() -> None:
    points = [(0.4, 0.6), (0.6, 0.8), (0.5, 0.5), (1.2, 0.85)]
    # [0.2, 0.4): no operating point: not covered, not counted (the range is [0.4, 1.0]).
    # [0.4, 0.6]: linear 0.6 -> 0.8, area 0.2 * 0.7 = 0.14.
    # [0.6, 1.0]: linear towards (1.2, 0.85); a(1.0) = 0.8 + 0.05 * 0.4 / 0.6.
    a1 = 0.8 + 0.05 * 0.4 / 0.6
    expected = (0.14 + 0.4 * (0.8 + a1) / 2) / 0.6
    assert covered_range(points) == (0.4, 1.0)
    assert auc(points) == pytest.approx(expected, rel=1e-12)
    assert envelope(pareto_front(points), 0.3) == 0.0
    assert envelope(pareto_front(points), 0.5) == pytest.approx(0.7)


def test_auc_is_flat_after_the_last_point_and_covers_only_the_reachable_range() -> None:
    assert auc([(0.3, 0.7)]) == pytest.approx(0.7)  # one point: its accuracy, over [0.3, 1]
    assert auc([(0.1, 0.9)]) == pytest.approx(0.9)  # covers the whole range
    # a method with no point below 0.8 (PALBERT's sampling criterion) is not "0.2 accurate":
    # its AUC is its accuracy over [0.85, 1.0], printed with that range
    assert auc([(0.85, 0.82)]) == pytest.approx(0.82)
    assert auc_label({"auc": 0.82, "auc_range": [0.85, 1.0]}) == "AUC 0.820 over [0.85, 1.00]"
    assert auc([(1.5, 0.9)]) == 0.0 and covered_range([(1.5, 0.9)]) is None
    assert auc([]) == 0.0
    assert coverage([(0.3, 0.7), (0.9, 0.8)]) == pytest.approx(0.7 / 0.8)
    with pytest.raises(ValueError, match="hi > lo"):
        auc([(0.3, 0.7)], lo=0.5, hi=0.5)


def _rows() -> list[dict]:
    rows = [
        make_row("rl", 0.1, 0, 0.80, 0.9, 5.0), make_row("rl", 0.1, 1, 0.78, 0.7, 4.0),
        make_row("rl", 1.0, 0, 0.60, 0.3, 1.5), make_row("rl", 1.0, 1, 0.62, 0.5, 2.5),
        make_row("entropy", 0.2, 0, 0.75, 0.5, 3.0), make_row("entropy", 0.5, 0, 0.65, 0.25, 1.2),
        make_row(FULL_DEPTH, None, 0, 0.81, 1.0, 6.0), make_row(ORACLE, None, 0, 0.95, 0.3, 1.8),
    ]
    return rows


def test_summary_schema_seed_averaging_and_references() -> None:
    rows = _rows()
    summary = summarize(rows, meta={"task": "toy"})
    assert summary["rows"] == rows and summary["rows"] is not rows  # copied, not rewritten
    assert make_row("m", None, 0, 0.5, 0.25, 1.0)["speedup"] == 4.0
    assert make_row("m", None, 0, 0.5, 0.0, 1.0)["speedup"] == math.inf
    assert "tau" not in rows[0] and make_row("m", 1.0, 0, 0.5, 0.5, 2.0, tau=0.1)["tau"] == 0.1
    assert set(summary["methods"]) == {"rl", "entropy"}  # references get no curve
    assert summary["methods"]["entropy"]["category"] == "rule"
    rl = summary["methods"]["rl"]
    by_knob = {p["knob"]: p for p in rl["points"]}
    assert by_knob[0.1]["accuracy"] == pytest.approx(0.79)
    assert by_knob[0.1]["cost"] == pytest.approx(0.8)
    assert by_knob[1.0]["accuracy_std"] == pytest.approx(0.01)
    assert rl["auc"] == pytest.approx(auc([(0.8, 0.79), (0.4, 0.61)]))
    assert rl["auc_seeds"] == pytest.approx([auc([(0.9, 0.8), (0.3, 0.6)]),
                                             auc([(0.7, 0.78), (0.5, 0.62)])])
    assert rl["auc_mean"] == pytest.approx(sum(rl["auc_seeds"]) / 2)
    assert summary["references"][FULL_DEPTH]["accuracy"] == pytest.approx(0.81)
    assert summary["references"][ORACLE]["cost"] == pytest.approx(0.3)
    assert summary["auc_range"] == [0.2, 1.0]
    assert "Pareto front" in summary["auc_definition"]


def test_rows_missing_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match="lacks"):
        summarize([{"method": "x", "accuracy": 1.0}])


def test_write_report_outputs(tmp_path: Path) -> None:
    summary = write_report(tmp_path, _rows(), "toy report", meta={"task": "toy"},
                           sections=("## Extra\n\nhello",))
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["methods"]["rl"]["auc"] == pytest.approx(summary["methods"]["rl"]["auc"])
    assert len(on_disk["rows"]) == 8
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "report.md").read_text()
    assert "![accuracy vs cost](pareto.png)" in md
    assert f"| rl | rl | {summary['methods']['rl']['auc']:.4f} | [0.40, 1.00] |" in md
    assert "| full-depth | 0.8100 | 1.000 | 1.00x | 6.00 |" in md
    assert "## Extra" in md
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left nothing behind
    # entropy: front (0.25, 0.65) -> (0.5, 0.75), flat to 1.0, over its range [0.25, 1.0]
    assert on_disk["methods"]["entropy"]["auc"] == pytest.approx(
        (0.25 * 0.70 + 0.5 * 0.75) / 0.75)
    assert on_disk["methods"]["entropy"]["auc_range"] == [0.25, 1.0]


def test_training_curves_are_smoothed_with_a_trailing_mean() -> None:
    from exitgym.reports.run import smooth

    assert smooth([1.0, 3.0, 5.0, float("nan"), 9.0], 2) == [1.0, 2.0, 4.0, 5.0, 9.0]
    assert smooth([2.0, 4.0], 1) == [2.0, 4.0]


def _drawn(tmp_path: Path, rows: list[dict], monkeypatch: pytest.MonkeyPatch,
           meta: dict | None = None) -> list[Any]:
    """The figures ``plot_pareto`` drew: the overview, then every method (``plt.close`` is kept
    from discarding them)."""
    import matplotlib.pyplot as plt

    from exitgym.reports.comparison import plot_pareto

    kept: list[Any] = []
    monkeypatch.setattr(plt, "close", kept.append)
    plot_pareto(summarize(rows, meta), tmp_path / "pareto.png")
    assert (tmp_path / "pareto.png").is_file() and (tmp_path / "pareto-all.png").is_file()
    return kept[-2:]


def _drawn_pareto(tmp_path: Path, rows: list[dict], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The detail figure (every method, one panel per category)."""
    return _drawn(tmp_path, rows, monkeypatch)[1]


def _colour_of(fig: Any, method: str) -> tuple[float, ...]:
    from matplotlib.colors import to_rgba

    lines = [ln for ax in fig.axes for ln in ax.get_lines()
             if f"] {method} (AUC" in str(ln.get_label())]
    assert len(lines) == 1, [ln.get_label() for ax in fig.axes for ln in ax.get_lines()]
    return tuple(to_rgba(lines[0].get_color()))


def _texts(fig: Any) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_method_colours_do_not_depend_on_the_other_methods(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A method keeps its colour when the ranking changes (colours used to follow AUC rank)."""
    def entropy(shift: float) -> list[dict]:
        return [make_row("entropy", t, 0, 0.6 + shift + t / 10, 0.3 + t, 3.0)
                for t in (0.1, 0.3, 0.5)]

    strong_ppo = [make_row("ppo-vanilla", a, 0, 0.9, c, 2.0) for a, c in ((0.1, 0.5), (0.2, 0.3))]
    first = _drawn_pareto(tmp_path, entropy(0.0) + strong_ppo, monkeypatch)
    alone = _drawn_pareto(tmp_path, entropy(0.1), monkeypatch)
    assert _colour_of(first, "entropy") == _colour_of(alone, "entropy")
    assert _colour_of(first, "ppo-vanilla") != _colour_of(first, "entropy")


def test_pareto_points_are_labelled_with_their_knob(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [make_row("entropy", 0.4, 0, 0.7, 0.5, 3.0), make_row("patience", 2, 0, 0.8, 0.6, 4.0),
            make_row("ppo-vanilla", 0.05, 0, 0.75, 0.4, 2.0),
            make_row("reinforce-flops-budget", 0.3, 0, 0.72, 0.3, 2.0),
            make_row("qexit", 0.5, 0, 0.71, 0.45, 2.5),
            make_row("lexicographic", 0.02, 0, 0.8, 0.7, 4.0),
            make_row("consistentee", 0.4, 0, 0.78, 0.42, 2.6)]
    labels = set(_texts(_drawn_pareto(tmp_path, rows, monkeypatch)))
    assert {"θ=0.4", "patience=2", "α=0.05", "target cost=0.3", "q=0.5", "drop=0.02",
            "target cost=0.4"} <= labels


def test_readings_of_trained_policies_are_not_labelled_one_by_one(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """A trained agent read at a dozen thresholds would pile a dozen labels on its curve; its
    reading points are drawn without labels while rule points keep theirs."""
    rows = [make_row("entropy", 0.2, 0, 0.75, 0.5, 3.0),
            *[make_row("reinforce-hardness-budget", 0.48, 0, 0.7 + t / 10, 0.3 + t / 2, 2.0,
                       tau=t) for t in (0.1, 0.3, 0.5)]]
    labels = _texts(_drawn_pareto(tmp_path, rows, monkeypatch))
    assert "θ=0.2" in labels and not any("target cost" in t for t in labels)


def _comparison_rows() -> list[dict]:
    rows = [make_row("full-depth", None, 0, 0.83, 1.0, 6.0),
            make_row("oracle", None, 0, 0.97, 0.3, 2.0)]
    for name, shift in (("entropy", 0.0), ("maxprob", 0.01), ("patience", -0.02),
                        ("static", -0.04), ("random", -0.05), ("berxit", 0.005),
                        ("reinforce-hardness-budget", 0.012), ("lexicographic", -0.01)):
        rows += [make_row(name, k, 0, 0.76 + shift + 0.07 * c, c, 3.0)
                 for k, c in ((0.2, 0.3), (0.5, 0.6), (0.8, 0.9))]
    return rows


def test_overview_draws_the_best_method_per_category_and_the_baselines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overview, detail = _drawn(tmp_path, _comparison_rows(), monkeypatch)
    ax = overview.axes[0]
    drawn = {str(ln.get_label()).split("] ")[1].split(" (")[0] for ln in ax.get_lines()
             if str(ln.get_label()).startswith("[")}
    assert drawn == {"reinforce-hardness-budget", "maxprob", "berxit", "static", "random"}
    # a reading that covers only the expensive end does not win the RL slot on its one point
    narrow = [*_comparison_rows(), make_row("reinforce-hardness-budget-greedy", 0.48, 0, 0.99,
                                            0.8, 5.0)]
    assert "reinforce-hardness-budget" in overview_methods(summarize(narrow))
    # the oracle (0.97) is annotated at the edge; it does not stretch the axes to 0.97
    low, high = ax.get_ylim()
    assert high < 0.90 and any("oracle: 0.970 at cost 0.30" in t for t in _texts(overview))
    # the legend sits below the axes: it covers no line
    overview.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.y1 <= ax.get_window_extent().y0
    # the detail figure has every method, rules / supervised / RL in their own panels
    assert len(detail.axes) == 3
    everything = {str(ln.get_label()).split("] ")[1].split(" (")[0]
                  for a in detail.axes for ln in a.get_lines() if str(ln.get_label())[:1] == "["}
    assert everything == {"entropy", "maxprob", "patience", "static", "random", "berxit",
                          "reinforce-hardness-budget", "lexicographic"}


def test_colliding_knob_labels_are_left_out(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [make_row("entropy", 0.4, 0, 0.70, 0.500, 3.0),
            make_row("entropy", 0.41, 0, 0.7001, 0.501, 3.0),  # on top of the first
            make_row("entropy", 0.9, 0, 0.80, 0.900, 3.0)]
    labels = _texts(_drawn_pareto(tmp_path, rows, monkeypatch))
    assert "θ=0.4" in labels and "θ=0.9" in labels and "θ=0.41" not in labels


def test_generation_plots_say_agreement_and_keep_the_cost_axis_readable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [make_row("full-depth", None, 0, 1.0, 1.0, 30.0),
            make_row("entropy", 0.5, 0, 0.3, 0.4, 3.0),
            make_row("entropy", 0.99, 0, 0.6, 5.5, 23.0),
            make_row("static", 10, 0, 0.2, 0.35, 10.0), make_row("static", 20, 0, 0.4, 0.7, 20.0)]
    overview, _ = _drawn(tmp_path, rows, monkeypatch, meta={"quality": "agreement with full depth"})
    ax = overview.axes[0]
    assert ax.get_ylabel() == "agreement with full depth"
    assert ax.get_xlim()[1] <= 1.05
    assert any("1 point(s) beyond cost 1.05" in t for t in _texts(overview))
