"""``exitgym demo``: the main job on the embedded default, end to end.

1. prepare ``rt-polarity`` × ``minilm-l6`` with the default exit-head recipe and its per-layer
   caches — once; later runs reuse the cache;
2. train REINFORCE (self-critical) with the ``hardness`` and ``vanilla`` rewards on the train
   split, budget-targeted (one agent per target cost, α adapted during training; ``--targets``
   empty trains per α instead), with the native vector env; REINFORCE-vanilla at fixed α and
   the lexicographic agents (one per allowed quality drop) for the lexicographic-vs-fixed-λ
   finding; ConsistentEE's full schedule (one per target cost, its own heads saved with it);
   one cost-conditioned REINFORCE policy per seed; every trained policy is then read as a curve
   (thresholds τ on its exit probability, ``experiments.readings``);
3. sweep the exit rules (entropy, patience, max-probability, PALBERT Q-exit, BERxiT, static
   truncation, random exit, oracle); every method is evaluated on validation (knob selection) and
   on test (reported), over 3 seeds;
4. write ``summary.json`` (with the validation-selected budget table), ``pareto.png`` and
   ``report.md``;
5. ``replay --verify`` every recorded test episode (thousands) against a fresh environment;
6. print the ranking and where the report is.

Budget: 10 minutes on a 2-core CPU including the first prepare; measured 2026-12-04 with the
cache prepared, 641 s (readings 386 s with training, replay-verify of 751 files 245 s), so an
empty cache (about 300 s of prepare) now exceeds it.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field, replace
from typing import Any

from exitgym.cli.common import add_command
from exitgym.data.config import DataConfig
from exitgym.utils.configs import option

DEMO_ALPHAS = (0.01, 0.02, 0.05, 0.1, 0.2)
"""Cost weights of the demo. On rt-polarity the heads' cross-entropy changes by only a few
hundredths of a nat across layers, so every α >= 0.2 already exits at layer 1 (measured); this
grid spreads the agents' operating points over the whole cost range."""
DEMO_TARGETS = (0.28, 0.48, 0.68)
"""Target costs of the budget-targeted agents (PID multiplier). Three, not six: every agent is
now read as a curve over its threshold τ (``experiments.readings``), so one agent covers the
budgets around its target, and the time goes to the readings and the cost-conditioned agents."""
DEMO_DROPS = (0.02, 0.05, 0.1)
"""Allowed quality drops (nats of cross-entropy above full depth's) of the lexicographic agents:
with its plain step at γ = 0.1 drops of 0.02-0.15 traced validation costs of about 0.25-0.70 on
rt-polarity and 0.28-0.68 on trec6 (two-stage heads, seed 0, measured); each is read as a
curve over τ, so three of them cover the budgets."""
DEMO_FIXED_ALPHAS = (0.1, 0.17, 0.22)
"""Fixed-α REINFORCE-vanilla agents: the fixed-λ arm that the lexicographic agents are compared
with (finding 4: the same ``−CE − α·cost`` objective, α fixed instead of adapted). Calibrated on
rt-polarity's held-out policy split (two-stage heads, 200 updates, seed 0, validation cost):
α = 0.1 ran to 0.98, 0.2 to 0.41, 0.25 already exited everything at layer 1 (0.17)."""
DEMO_CONSISTENTEE = (0.38, 0.68)
"""Target costs of the ConsistentEE agents (full schedule, budget-targeted policy phases): two,
not six, to keep the demo within its 10 minutes (a cold demo with six lexicographic drops and
three ConsistentEE targets took 595 s, measured)."""
DEMO_CONDITIONED = ("hardness",)
"""Rewards of the cost-conditioned REINFORCE agents (one policy for every budget, α an input,
read at 12 α × 4 τ)."""
DEMO_STEPS = 200
"""REINFORCE updates per agent (64 episodes each)."""
DEMO_SEEDS = (0, 1, 2)
"""Seeds of every trained method (learned agents, Q-exit, BERxiT, random exit)."""
DEMO_RULES = ("entropy", "patience", "maxprob", "qexit", "palbert-sample", "berxit", "static",
              "random", "oracle")
