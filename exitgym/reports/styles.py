"""One colour and marker per method name, and how a method's knob is written, for every plot.

Why one mapping: a method drawn blue in one comparison and orange in the next (colours were handed
out by AUC rank) cannot be followed from plot to plot. The built-in rules, fitted baselines and
references keep fixed colours; any other name (a trained ``<agent>-<reward>`` method, a plug-in)
gets a colour and a marker from a hash of its name, so it too is the same in every plot (two such
names may share a colour; they then differ in marker with probability 10/11).
"""

from __future__ import annotations

import hashlib
import numbers
from typing import Any

FIXED_STYLES: dict[str, tuple[str, str]] = {
    "entropy": ("#1f77b4", "o"),
    "maxprob": ("#ff7f0e", "s"),
    "patience": ("#2ca02c", "D"),
    "static": ("#7f7f7f", "^"),
    "random": ("#bcbd22", "v"),
    "qexit": ("#9467bd", "P"),
    "palbert-sample": ("#8c564b", "<"),
    "berxit": ("#17becf", ">"),
    "full-depth": ("#000000", "*"),
    "oracle": ("#daa520", "P"),
}
"""Built-in methods and references -> (colour, marker)."""

HASHED_COLOURS: tuple[str, ...] = ("#d62728", "#e377c2", "#1b9e77", "#d95f02", "#7570b3",
                                   "#e7298a", "#66a61e", "#a6761d", "#e6ab02", "#393b79",
                                   "#637939", "#843c39")
"""Colours of every other method name (none of them is a fixed colour)."""
HASHED_MARKERS = "osD^vP<>hX*"
"""Markers of every other method name."""

KNOB_SYMBOLS: dict[str, str] = {"theta": "θ", "alpha": "α", "t": "patience",
                                "target": "target cost", "allowed_drop": "drop", "tau": "τ"}
"""Knob attribute names written differently on plots (others are written as they are)."""


def method_style(method: str) -> tuple[str, str]:
    """``(colour, marker)`` of ``method``: the same in every plot of every run."""
    if method in FIXED_STYLES:
        return FIXED_STYLES[method]
    digest = hashlib.sha256(method.encode()).digest()
    return (HASHED_COLOURS[digest[0] % len(HASHED_COLOURS)],
            HASHED_MARKERS[digest[1] % len(HASHED_MARKERS)])


def knob_name(method: str) -> str | None:
    """The knob a method's operating points differ in, as plots write it (None: unknown).

    A method of the registry names its knob there (rules, fitted baselines, ``compare``'s
    lexicographic and ConsistentEE agents); a trained method ``<agent>-<reward>`` is swept over
    the reward's α, ``<agent>-<reward>-budget`` over the target cost (``compare``'s names),
    ``<agent>-<reward>-calibrated`` over the exit-probability threshold τ
    (:mod:`exitgym.agents.calibrated`).
    """
    from exitgym.agents.registry import METHODS

    entry = METHODS.get(method)
    if entry is not None and (entry.knob or entry.kind in ("rule", "fitted")):
        return KNOB_SYMBOLS.get(entry.knob, entry.knob) if entry.knob else None
    agents = [n for n, m in METHODS.items() if m.kind in ("trainer", "sb3", "schedule")]
    if entry is not None or any(method.startswith(f"{a}-") for a in agents):
        if method.endswith("-calibrated"):
            return KNOB_SYMBOLS["tau"]
        return KNOB_SYMBOLS["target" if method.endswith("-budget") else "alpha"]
    return None


def knob_label(method: str, value: Any) -> str:
    """``"θ=0.4"``, ``"α=0.05"``, ...: the label of one operating point (``""`` without a knob)."""
    if value is None:
        return ""
    name = knob_name(method)
    text = f"{value:g}" if isinstance(value, numbers.Real) else str(value)
    return f"{name}={text}" if name else text
