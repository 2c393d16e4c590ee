"""``exitgym train``: train one agent on one environment into a run directory."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from exitgym.cli import CliError, interrupt_code
from exitgym.cli.common import add_command, holds_run, previous_kept, user_errors
from exitgym.experiments.configs import TrainConfig
from exitgym.utils.configs import option

ENGINES = ("local", "rllib")
"""Where ``train`` runs: exitgym's own trainers / SB3, or Ray RLlib (``exitgym[ray]``)."""


@dataclass(frozen=True)
class TrainArgs:
    """Train an agent (REINFORCE, SB3 PPO/A2C/DQN, ...) on an environment.

    Train one agent; writes config.json, metrics (CSV + TensorBoard), checkpoints,
    policy.safetensors, a recorded test evaluation and report.md.
    """

    config: TrainConfig = field(default_factory=TrainConfig)
    """The training run."""
    out: str | None = None
    """Run directory (default: runs/<time>-<env>-<agent>-<seed>)."""
    overwrite: bool = False
    """Replace the run (or comparison) already in --out: a failed one, or one to redo."""
    resume: bool = False
    """Continue the interrupted (or stale: left running by a process that is gone) run in --out
    from its last checkpoint (its config.json is used; other flags are ignored)."""
    engine: str = option("local", choices=ENGINES)
    """local: exitgym's trainers and SB3; rllib: an RLlib algorithm on Ray (needs exitgym[ray];
    --agent ppo|appo, --steps = training iterations)."""
    num_env_runners: int = option(0, minimum=0)
    """--engine rllib: remote env runners (0: sample in the driver)."""
    address: str | None = None
    """--engine rllib: Ray cluster address to join (default: start a local Ray)."""
    num_gpus_per_env_runner: float = option(0.0, minimum=0)
    """--engine rllib: GPUs (or a share) per remote env runner (the cached envs run no torch:
    0); the learner takes a GPU when --device resolves to CUDA."""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return add_command(sub, "train", run, TrainArgs)


def interrupted(out: str | Path, steps: int, replacing: bool = False) -> str:
    """What Ctrl-C or SIGTERM left behind: the last checkpoint and the command that continues
    from it (``replacing``: an --overwrite, whose old run is left untouched)."""
    from exitgym.experiments.runs import RunDir

    if replacing:
        return previous_kept(out)
    state = RunDir(Path(out)).state
    if state.get("checkpoint"):
        return (f"interrupted: last checkpoint {Path(out) / state['checkpoint']} (update "
                f"{state.get('checkpoint_step')} of {steps}); continue with\n"
                f"  exitgym train --resume --out {out}")
    return (f"interrupted before the first checkpoint; `exitgym train --resume --out {out}` "
            f"starts it again")


def run(args: TrainArgs) -> int:
    from exitgym.experiments.runs import RunDir, default_run_dir
    from exitgym.experiments.training import train
    from exitgym.utils.configs import from_dict

    with user_errors():
        cfg = args.config
        if args.resume:
            if args.out is None:
                raise CliError("--resume needs --out DIR (the run to continue)")
            previous = RunDir.open(args.out)
            previous.refuse_if_live()
            print(f"resuming {args.out} ({previous.describe()})")
            cfg = from_dict(TrainConfig, previous.config["config"])
        cfg = cfg.with_agent_defaults(args.engine)
        out = args.out or default_run_dir(cfg.env, cfg.agent, cfg.seed)
        if args.engine == "rllib":
            if args.resume:
                raise CliError("--resume is not available with --engine rllib (RLlib "
                               "checkpoints are pickles, which exitgym never loads)")
            from exitgym.integrations.rllib import RLlibOptions, train_rllib

            result = train_rllib(cfg, out, overwrite=args.overwrite, options=RLlibOptions(
                num_env_runners=args.num_env_runners, address=args.address,
                num_gpus_per_env_runner=args.num_gpus_per_env_runner))
        else:
            replacing = args.overwrite and holds_run(out)
            try:
                result = train(cfg, out, resume=args.resume, overwrite=args.overwrite)
            except KeyboardInterrupt as err:
                print(interrupted(out, cfg.steps, replacing), file=sys.stderr)
                return interrupt_code(err)
    ev = result.eval
    print(f"run: {result.run.path}")
    print(f"{cfg.eval_split}: accuracy {ev.accuracy:.4f}, cost {ev.cost:.4f} "
          f"(speed-up {ev.speedup:.2f}x), mean exit layer {ev.mean_exit_layer:.2f}")
    print(f"report: {result.run.file('report.md')}")
    return 0