SKIP_DATA: dict[str, object] = {"heads": "joint", "skip_prob": 0.15, "max_length": 64}
"""``demo --skip``'s heads: the skip-tolerant joint recipe the skip environments default to
(``exitgym.envs.skip_core.DEFAULT_PREPARE_OPTIONS``), so skips hurt less and the exit references
run on the very same backbone and heads."""
SKIP_TARGETS = (0.5, 0.7, 0.9)
"""``demo --skip``'s budget-targeted REINFORCE-vanilla agents (α adapted until the mean cost meets
the target): at a fixed α the skip policies collapsed to near-full depth (α = 0.25) or to
skipping every block (α >= 0.5) on rt-polarity, while the targeted ones reached the middle
budgets (``results/rt-polarity-skipblock.json``, ``results/rt-polarity-switchable.json``)."""
SKIP_FIXED_ALPHAS = (0.25,)
"""``demo --skip``'s fixed-α REINFORCE-vanilla arm (the lexicographic finding's reference)."""
SKIP_DROPS = (0.05,)
"""``demo --skip``'s allowed drops of the lexicographic agents (Switchable Decision's setting)."""
SKIP_STEPS, SKIP_BATCH = 100, 32
"""``demo --skip``'s REINFORCE updates per agent and episodes per update: every episode runs the
backbone live (about 80 inputs/s on one core), so 100 × 32 (+ the greedy baseline) is about 40 s
of training per agent."""
SKIP_BUDGETS = (0.5, 0.6, 0.7, 0.8, 0.9)
"""Budgets of the skip comparison (issue 26)."""


@dataclass(frozen=True)
class DemoArgs:
    """Run the main job on the embedded default (~minutes).

    Prepare the cache, train REINFORCE over the α grid with the hardness and vanilla rewards,
    sweep the exit rules, write the report and replay --verify every recorded episode.
    """

    data: DataConfig = field(default_factory=DataConfig)
    """The prepared cache of the demo (prepared first, reused when cached)."""
    targets: tuple[float, ...] = option(DEMO_TARGETS, minimum=0)
    """Target costs of the budget-targeted RL agents (empty: train per α instead)."""
    alphas: tuple[float, ...] = option(DEMO_ALPHAS, minimum=0)
    """Cost weights α of the RL agents when --targets is empty."""
    drops: tuple[float, ...] = option(DEMO_DROPS, minimum=0)
    """Allowed quality drops of the lexicographic agents (empty: none)."""
    fixed_alphas: tuple[float, ...] = option(DEMO_FIXED_ALPHAS, minimum=0)
    """Fixed α of the REINFORCE-vanilla agents compared with lexicographic (with --targets)."""
    consistentee: tuple[float, ...] = option(DEMO_CONSISTENTEE, minimum=0)
    """Target costs of the ConsistentEE agents (empty: none)."""
    conditioned: tuple[str, ...] = DEMO_CONDITIONED
    """Rewards of the cost-conditioned REINFORCE agents (empty: none)."""
    seeds: tuple[int, ...] = DEMO_SEEDS
    """Seeds of every trained method (the budget table reports mean ± std over them)."""
    steps: int = option(DEMO_STEPS, minimum=1)
    """REINFORCE updates per agent (64 episodes each)."""
    out: str | None = None
    """Output directory (default: runs/<time>-demo)."""
    overwrite: bool = False
    """Replace the run (or comparison) already in --out once the new one is complete: a failed
    one, or one to redo."""
    resume: bool = False
    """Continue the unfinished demo in --out (refused when there is none); the same command
    without it continues one too (finished agents are skipped)."""
    verify: bool = True
    """Replay --verify every recorded episode (--no-verify skips it)."""
    generation: bool = False
    """Run the generation comparison instead: token-level early exit on the embedded decoder
    ``smollm2-135m`` (``exitgym.experiments.generation_compare``; --seeds, --out and
    --overwrite apply)."""
    skip: str | None = option(None, choices=("exitgym/SkipBlock-v0",
                                             "exitgym/SwitchableDecision-v0"))
    """Run the skip comparison on this environment instead (``compare --env``: budget-targeted
    and fixed-α REINFORCE-vanilla, lexicographic, static skip patterns, every other layer,
    random skipping, and the exit rules on the same skip-tolerant joint heads; --seeds, --out,
    --overwrite and --resume apply)."""
    generation_heads: str = option("distilled", choices=("lm-head", "distilled", "trained"))
    """Exit heads of --generation: per-layer maps distilled to the last layer (prepared once on
    the task's train texts; they raise the validation agreement of every intermediate layer,
    measured), per-layer low-rank adapters trained for the frozen decoder (prepared once), or
    the model's own LM head at every layer."""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return add_command(sub, "demo", run, DemoArgs)


