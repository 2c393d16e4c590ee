"""``exitgym train``: train one agent on one environment into a run directory."""

from __future__ import annotations

import argparse
from dataclasses import fields

from exitgym.cli import CliError
from exitgym.cli.common import add_cache_options, choice, user_errors


def register(sub: argparse._SubParsersAction) -> None:
    from exitgym.experiments.training import AGENTS, TrainConfig

    d = {f.name: f.default for f in fields(TrainConfig)}
    parser = sub.add_parser(
        "train", help="train an agent (REINFORCE, SB3 PPO/A2C/DQN, ...) on an environment",
        description="Train one agent; writes config.json, metrics (CSV + TensorBoard), "
                    "checkpoints, policy.safetensors, a recorded test evaluation and report.md.")
    parser.add_argument("--env", default=d["env"], help=f"environment id (default: {d['env']}; "
                        "see `exitgym envs`)")
    parser.add_argument("--agent", default=d["agent"],
                        help="; ".join(f"{k}: {a.description}" for k, a in AGENTS.items()))
    parser.add_argument("--reward", default=d["reward"], help="reward shape (default: hardness)")
    parser.add_argument("--alpha", type=float, default=d["alpha"],
                        help="cost weight α (default: the reward's default)")
    parser.add_argument("--seed", type=int, default=d["seed"], help="seed (default: 0)")
    parser.add_argument("--out", default=None,
                        help="run directory (default: runs/<time>-<env>-<agent>-<seed>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run in --out from its last checkpoint "
                             "(its config.json is used; other flags are ignored)")
    add_cache_options(parser)
    parser.add_argument("--observation", default=d["observation"],
                        help="observation view, e.g. features, logits, hidden+prev")
    parser.add_argument("--dense", action="store_true", help="dense reward delivery")
    parser.add_argument("--steps", type=int, default=d["steps"],
                        help="REINFORCE updates, or SB3 env timesteps (default: 300)")
    parser.add_argument("--batch-size", type=int, default=d["batch_size"],
                        help="episodes per REINFORCE update (default: 64)")
    parser.add_argument("--num-envs", type=int, default=d["num_envs"],
                        help="vector-env slots (default: 64)")
    parser.add_argument("--lr", type=float, default=d["lr"], help="learning rate")
    parser.add_argument("--baseline", default=d["baseline"], help="REINFORCE baseline")
    parser.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"],
                        help="updates between checkpoints (default: 50)")
    parser.add_argument("--eval-split", default=d["eval_split"],
                        choices=("train", "validation", "test"), help="split evaluated at the end")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """Validate the flags and build the :class:`TrainConfig` (errors name the flag)."""
    from exitgym.envs.rewards import REWARDS
    from exitgym.experiments.training import AGENTS, TrainConfig
    from exitgym.registration import ENVS

    choice(args.env, "--env", [e.id for e in ENVS])
    choice(args.agent, "--agent", list(AGENTS))
    choice(args.reward, "--reward", list(REWARDS))
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size),
                        ("--num-envs", args.num_envs), ("--checkpoint-every",
                                                        args.checkpoint_every)):
        if value < 1:
            raise CliError(f"{flag} must be >= 1, got {value}")
    if args.alpha is not None and not args.alpha >= 0:
        raise CliError(f"--alpha must be a number >= 0, got {args.alpha}")
    return TrainConfig(env=args.env, agent=args.agent, task=args.task, backbone=args.backbone,
                       heads=args.heads, reward=args.reward, alpha=args.alpha,
                       observation=args.observation, dense=args.dense, seed=args.seed,
                       steps=args.steps, batch_size=args.batch_size, num_envs=args.num_envs,
                       lr=args.lr, baseline=args.baseline, checkpoint_every=args.checkpoint_every,
                       eval_split=args.eval_split, max_samples=args.max_samples,
                       max_length=args.max_length)


def run(args: argparse.Namespace) -> int:
    from exitgym.experiments.runs import RunDir, default_run_dir
    from exitgym.experiments.training import TrainConfig, train

    with user_errors():
        if args.resume:
            if args.out is None:
                raise CliError("--resume needs --out DIR (the run to continue)")
            cfg = TrainConfig(**RunDir.open(args.out).config["config"])
        else:
            cfg = config_from_args(args)
        out = args.out or default_run_dir(cfg.env, cfg.agent, cfg.seed)
        result = train(cfg, out, resume=args.resume)
    ev = result.eval
    print(f"run: {result.run.path}")
    print(f"{cfg.eval_split}: accuracy {ev.accuracy:.4f}, cost {ev.mean_cost:.4f} "
          f"(speed-up {ev.speedup:.2f}x), mean exit layer {ev.mean_exit_layer:.2f}")
    print(f"report: {result.run.file('report.md')}")
    return 0
