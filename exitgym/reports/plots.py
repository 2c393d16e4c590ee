"""The comparison's figures: ``pareto.png`` to read at a glance, ``pareto-all.png`` for detail.

Why two figures: a comparison holds a dozen methods, each with many operating points; drawn
together with every knob label they pile up between cost 0.6 and 1.0, and a far-away reference
(the oracle) squeezes every curve into one band. The overview therefore draws, per category
(rules, supervised exits, RL), only the method with the best AUC, next to static truncation and
random exit, with the budget table of the same methods beside it; references off the curves'
range are annotations at the edge, not points that stretch the axes; legends sit below the axes so
they never cover a line. ``pareto-all.png`` draws every method, one panel per category with static
truncation in each, and labels a point's knob only where the label does not collide with another.

The y-axis names the comparison's quality (``meta["quality"]``: accuracy for classification,
agreement with the full model for generation); the x-axis stops shortly after cost 1 and says how
many points lie beyond it (generation rules that read the LM head at every layer cost several
times the full model).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exitgym.reports.budget import STATIC
from exitgym.reports.categories import CATEGORIES
from exitgym.reports.curves import auc_label
from exitgym.reports.styles import knob_label, method_style

CATEGORY_LINES = {"rule": "-", "supervised": "--", "rl": "-."}
"""Line style per method category (colour and marker stay per method)."""
FULL_DEPTH, ORACLE = "full-depth", "oracle"
BASELINES = (STATIC, "random")
"""Drawn in the overview whatever their AUC: the trivial baselines beside every method."""
X_MAX = 1.05
"""The x-axis ends here (a little after full depth's cost 1)."""
LABEL_GAP_PX = (42.0, 9.0)
"""Two knob labels closer than this (x, y in pixels) collide; the later one is left out."""


def quality_name(summary: dict[str, Any]) -> str:
    """What the y-axis measures: ``meta["quality"]`` or accuracy."""
    return str((summary.get("meta") or {}).get("quality") or "accuracy")


def overview_methods(summary: dict[str, Any]) -> list[str]:
    """The overview's methods: per category the best, then the trivial baselines.

    "Best" is the widest coverage of the AUC range first (to the nearest 0.05), then the AUC:
    each AUC is taken over the part of the range its method covers, so a method read only near
    full depth (a greedy reading that never leaves it) would otherwise win with one point.
    """
    methods = summary["methods"]
    chosen = []
    for cat in CATEGORIES:
        candidates = [(round(20 * info.get("coverage", 1.0)), info["auc"], m)
                      for m, info in methods.items()
                      if info.get("category", "rl") == cat and m not in BASELINES]
        if candidates:
            chosen.append(max(candidates)[-1])
    return [*chosen, *(m for m in BASELINES if m in methods)]


def _y_range(summary: dict[str, Any], methods: Sequence[str]) -> tuple[float, float]:
    ys = [p["accuracy"] for m in methods for p in summary["methods"][m]["points"]
          if p["cost"] <= X_MAX]
    full = summary["references"].get(FULL_DEPTH)
    if full:
        ys.append(full["accuracy"])
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    pad = max(0.01, 0.06 * (hi - lo))
    return lo - pad, hi + pad


def _references(ax: Any, summary: dict[str, Any], ylim: tuple[float, float]) -> None:
    """Full depth and the oracle: a marker inside the axes, an annotation at the edge outside."""
    for method, p in summary["references"].items():
        color, marker = method_style(method)
        text = f"{method}: {p['accuracy']:.3f} at cost {p['cost']:.2f}"
        if ylim[0] <= p["accuracy"] <= ylim[1] and p["cost"] <= X_MAX:
            ax.scatter([p["cost"]], [p["accuracy"]], color=color, marker=marker, s=200,
                       edgecolor="white", zorder=5, label=text)
            continue
        top = p["accuracy"] > ylim[1]
        y = ylim[1] if top else ylim[0]
        ax.annotate(f"{text} ({'above' if top else 'below'} the axes)",
                    xy=(min(p["cost"], X_MAX), y), xytext=(0, -14 if top else 14),
                    textcoords="offset points", ha="center", fontsize=8, color=color,
                    arrowprops={"arrowstyle": "->" if top else "<-", "color": color})


def _beyond(ax: Any, summary: dict[str, Any], methods: Sequence[str]) -> None:
    far = [p["cost"] for m in methods for p in summary["methods"][m]["points"]
           if p["cost"] > X_MAX]
    if far:
        ax.text(0.99, 0.01, f"{len(far)} point(s) beyond cost {X_MAX:g} not shown "
                f"(up to {max(far):.1f})", transform=ax.transAxes, ha="right", fontsize=7.5,
                color="0.35")


def _labels(ax: Any, points: Sequence[tuple[float, float, str, str]]) -> None:
    """Knob labels, skipping any that would collide with one already placed."""
    placed: list[tuple[float, float]] = []
    ax.figure.canvas.draw()  # the data -> pixel transform is final only once laid out
    for x, y, text, color in points:
        px, py = ax.transData.transform((x, y))
        if any(abs(px - qx) < LABEL_GAP_PX[0] and abs(py - qy) < LABEL_GAP_PX[1]
               for qx, qy in placed):
            continue
        placed.append((px, py))
        ax.annotate(text, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=6.5,
                    color=color, zorder=4)


def _curves(ax: Any, summary: dict[str, Any], methods: Sequence[str], *, faint: bool,
            labels: bool) -> None:
    """Each method's Pareto front (and, with ``faint``, every point of it)."""
    texts = []
    for method in methods:
        info = summary["methods"][method]
        color, marker = method_style(method)
        kind = info.get("category", "rl")
        pts = [p for p in info["points"] if p["cost"] <= X_MAX]
        if faint:
            ax.scatter([p["cost"] for p in pts], [p["accuracy"] for p in pts], color=color,
                       marker=marker, s=22, alpha=0.4, zorder=2)
        texts += [(p["cost"], p["accuracy"], knob_label(method, p["knob"]), color) for p in pts
                  if labels and p["knob"] is not None and "tau" not in p]
        front = [(c, a) for c, a in info["pareto"] if c <= X_MAX]
        ax.plot([c for c, _ in front], [a for _, a in front], color=color, marker=marker, ms=6,
                lw=3 if method == STATIC else 2, zorder=3, ls=CATEGORY_LINES.get(kind, "-"),
                label=f"[{kind}] {method} ({auc_label(info)})")
    if texts:
        _labels(ax, texts)


def _axes(ax: Any, summary: dict[str, Any], methods: Sequence[str], title: str) -> None:
    ylim = _y_range(summary, methods)
    ax.set_xlim(0.0, X_MAX)
    ax.set_ylim(*ylim)
    _references(ax, summary, ylim)
    _beyond(ax, summary, methods)
    ax.set_xlabel("cost: FLOPs fraction of the full model (lower is faster)")
    ax.set_ylabel(quality_name(summary))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)


