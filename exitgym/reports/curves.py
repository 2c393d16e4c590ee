"""Accuracy–cost curves of one method: Pareto front, envelope, covered range and AUC.

The definitions are in :mod:`exitgym.reports.comparison`'s docstring (what ``summary.json``
carries as ``auc_definition``); this module holds the arithmetic, so the report module keeps to
the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

AUC_RANGE: tuple[float, float] = (0.2, 1.0)
"""Cost range ``[lo, hi]`` the AUC is taken over (each method: the part it covers)."""


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated ``(cost, accuracy)`` points, sorted by cost (accuracy strictly rising)."""
    front: list[tuple[float, float]] = []
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((float(cost), float(acc)))
    return front


def envelope(front: Sequence[tuple[float, float]], cost: float) -> float:
    """The curve ``a(c)`` of the module docstring at one cost."""
    if not front or cost < front[0][0]:
        return 0.0
    xs, ys = zip(*front, strict=True)
    return float(np.interp(cost, xs, ys))


def covered_range(points: Sequence[tuple[float, float]], lo: float = AUC_RANGE[0],
                  hi: float = AUC_RANGE[1]) -> tuple[float, float] | None:
    """``[max(lo, cheapest cost), hi]``: where the method has an operating point (None: its
    cheapest point costs more than ``hi``, or it has none)."""
    if not points:
        return None
    start = max(lo, min(c for c, _ in points))
    return (float(start), float(hi)) if start < hi else None


def auc(points: Sequence[tuple[float, float]], lo: float = AUC_RANGE[0],
        hi: float = AUC_RANGE[1]) -> float:
    """Normalised area under the Pareto envelope over the covered part of ``[lo, hi]`` (module
    docstring; 0 when nothing is covered)."""
    if not hi > lo:
        raise ValueError(f"AUC range must have hi > lo, got [{lo}, {hi}]")
    span = covered_range(points, lo, hi)
    if span is None:
        return 0.0
    front = pareto_front(points)
    start, end = span
    cuts = sorted({start, end, *(c for c, _ in front if start < c < end)})
    area = 0.0
    for a, b in zip(cuts, cuts[1:], strict=False):
        area += 0.5 * (envelope(front, a) + envelope(front, b)) * (b - a)
    return area / (end - start)


def coverage(points: Sequence[tuple[float, float]], lo: float = AUC_RANGE[0],
             hi: float = AUC_RANGE[1]) -> float:
    """Fraction of ``[lo, hi]`` at or above the method's cheapest operating point."""
    if not points:
        return 0.0
    cheapest = min(c for c, _ in points)
    return float(np.clip((hi - max(lo, cheapest)) / (hi - lo), 0.0, 1.0))


def auc_label(info: dict[str, Any]) -> str:
    """``AUC 0.831 over [0.25, 1.00]``: an AUC is only read with the range it covers."""
    span = info.get("auc_range")
    if not span:
        return "no point within the AUC range"
    return f"AUC {info['auc']:.3f} over [{span[0]:.2f}, {span[1]:.2f}]"


__all__ = ["AUC_RANGE", "auc", "auc_label", "coverage", "covered_range", "envelope",
           "pareto_front"]