def run(args: DemoArgs) -> int:
    import sys
    from dataclasses import asdict
    from pathlib import Path

    from exitgym.cli import interrupt_code
    from exitgym.cli.common import comparison_interrupted, holds_run, user_errors
    from exitgym.cli.compare import print_ranking
    from exitgym.data.prepare import PrepareConfig, prepare
    from exitgym.experiments.compare import compare, train_jobs
    from exitgym.experiments.replay import verify
    from exitgym.experiments.runs import RunDir
    from exitgym.experiments.trajectories import trajectory_files
    from exitgym.reports.comparison import report_markdown

    if args.generation:
        from exitgym.cli import CliError
        from exitgym.cli.demo_generation import run_generation

        if args.resume:
            raise CliError("--resume continues an unfinished classification demo; demo "
                           "--generation has none to continue (run it again, --overwrite to "
                           "replace a finished one)")
        return run_generation(args)
    start = time.perf_counter()
    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-demo")
    data = replace(args.data, **SKIP_DATA) if args.skip else args.data
    with user_errors():
        print(f"[1/4] prepare {data.task} x {data.backbone} ({data.heads} heads; reused when "
              f"cached)")
        prepared = prepare(PrepareConfig(**asdict(data)))
        t_prepare = time.perf_counter() - start
        config = _config(args, data)
        print(f"[2/4] {_plan(config)}; write the report")
        replacing = args.overwrite and holds_run(out)
        try:
            result = compare(config, out, overwrite=args.overwrite, resume=args.resume)
        except KeyboardInterrupt as err:
            print(comparison_interrupted(out, len(train_jobs(config)), replacing),
                  file=sys.stderr)
            return interrupt_code(err)
        t_compare = time.perf_counter() - start - t_prepare
        sections = []
        if args.verify:
            print("[3/4] replay --verify every recorded episode")
            tic = time.perf_counter()
            report = verify(trajectory_files(out), progress=True)
            t_verify = time.perf_counter() - tic
            sections.append(
                f"## Replay verification\n\n`exitgym replay {out} --verify` re-executed "
                f"{report.episodes} recorded episodes ({report.steps} steps, "
                f"{len(report.files)} files) through fresh environments: every reward, exit "
                f"layer, prediction and cost matched ({t_verify:.1f} s).")
        total = time.perf_counter() - start
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in prepared.timings.items())
        timing = (f"## Wall time\n\nprepare {t_prepare:.1f} s ({phases}; near zero when the "
                  f"cache already existed), train + rules + report {t_compare:.1f} s, total "
                  f"{total:.1f} s on this machine.")
        sections.append(timing)
        title = (f"exitgym demo: {data.task} x {data.backbone}, REINFORCE (hardness / vanilla "
                 f"rewards), lexicographic, ConsistentEE vs exit rules")
        if args.skip:
            title = (f"exitgym demo --skip {args.skip}: {data.task} x {data.backbone}, learned "
                     f"skipping vs static patterns, random skipping and exiting")
        # through the run, so its manifest records the new report
        RunDir(out).write_text("report.md", report_markdown(result.summary, title, "pareto.png",
                                                            sections))
    print("[4/4] done")
    print_ranking(result.summary)
    print(f"total wall time {total:.1f} s")
    print(f"report: {out / 'report.md'}  (plot: {out / 'pareto.png'})")
    return 0


def _config(args: DemoArgs, data: DataConfig) -> Any:
    """The comparison the demo runs: the exit demo, or with ``--skip`` the skip one."""
    from exitgym.experiments.configs import CompareConfig

    if args.skip:
        return CompareConfig(env=args.skip, data=data, rewards=("vanilla",), targets=SKIP_TARGETS,
                             fixed_alphas=SKIP_FIXED_ALPHAS, drops=SKIP_DROPS,
                             seeds=args.seeds, steps=SKIP_STEPS,
                             batch_size=SKIP_BATCH, num_envs=SKIP_BATCH, budgets=SKIP_BUDGETS)
    return CompareConfig(data=data, rewards=("hardness", "vanilla"), alphas=args.alphas,
                         targets=args.targets, fixed_alphas=args.fixed_alphas, drops=args.drops,
                         consistentee=args.consistentee, conditioned=args.conditioned,
                         rules=DEMO_RULES, seeds=args.seeds, steps=args.steps)


def _plan(config: Any) -> str:
    """One line saying what the comparison trains and sweeps."""
    seeds = len(config.seeds)
    if config.env != "exitgym/EarlyExit-v0":
        return (f"{config.env}: train REINFORCE-vanilla x {len(config.targets)} target costs "
                f"(+ {len(config.fixed_alphas)} fixed α), "
                f"lexicographic x {len(config.drops)} drops, each x {seeds} seeds; search static "
                f"skip patterns on {config.selection_split}; sweep every-other-layer and random "
                f"skipping and the exit rules {', '.join(config.rules)} (same heads)")
    knobs = "target costs" if config.targets else "alphas"
    return (f"train REINFORCE x {len(config.rewards)} rewards x {len(config.agent_knobs)} "
            f"{knobs} (+ {len(config.fixed_alphas)} fixed α, {len(config.conditioned)} "
            f"cost-conditioned), lexicographic x {len(config.drops)} drops, ConsistentEE x "
            f"{len(config.consistentee)} targets, each x {seeds} seeds; sweep "
            f"{', '.join(config.rules)}")
