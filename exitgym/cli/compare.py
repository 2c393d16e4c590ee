"""``exitgym compare``: reward shapes × α × seeds for the RL agent, plus the exit rules; report."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from exitgym.cli.common import add_command, user_errors
from exitgym.experiments.configs import CompareConfig
from exitgym.utils.configs import option

ENGINES = ("local", "tune")
"""Where ``compare`` trains its agents: one after another here, or as Ray Tune trials."""


@dataclass(frozen=True)
class CompareArgs:
    """Train and evaluate every reward shape, α, seed and exit rule; report.

    Writes summary.json, pareto.png and report.md (plus one run directory per trained agent and
    every evaluation episode as Parquet) into --out. The same command on an unfinished --out
    (interrupted, failed, or left running by a process that is gone) resumes it: finished agents
    are skipped.
    """

    config: CompareConfig = field(default_factory=CompareConfig)
    """What to train, sweep and evaluate."""
    out: str | None = None
    """Output directory (default: runs/<time>-compare)."""
    overwrite: bool = False
    """Replace the run (or comparison) already in --out once the new one is complete: a failed
    one, or one to redo."""
    resume: bool = False
    """Continue the unfinished comparison in --out (refused when there is none); the same
    command without it continues one too, as long as the flags are the stored ones."""
    engine: str = option("local", choices=ENGINES)
    """local: train the agents one after another; tune: one Ray Tune trial each (needs
    exitgym[ray]); the same command on the same --out resumes a killed tune sweep."""
    address: str | None = None
    """--engine tune: Ray cluster address to join (default: start a local Ray)."""
    max_concurrent: int = option(2, minimum=1)
    """--engine tune: trials running at once (one CPU each)."""
    gpus_per_trial: float | None = option(None, minimum=0)
    """--engine tune: GPU share per trial (0.5: two trials per GPU); default: 1 when the agents
    train on CUDA (--device), else 0 (Ray hides the GPUs from a trial that reserves none)."""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return add_command(sub, "compare", run, CompareArgs)


def run(args: CompareArgs) -> int:
    import sys
    import time
    from pathlib import Path

    from exitgym.cli import interrupt_code
    from exitgym.cli.common import comparison_interrupted, holds_run
    from exitgym.experiments.compare import compare, train_jobs

    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-compare")
    replacing = args.overwrite and holds_run(out)
    try:
        with user_errors():
            if args.engine == "tune":
                if args.config.env != "exitgym/EarlyExit-v0":
                    raise ValueError(f"--engine tune compares on exitgym/EarlyExit-v0 only; run "
                                     f"the {args.config.env} comparison with --engine local")
                from exitgym.integrations.tune import compare_tune

                result = compare_tune(args.config, out, address=args.address,
                                      max_concurrent=args.max_concurrent,
                                      overwrite=args.overwrite, resume=args.resume,
                                      gpus_per_trial=args.gpus_per_trial)
            else:
                result = compare(args.config, out, overwrite=args.overwrite, resume=args.resume)
    except KeyboardInterrupt as err:
        print(comparison_interrupted(out, len(train_jobs(args.config)), replacing),
              file=sys.stderr)
        return interrupt_code(err)
    print_ranking(result.summary)
    print(f"report: {out / 'report.md'}")
    return 0


def print_ranking(summary: dict) -> None:
    """The AUC ranking and the reference points, one line each."""
    from exitgym.reports.comparison import ranked_methods
    from exitgym.reports.curves import auc_label

    lo, hi = summary["auc_range"]
    print(f"AUC of accuracy over the part of cost [{lo:g}, {hi:g}] each method covers, by "
          "category (higher is better):")
    ranked = ranked_methods(summary["methods"])
    width = max([len(m) for m, _ in ranked] + [10])
    for method, info in ranked:
        print(f"  {info.get('category', 'rl'):<10} {method:<{width}}  {auc_label(info)}  best "
              f"accuracy {info['best_accuracy']:.4f}  coverage {info['coverage']:.2f}")
    for method, p in summary["references"].items():
        print(f"  {method:<{width}}  accuracy {p['accuracy']:.4f} at cost {p['cost']:.3f}")
    table = summary.get("budget_table") or []
    if table:
        print(f"budget table (chosen on {summary.get('selection_split')} at exactly each budget, "
              f"test accuracy, Δ vs static truncation with its two-level bootstrap 95 % CI):")
        for row in sorted(table, key=lambda r: (r["budget"], -r["accuracy"])):
            lo, hi = row["ci95"]
            print(f"  {row['budget']:.1f}  {row['method']:<{width}}  {row['accuracy']:.4f} ± "
                  f"{row['accuracy_std']:.4f}  Δ {row['delta_vs_static']:+.4f} "
                  f"[{lo:+.4f}, {hi:+.4f}]")
    paired = summary.get("findings") or []
    if paired:
        print("findings (both chosen on validation at the budget; test Δ in points, two-level "
              "bootstrap 95 % CI):")
        for row in paired:
            lo, hi = row["ci95"]
            ref = row["reference_method"] or row["reference"]
            mine = row.get("method_chosen") or row["method"]
            print(f"  {row['finding']}  {mine} vs {ref} at {row['budget']:.2f}: "
                  f"{100 * row['delta']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]")
