"""``exitgym evaluate``: greedy evaluation of a trained run on a split, every episode recorded."""

from __future__ import annotations

import argparse

from exitgym.cli.common import user_errors


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="evaluate a trained run on a split",
                            description="Evaluate a complete training run greedily; writes "
                                        "eval-<split>.json and trajectories/eval-<split>.parquet.")
    parser.add_argument("run", help="run directory written by `exitgym train`")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"),
                        help="split to evaluate (default: test)")
    parser.add_argument("--num-envs", type=int, default=64, help="vector-env slots")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from exitgym.experiments.runs import RunDir
    from exitgym.experiments.training import evaluate_and_record, load_policy, run_env_spec

    with user_errors():
        run_dir = RunDir.open(args.run).require_complete()
        cfg = run_dir.config["config"]
        policy = load_policy(run_dir)
        spec = run_env_spec(run_dir).with_split(args.split)
        result = evaluate_and_record(policy, spec, run_dir.path, f"eval-{args.split}",
                                     method=cfg["agent"], knob=cfg.get("alpha"),
                                     seed=int(cfg["seed"]), num_envs=args.num_envs)
        run_dir.write_json(f"eval-{args.split}.json", result.summary())
    print(f"{args.split}: {len(result.records)} episodes, accuracy {result.accuracy:.4f}, cost "
          f"{result.mean_cost:.4f} (speed-up {result.speedup:.2f}x), mean exit layer "
          f"{result.mean_exit_layer:.2f}")
    print("exit-layer histogram: " + " ".join(
        f"L{i + 1}={n}" for i, n in enumerate(result.exit_histogram)))
    print(f"trajectories: {run_dir.file('trajectories', f'eval-{args.split}.parquet')}")
    return 0
