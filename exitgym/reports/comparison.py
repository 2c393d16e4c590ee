"""Comparison reports: ``summary.json``, ``pareto.png`` and ``report.md`` from evaluation rows.

A *row* is one evaluation of one method at one knob value and seed::

    {"method", "knob", "seed", "accuracy", "cost", "speedup", "mean_exit_layer"}

plus one ``full-depth`` row (the last head, cost 1 by definition) and one ``oracle`` row.

Area under the accuracy–cost curve (``auc``), per method, over the part of ``[lo, hi] = [0.2,
1.0]`` the method covers:

1. average the method's rows over seeds at each knob value -> points ``(cost, accuracy)``;
2. keep the Pareto front: points no other point beats on both axes (lower-or-equal cost and
   higher-or-equal accuracy, one strictly);
3. the curve ``a(c)`` linearly interpolates the front between its points (a mix of two
   neighbouring operating points, chosen per input at random, achieves the interpolated cost and
   accuracy in expectation); it is flat after the most expensive front point (the budget need not
   be spent);
4. the covered range is ``[max(lo, cheapest point's cost), hi]`` (``auc_range`` per method) and
   ``auc = ∫ a(c) dc / (range length)`` over it, integrated exactly (the curve is piecewise
   linear).

So ``auc`` reads as the mean accuracy over the FLOPs budgets the method can meet, spread
uniformly; it is always printed with its range, since two methods' AUCs compare only over the same
range (a method with no point below cost 0.8 is not "0.2 accurate": its AUC covers [0.8, 1.0]).
``coverage`` is the covered fraction of ``[lo, hi]``. ``auc_seeds`` repeats the computation per
seed (mean and std are reported).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from exitgym.reports.categories import CATEGORIES, category
from exitgym.reports.curves import (
    AUC_RANGE,
    auc,
    coverage,
    covered_range,
    pareto_front,
)
from exitgym.reports.findings import findings_markdown
from exitgym.reports.plots import plot_pareto
from exitgym.utils.atomic import atomic_write_text, write_json

ROW_KEYS = ("method", "knob", "seed", "accuracy", "cost", "speedup", "mean_exit_layer")
FULL_DEPTH, ORACLE = "full-depth", "oracle"
REFERENCE_METHODS = (FULL_DEPTH, ORACLE)
"""Single-point references: drawn as markers, not curves, and given no AUC."""


def make_row(method: str, knob: float | None, seed: int, accuracy: float, cost: float,
             mean_exit_layer: float, tau: float | None = None,
             alpha: float | None = None) -> dict[str, Any]:
    """One summary row; ``speedup = 1 / cost``; ``tau`` / ``alpha``: the reading of a trained
    policy (threshold, and the cost weight of a conditioned one), only when set."""
    row = {"method": method, "knob": None if knob is None else float(knob), "seed": int(seed),
           "accuracy": float(accuracy), "cost": float(cost),
           "speedup": 1.0 / cost if cost > 0 else math.inf,
           "mean_exit_layer": float(mean_exit_layer)}
    if tau is not None:
        row["tau"] = float(tau)
    if alpha is not None:
        row["alpha"] = float(alpha)
    return row


def row_from_eval(method: str, knob: float | None, seed: int, result: Any,
                  tau: float | None = None, alpha: float | None = None) -> dict[str, Any]:
    """Row from an :class:`~exitgym.agents.records.EvalResult`."""
    return make_row(method, knob, seed, result.accuracy, result.cost, result.mean_exit_layer,
                    tau, alpha)


def curve_points(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seed-averaged points of one method: knob (and reading), accuracy (+std), cost (+std), n
    seeds."""
    by_knob: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_knob[(row["knob"], row.get("tau"), row.get("alpha"))].append(row)
    out = []
    for (knob, tau, alpha), group in by_knob.items():
        acc = np.array([r["accuracy"] for r in group])
        cost = np.array([r["cost"] for r in group])
        exits = np.array([r["mean_exit_layer"] for r in group])
        reading = {k: v for k, v in (("tau", tau), ("alpha", alpha)) if v is not None}
        out.append({"knob": knob, **reading,
                    "accuracy": float(acc.mean()), "accuracy_std": float(acc.std()),
                    "cost": float(cost.mean()), "cost_std": float(cost.std()),
                    "speedup": float(1.0 / cost.mean()), "mean_exit_layer": float(exits.mean()),
                    "seeds": len(group)})
    return sorted(out, key=lambda p: p["cost"])


def ranked_methods(methods: dict[str, Any]) -> list[tuple[str, Any]]:
    """Methods by category (rules, supervised, RL), then by AUC within it."""
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return sorted(methods.items(),
                  key=lambda kv: (order.get(kv[1].get("category", "rl"), 9), -kv[1]["auc"]))


