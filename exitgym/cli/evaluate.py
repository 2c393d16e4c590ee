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

    Evaluate a complete training run greedily; writes eval-<split>.json and
    trajectories/eval-<split>.parquet.
    """

    run: str
    """Run directory written by `exitgym train`."""
    split: str = option("test", choices=SPLITS)
    """Split to evaluate."""
    num_envs: int = option(64, minimum=1)
    """Vector-env slots."""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return add_command(sub, "evaluate", run, EvaluateArgs)


def run(args: EvaluateArgs) -> int:
    from exitgym.experiments.binding import bound_cache
    from exitgym.experiments.policies import load_policy, open_training_run, run_env_spec
    from exitgym.experiments.trajectories import evaluate_and_record

    with user_errors():
        run_dir = open_training_run(args.run)
        cfg = run_dir.config["config"]
        spec = run_env_spec(run_dir).with_split(args.split)
        # Refused before anything is written when the run's data, backbone or heads changed.
        cache = bound_cache(run_dir.path, spec)
        policy = load_policy(run_dir)
        result = evaluate_and_record(policy, spec, run_dir.path, f"eval-{args.split}",
                                     method=cfg["agent"], knob=cfg.get("alpha"),
                                     seed=int(cfg["seed"]), num_envs=args.num_envs, cache=cache)
        run_dir.write_json(f"eval-{args.split}.json", result.summary())
    print(f"{args.split}: {len(result.records)} episodes, accuracy {result.accuracy:.4f}, cost "
          f"{result.mean_cost:.4f} (speed-up {result.speedup:.2f}x), mean exit layer "
          f"{result.mean_exit_layer:.2f}")
    print("exit-layer histogram: " + " ".join(
        f"L{i + 1}={n}" for i, n in enumerate(result.exit_histogram)))
    print(f"trajectories: {run_dir.file('trajectories', f'eval-{args.split}.parquet')}")
    return 0
