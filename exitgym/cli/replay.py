"""``exitgym replay``: analyse recorded episodes, or ``--verify`` them against their environment."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from exitgym.cli.common import add_command, user_errors


@dataclass(frozen=True)
class ReplayArgs:
    """Analyse or --verify the recorded episodes of a run.

    Without --verify: exit-layer histograms by label and memorized layer, accuracy per exit
    layer, cost distribution, easiest and hardest inputs. With --verify: re-execute every
    recorded episode and fail on any difference.
    """

    run: str
    """Run or compare directory, or one .parquet trajectory file."""
    verify: bool = False
    """Check every file against the run's manifest (sha256 written when it completed), then
    re-execute every episode; exit 1 naming the file, or the episode, step and field, at the
    first difference."""
    policy: bool = False
    """With --verify: also re-run each training run's saved policy on its recorded episodes and
    check it takes the recorded actions (rules and baselines: recorded actions only)."""
    select: str | None = None
    """Only trajectory files whose path contains this text."""
    top: int = 5
    """Easiest / hardest inputs to show."""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return add_command(sub, "replay", run, ReplayArgs)


def run(args: ReplayArgs) -> int:
    import sys

    from exitgym.cli import CliError
    from exitgym.experiments.manifests import ManifestMismatch, verify_manifest
    from exitgym.experiments.replay import ReplayMismatch, analyze_file, format_analysis, verify
    from exitgym.experiments.trajectories import load_trajectories, trajectory_files

    with user_errors():
        files = trajectory_files(args.run)
        if args.select:
            files = [f for f in files if args.select in str(f)]
        if not files:
            raise CliError(f"no trajectory files under {args.run}"
                           + (f" matching --select {args.select!r}" if args.select else ""))
        if args.verify:
            try:
                print(verify_manifest(args.run))
                report = verify(files, progress=True, policy=args.policy)
            except (ManifestMismatch, ReplayMismatch) as err:
                print(f"exitgym replay: FAILED: {err}", file=sys.stderr)
                return 1
            print(f"verified {report.episodes} episodes ({report.steps} steps) in "
                  f"{len(report.files)} trajectory files: every reward, exit layer, prediction "
                  f"and cost matches, and every input text its source data")
            if args.policy:
                print(f"the saved policy took every recorded action in "
                      f"{len(report.policy_files)} of {len(report.files)} files (the others "
                      f"were recorded by rules or baselines, which have no saved policy)")
            return 0
        if args.policy:
            raise CliError("--policy re-runs the saved policy during --verify; add --verify")
        if len(files) > 1:
            print(f"{len(files)} trajectory files (analysing the first; use --select to pick):")
            for f in files:
                ts = load_trajectories(f)
                acc = sum(r.correct for r in ts.records) / len(ts.records)
                cost = sum(r.cost for r in ts.records) / len(ts.records)
                print(f"  {f}: {len(ts.records)} episodes, accuracy {acc:.4f}, cost {cost:.3f}")
            print()
        print(format_analysis(analyze_file(files[0], k=args.top), title=str(files[0])))
    return 0
