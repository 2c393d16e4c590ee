"""Result files kept in the repository, and the README tables generated from them.

Why: a number typed into the README goes stale the day the code changes. The findings of a
comparison are kept as a trimmed copy of its ``summary.json`` (budget table, findings, references,
smallest detectable difference, meta) with the command and date that made it, under
``results/<name>.json``; the README's tables are generated from those files by
:func:`headline_table` and :func:`findings_table`, and a test fails when a README table and its
file disagree. Regenerate a file with::

    python -m exitgym.reports.results RUN_DIR NAME --command "exitgym demo ..."

"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from exitgym.utils.atomic import write_json

RESULTS_DIR = Path(__file__).resolve().parents[2] / "results"
"""``results/`` at the repository root."""
KEPT = ("budget_table", "findings", "references", "smallest_detectable", "meta", "seeds",
        "selection_split", "per_layer_accuracy", "heads", "target_costs")
"""The ``summary.json`` keys a result file keeps (rows and curves stay in the run)."""


def trim(summary: dict[str, Any], command: str, date: str | None = None) -> dict[str, Any]:
    """The kept part of a comparison's summary, with the command and date that made it."""
    from exitgym.reports.budget import target_costs

    out = {k: summary[k] for k in KEPT if k in summary}
    if "target_costs" not in out and "selection_rows" in summary:
        out["target_costs"] = target_costs(summary["selection_rows"])
    out["command"] = command
    out["date"] = date or time.strftime("%Y-%m-%d")
    return out


def load(name: str, root: Path = RESULTS_DIR) -> dict[str, Any]:
    """``results/<name>.json``."""
    return json.loads((root / f"{name}.json").read_text())


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def findings_table(result: dict[str, Any], finding: str = "0",
                   reference: str = "best-non-rl", method: str | None = None) -> list[str]:
    """Markdown rows of one finding against one reference: budget, the two chosen methods,
    accuracies, Δ in points with its two-level 95 % CI.

    ``method`` keeps only that method's rows (a finding may compare several methods with one
    reference); finding 0's columns say *best RL / best non-RL (validation)*, the others name the
    method and the reference as chosen on validation.
    """
    left, right = (("best RL (validation)", "best non-RL (validation)") if finding == "0"
                   else ("method", "reference"))
    lines = [f"| budget | {left} | accuracy | {right} | accuracy | Δ (points) | 95 % CI |",
             "|---:|---|---:|---|---:|---:|---|"]
    for r in result.get("findings", []):
        if r["finding"] != finding or r["reference"] != reference:
            continue
        if method is not None and r["method"] != method:
            continue
        lo, hi = r["ci95"]
        lines.append(f"| {r['budget']:.1f} | {r.get('method_chosen') or r['method']} | "
                     f"{r['accuracy']:.3f} | {r['reference_method']} | "
                     f"{r['reference_accuracy']:.3f} | {_pts(r['delta'])} | "
                     f"[{_pts(lo)}, {_pts(hi)}] |")
    return lines


def meta_line(result: dict[str, Any]) -> str:
    """One sentence on what a result file measured: task, backbone, heads, test size, seeds,
    the smallest detectable difference, and the command and date that made it."""
    m = result["meta"]
    env = m.get("env", "exitgym/EarlyExit-v0")
    where = "" if env == "exitgym/EarlyExit-v0" else f"{env.split('/')[-1]} on "
    return (f"{where}{m['task']} × {m['backbone']}, {m['heads']} heads, {m['samples']:,} "
            f"{m['split']} samples, seeds {', '.join(map(str, result['seeds']))}; smallest "
            f"detectable difference {100 * result['smallest_detectable']:.1f} points. Made by "
            f"`{result['command']}` on {result['date']}.")


def headline_table(result: dict[str, Any], methods: Sequence[str]) -> list[str]:
    """Markdown budget table: static truncation and ``methods`` at each budget (test accuracy
    mean ± std over seeds, Δ vs static with its two-level 95 % CI)."""
    table = result["budget_table"]
    budgets = sorted({r["budget"] for r in table})
    lines = ["| budget | static truncation | " + " | ".join(methods) + " |",
             "|---:|---:|" + "---|" * len(methods)]
    for b in budgets:
        cells = []
        static = [r for r in table if r["budget"] == b and r["method"] == "static"]
        for m in methods:
            found = [r for r in table if r["budget"] == b and r["method"] == m]
            if not found:
                cells.append("–")
                continue
            r = found[0]
            lo, hi = r["ci95"]
            cells.append(f"{r['accuracy']:.3f} ± {r['accuracy_std']:.3f} "
                         f"({_pts(r['delta_vs_static'])}, [{_pts(lo)}, {_pts(hi)}])")
        lines.append(f"| {b:.1f} | {static[0]['accuracy']:.3f} | " + " | ".join(cells) + " |"
                     if static else f"| {b:.1f} | – | " + " | ".join(cells) + " |")
    return lines


def keep_main(argv: list[str] | None, *, prog: str, description: str, source_help: str,
              make: Callable[[Path, str], dict[str, Any]]) -> int:
    """The command line that keeps a result file: ``SOURCE NAME --command CMD`` writes
    ``make(SOURCE, CMD)`` to ``results/<NAME>.json`` (comparisons here, ``bench.json`` in
    :mod:`exitgym.bench.results`)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("source", help=source_help)
    parser.add_argument("name", help="results/<name>.json")
    parser.add_argument("--command", required=True, help="the command that made it")
    args = parser.parse_args(argv)
    target = RESULTS_DIR / f"{args.name}.json"
    write_json(target, make(Path(args.source), args.command))
    print(f"wrote {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return keep_main(
        argv, prog="python -m exitgym.reports.results",
        description="Keep a comparison's findings in results/.",
        source_help="a complete compare / demo directory",
        make=lambda run, command: trim(json.loads((run / "summary.json").read_text()), command))


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["KEPT", "RESULTS_DIR", "findings_table", "headline_table", "keep_main", "load",
           "main", "meta_line", "trim"]