def _legend_below(ax: Any, ncol: int = 2) -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=ncol, fontsize=8,
              frameon=False)


def _budget_panel(ax: Any, summary: dict[str, Any], methods: Sequence[str] | None) -> None:
    """The budget table as curves: test quality (mean ± std over seeds) of each method's point
    chosen on the selection split at each budget; static truncation thick."""
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in summary.get("budget_table") or []:
        if methods is None or row["method"] in methods:
            by_method[row["method"]].append(row)
    for method, rows in sorted(by_method.items()):
        rows = sorted(rows, key=lambda r: r["budget"])
        color, marker = method_style(method)
        kind = rows[0].get("category", "rl")
        ax.errorbar([r["budget"] for r in rows], [r["accuracy"] for r in rows],
                    yerr=[r["accuracy_std"] for r in rows], marker=marker, ms=5, capsize=3,
                    lw=3 if method == STATIC else 1.4, color=color, label=f"[{kind}] {method}",
                    ls=CATEGORY_LINES.get(kind, "-"), zorder=4 if method == STATIC else 3)
    ax.set_xlabel(f"FLOPs budget (chosen on {summary.get('selection_split', 'validation')})")
    ax.set_ylabel(f"test {quality_name(summary)}, mean ± std over seeds")
    ax.set_title("budget table: each method's point at exactly each budget")
    ax.grid(True, alpha=0.3)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from exitgym.utils.atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    plt.close(fig)
    return path


def plot_overview(summary: dict[str, Any], path: Path, title: str = "") -> Path:
    """``pareto.png``: the best method per category and the trivial baselines."""
    import matplotlib.pyplot as plt

    methods = overview_methods(summary)
    table = bool(summary.get("budget_table"))
    fig, axes = plt.subplots(1, 2 if table else 1, figsize=(14 if table else 8, 6.4), dpi=120,
                             squeeze=False)
    ax = axes[0][0]
    _curves(ax, summary, methods, faint=False, labels=False)
    _axes(ax, summary, methods, title or f"{quality_name(summary)} vs cost: the best method "
          "of each category")
    _legend_below(ax, ncol=1)
    if table:
        _budget_panel(axes[0][1], summary, methods)
        _legend_below(axes[0][1], ncol=1)
    fig.text(0.01, 0.005, "every method and its operating points: pareto-all.png", fontsize=8,
             color="0.35")
    fig.tight_layout()
    return _save(fig, path)


def plot_all(summary: dict[str, Any], path: Path, title: str = "") -> Path:
    """``pareto-all.png``: every method, one panel per category, static truncation in each,
    knob labels where they do not collide; then the whole budget table."""
    import matplotlib.pyplot as plt

    groups = {cat: [m for m, i in summary["methods"].items()
                    if i.get("category", "rl") == cat and m != STATIC] for cat in CATEGORIES}
    groups = {cat: ms for cat, ms in groups.items() if ms}
    table = bool(summary.get("budget_table"))
    panels = max(len(groups) + int(table), 1)
    cols = min(panels, 2)
    rows = -(-panels // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(8.5 * cols, 7.6 * rows), dpi=110,
                             squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[panels:]:
        ax.remove()
    for ax, (cat, methods) in zip(axes, groups.items(), strict=False):
        shown = [*methods, *([STATIC] if STATIC in summary["methods"] else [])]
        _curves(ax, summary, shown, faint=True, labels=True)
        _axes(ax, summary, shown, f"{title + ': ' if title else ''}{cat} methods")
        _legend_below(ax, ncol=1)
    if table:
        _budget_panel(axes[panels - 1], summary, None)
        _legend_below(axes[panels - 1], ncol=1)
    fig.tight_layout()
    return _save(fig, path)


def plot_pareto(summary: dict[str, Any], path: str | os.PathLike[str], title: str = "") -> Path:
    """Write ``path`` (the overview) and ``pareto-all.png`` beside it (every method)."""
    import matplotlib

    matplotlib.use("Agg")
    path = Path(path)
    plot_overview(summary, path, title)
    plot_all(summary, path.with_name(f"{path.stem}-all{path.suffix}"), title)
    return path


__all__ = ["BASELINES", "overview_methods", "plot_all", "plot_overview", "plot_pareto",
           "quality_name"]