def summarize(rows: Sequence[dict[str, Any]], meta: dict[str, Any] | None = None,
              lo: float = AUC_RANGE[0], hi: float = AUC_RANGE[1]) -> dict[str, Any]:
    """The ``summary.json`` payload: rows, per-method curves and AUC, references, meta."""
    for row in rows:
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"summary row {row} lacks {missing}")
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_method[row["method"]].append(dict(row))
    methods: dict[str, Any] = {}
    for method, group in by_method.items():
        if method in REFERENCE_METHODS:
            continue
        points = curve_points(group)
        xy = [(p["cost"], p["accuracy"]) for p in points]
        per_seed = defaultdict(list)
        for r in group:
            per_seed[r["seed"]].append((r["cost"], r["accuracy"]))
        seed_aucs = [auc(v, lo, hi) for _, v in sorted(per_seed.items())]
        span = covered_range(xy, lo, hi)
        methods[method] = {
            "auc": auc(xy, lo, hi), "auc_range": list(span) if span else None,
            "category": category(method), "auc_seeds": seed_aucs,
            "auc_mean": float(np.mean(seed_aucs)), "auc_std": float(np.std(seed_aucs)),
            "coverage": coverage(xy, lo, hi), "points": points,
            "pareto": [list(p) for p in pareto_front(xy)],
            "best_accuracy": max(p["accuracy"] for p in points),
        }
    refs = {m: curve_points(by_method[m])[0] for m in REFERENCE_METHODS if by_method.get(m)}
    return {"rows": [dict(r) for r in rows], "methods": methods, "references": refs,
            "auc_range": [lo, hi], "auc_definition": __doc__.split("Area under", 1)[1].strip(),
            "meta": meta or {}}


# ---- outputs --------------------------------------------------------------------------------
def _budget_markdown(summary: dict[str, Any]) -> list[str]:
    """The budget table section of ``report.md`` (empty without a table)."""
    table = summary.get("budget_table") or []
    if not table:
        return []
    selection = summary.get("selection_split", "validation")
    lines = ["## Budget table", "",
             f"Per FLOPs budget, each method's operating point is chosen on **{selection}** at "
             "exactly the budget (the best pure point within it, or a per-input random mixture of "
             "a cheaper and a dearer point costing exactly the budget; static truncation mixes "
             "the two adjacent layers), per seed, and reported on "
             f"**{summary['meta'].get('split', 'test')}** (mean ± std over "
             f"{len(summary.get('seeds', []))} seeds). Δ is the accuracy difference to static "
             "truncation at the same budget, with its two-level bootstrap 95 % CI (seeds, then "
             "test samples)."
             + (f" Half the median CI width, {summary['smallest_detectable']:.4f}, is about the "
                "smallest difference this design resolves." if summary.get("smallest_detectable")
                else ""), "",
             "| budget | category | method | accuracy | Δ vs static | 95 % CI of Δ | test cost | "
             "knob per seed | τ per seed |", "|---:|---|---|---:|---:|---:|---:|---|---|"]
    for row in sorted(table, key=lambda r: (r["budget"], -r["accuracy"])):
        lo, hi = row["ci95"]
        knobs = ", ".join(_knob(k) for k in row.get("knobs", []))
        taus = ", ".join(_knob(t) for t in row.get("tau", [])) or "–"
        lines.append(f"| {row['budget']:.1f} | {row.get('category', '–')} | {row['method']} | "
                     f"{row['accuracy']:.4f} ± {row['accuracy_std']:.4f} | "
                     f"{row['delta_vs_static']:+.4f} | [{lo:+.4f}, {hi:+.4f}] | "
                     f"{row['cost']:.3f} | {knobs} | {taus} |")
    return [*lines, ""]


def _targets_markdown(summary: dict[str, Any]) -> list[str]:
    """Budget-targeted agents: target against achieved validation cost (greedy reading)."""
    rows = summary.get("target_costs") or []
    if not rows:
        return []
    lines = ["## Budget-targeted agents: target vs achieved validation cost", "",
             "Greedy reading of each run on validation, per seed; the calibrated readings of the "
             "same runs (the method's rows above) choose their own cost.", "",
             "| method | target | validation cost per seed | median | median − target |",
             "|---|---:|---|---:|---:|"]
    for r in rows:
        costs = ", ".join(f"{c:.3f}" for c in r["val_costs"])
        lines.append(f"| {r['method']} | {r['target']:.2f} | {costs} | {r['median']:.3f} | "
                     f"{r['median_miss']:+.3f} |")
    return [*lines, ""]


