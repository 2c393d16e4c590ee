"""``exitgym evaluate``: greedy evaluation of a trained run on a split, every episode recorded."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from exitgym.cli.common import add_command, user_errors
from exitgym.data.config import SPLITS
from exitgym.utils.configs import option


@dataclass(frozen=True)
class EvaluateArgs:
    """Evaluate a trained run on a split.

    Evaluate a complete training run greedily (or at an operating point: --budget, --tau);
    writes eval-<split>[-b<budget>|-t<tau>].json and trajectories/ of the same name.
    """

    run: str
    """Run directory written by `exitgym train`."""
    split: str = option("test", choices=SPLITS)
    """Split to evaluate."""
    num_envs: int = option(64, minimum=1)
    """Vector-env slots."""
    budget: float | None = option(None, minimum=0)
    """Evaluate the exit policy's reading chosen on validation for this FLOPs budget (recorded
    in the run's operating_points.json) instead of its greedy reading."""
    tau: float | None = option(None, minimum=0)
    """Evaluate the exit policy read at this threshold on P(exit) (0.5: greedy)."""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return add_command(sub, "evaluate", run, EvaluateArgs)


def run(args: EvaluateArgs) -> int:
    from exitgym.experiments.binding import bound_cache
    from exitgym.experiments.policies import load_policy, open_training_run, run_env_spec
    from exitgym.experiments.runs import TRAJECTORY_DIR
    from exitgym.experiments.trajectories import evaluate_and_record

    with user_errors():
        run_dir = open_training_run(args.run)
        cfg = run_dir.config["config"]
        spec = run_env_spec(run_dir).with_split(args.split)
        # Refused before anything is written when the run's data, backbone or heads changed.
        cache = bound_cache(run_dir.path, spec)
        name, point = f"eval-{args.split}", {}
        if args.budget is not None or args.tau is not None:
            from exitgym.experiments.operating import operating_point

            chosen = operating_point(run_dir.path, budget=args.budget, tau=args.tau,
                                     num_envs=args.num_envs)
            policy, point = chosen.policy, chosen.record
            name += f"-b{args.budget:g}" if args.budget is not None else f"-t{args.tau:g}"
        else:
            policy = load_policy(run_dir)
        result = evaluate_and_record(policy, spec, run_dir.path, name,
                                     method=cfg["agent"], knob=cfg.get("alpha"),
                                     seed=int(cfg["seed"]), num_envs=args.num_envs, cache=cache,
                                     meta={"operating_point": point} if point else None)
        summary = result.summary()
        if point:  # a reading of the policy: say which (the greedy reading writes as before)
            summary["operating_point"] = point
        run_dir.write_json(f"{name}.json", summary)  # the manifest records it, and:
        run_dir.add_to_manifest(f"{TRAJECTORY_DIR}/{name}.parquet")
    print(f"{args.split}: {len(result.records)} episodes, accuracy {result.accuracy:.4f}, cost "
          f"{result.cost:.4f} (speed-up {result.speedup:.2f}x), mean exit layer "
          f"{result.mean_exit_layer:.2f}")
    print("exit-layer histogram: " + " ".join(
        f"L{i + 1}={n}" for i, n in enumerate(result.exit_histogram)))
    if point:
        print(f"operating point: {point}")
    print(f"trajectories: {run_dir.file('trajectories', f'{name}.parquet')}")
    return 0
