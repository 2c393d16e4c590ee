"""``exitgym compare``: reward shapes × α × seeds for the RL agent, plus the exit rules; report."""

from __future__ import annotations

import argparse
from dataclasses import fields

from exitgym.cli.common import add_cache_options, choice, parse_list, user_errors


def _fmt(values: tuple) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def register(sub: argparse._SubParsersAction) -> None:
    from exitgym.experiments.compare import RULE_CHOICES, CompareConfig

    d = {f.name: f.default for f in fields(CompareConfig)}
    parser = sub.add_parser(
        "compare", help="train and evaluate every reward shape, α, seed and exit rule; report",
        description="Writes summary.json, pareto.png and report.md (plus one run directory per "
                    "trained agent and every evaluation episode as Parquet) into --out.")
    add_cache_options(parser)
    parser.add_argument("--agent", default=d["agent"], help="RL agent (default: reinforce)")
    parser.add_argument("--rewards", default=_fmt(d["rewards"]),
                        help=f"comma-separated reward shapes (default: {_fmt(d['rewards'])})")
    parser.add_argument("--alphas", default=_fmt(d["alphas"]),
                        help=f"comma-separated cost weights (default: {_fmt(d['alphas'])})")
    parser.add_argument("--rules", default=_fmt(d["rules"]),
                        help=f"comma-separated rules from {', '.join(RULE_CHOICES)} "
                             f"(default: {_fmt(d['rules'])})")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    parser.add_argument("--steps", type=int, default=d["steps"],
                        help=f"updates per trained agent (default: {d['steps']})")
    parser.add_argument("--batch-size", type=int, default=d["batch_size"],
                        help="episodes per update")
    parser.add_argument("--num-envs", type=int, default=d["num_envs"], help="vector-env slots")
    parser.add_argument("--out", default=None,
                        help="output directory (default: runs/<time>-compare)")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """Validate list flags against the registries and build the :class:`CompareConfig`."""
    from exitgym.cli import CliError
    from exitgym.envs.rewards import REWARDS
    from exitgym.experiments.compare import RULE_CHOICES, CompareConfig
    from exitgym.experiments.training import AGENTS

    choice(args.agent, "--agent", [k for k, a in AGENTS.items() if a.kind == "reinforce"])
    rewards = parse_list(args.rewards, str, "--rewards", sorted(REWARDS))
    alphas = parse_list(args.alphas, float, "--alphas")
    if any(not a >= 0 for a in alphas):
        raise CliError(f"--alphas must be numbers >= 0, got {args.alphas}")
    rules = parse_list(args.rules, str, "--rules", RULE_CHOICES)
    seeds = parse_list(args.seeds, int, "--seeds")
    if args.steps < 1:
        raise CliError(f"--steps must be >= 1, got {args.steps}")
    return CompareConfig(task=args.task, backbone=args.backbone, heads=args.heads,
                         agent=args.agent, rewards=rewards, alphas=alphas, rules=rules,
                         seeds=seeds, steps=args.steps, batch_size=args.batch_size,
                         num_envs=args.num_envs, max_samples=args.max_samples,
                         max_length=args.max_length)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from exitgym.experiments.compare import compare

    with user_errors():
        config = config_from_args(args)
        out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-compare")
        result = compare(config, out)
    print_ranking(result.summary)
    print(f"report: {out / 'report.md'}")
    return 0


def print_ranking(summary: dict) -> None:
    """The AUC ranking and the reference points, one line each."""
    lo, hi = summary["auc_range"]
    print(f"AUC of accuracy over cost in [{lo:g}, {hi:g}] (higher is better):")
    ranked = sorted(summary["methods"].items(), key=lambda kv: -kv[1]["auc"])
    width = max([len(m) for m, _ in ranked] + [10])
    for method, info in ranked:
        print(f"  {method:<{width}}  AUC {info['auc']:.4f}  best accuracy "
              f"{info['best_accuracy']:.4f}  coverage {info['coverage']:.2f}")
    for method, p in summary["references"].items():
        print(f"  {method:<{width}}  accuracy {p['accuracy']:.4f} at cost {p['cost']:.3f}")