def _knob(value: Any) -> str:
    return "–" if value is None else f"{value:g}"


def _heads_table(summary: dict[str, Any]) -> list[str]:
    """Accuracy of every exit head per split: what depth buys before any policy decides."""
    per_layer = summary.get("per_layer_accuracy")
    if not per_layer:
        return []
    splits = list(per_layer)
    lines = [f"## Exit heads (`{summary.get('heads')}` recipe): accuracy per exit layer", "",
             "| exit layer | " + " | ".join(splits) + " |", "|---:|" + "---:|" * len(splits)]
    for i in range(len(per_layer[splits[0]])):
        lines.append(f"| {i + 1} | " + " | ".join(f"{per_layer[s][i]:.4f}" for s in splits)
                     + " |")
    return [*lines, ""]


def report_markdown(summary: dict[str, Any], title: str, plot_name: str = "pareto.png",
                    sections: Sequence[str] = ()) -> str:
    """``report.md``: AUC table, references, every operating point, the plot, extra sections."""
    lo, hi = summary["auc_range"]
    lines = [f"# {title}", ""]
    meta = summary.get("meta") or {}
    if meta:
        lines += [", ".join(f"**{k}**: {v}" for k, v in meta.items() if not isinstance(v, dict)),
                  ""]
    lines += _heads_table(summary)
    detail = plot_name.replace(".png", "-all.png")
    lines += [f"![accuracy vs cost]({plot_name})", "",
              f"Every method and its operating points, by category: [{detail}]({detail}).", "",
              *_budget_markdown(summary),
              *findings_markdown(summary.get("findings") or []), *_targets_markdown(summary),
              f"## Methods by category, ranked by AUC over the part of [{lo:g}, {hi:g}] each "
              "covers", "",
              "The AUC and the operating points below are test-split envelopes over every knob "
              "value (optimistic, favouring denser grids); the budget table above is the "
              "validation-selected comparison.", "",
              "| category | method | AUC | over cost | AUC mean ± std over seeds | coverage | "
              "best accuracy | points |",
              "|---|---|---:|---|---:|---:|---:|---:|"]
    for method, info in ranked_methods(summary["methods"]):
        span = info.get("auc_range")
        where = f"[{span[0]:.2f}, {span[1]:.2f}]" if span else "–"
        lines.append(f"| {info.get('category', 'rl')} | {method} | {info['auc']:.4f} | {where} "
                     f"| {info['auc_mean']:.4f} ± "
                     f"{info['auc_std']:.4f} | {info['coverage']:.2f} | "
                     f"{info['best_accuracy']:.4f} | {len(info['points'])} |")
    lines += ["", "## References", "",
              "| reference | accuracy | cost | speed-up | mean exit layer |",
              "|---|---:|---:|---:|---:|"]
    for method, p in summary["references"].items():
        lines.append(f"| {method} | {p['accuracy']:.4f} | {p['cost']:.3f} | {p['speedup']:.2f}x "
                     f"| {p['mean_exit_layer']:.2f} |")
    lines += ["", "## Operating points (mean over seeds)", "",
              "| method | knob | accuracy | cost | speed-up | mean exit layer | seeds |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for method, info in summary["methods"].items():
        for p in info["points"]:
            lines.append(f"| {method} | {_knob(p['knob'])} | {p['accuracy']:.4f} ± "
                         f"{p['accuracy_std']:.4f} | {p['cost']:.3f} | {p['speedup']:.2f}x | "
                         f"{p['mean_exit_layer']:.2f} | {p['seeds']} |")
    lines += ["", "## How AUC is computed", "", summary["auc_definition"], ""]
    for section in sections:
        lines += [section.rstrip(), ""]
    return "\n".join(lines)


def write_report(out: str | os.PathLike[str], rows: Sequence[dict[str, Any]], title: str,
                 meta: dict[str, Any] | None = None,
                 sections: Sequence[str] = (), extra: dict[str, Any] | None = None,
                 ) -> dict[str, Any]:
    """Write ``summary.json``, ``pareto.png`` (with ``pareto-all.png``) and ``report.md`` into
    ``out``; return the summary.

    ``extra`` adds top-level keys to the summary (``heads``, ``per_layer_accuracy``; from
    ``compare`` also ``selection_split``, ``seeds``, ``budget_table``, ...); a ``budget_table``
    is drawn and tabulated.
    """
    out = Path(out)
    summary = {**summarize(rows, meta), **(extra or {})}
    write_json(out / "summary.json", summary)
    plot_pareto(summary, out / "pareto.png", title)
    atomic_write_text(out / "report.md", report_markdown(summary, title, "pareto.png", sections))
    return summary
