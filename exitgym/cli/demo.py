"""``exitgym demo``: the main job on the embedded default, end to end.

1. prepare ``rt-polarity`` × ``minilm-l6`` (frozen backbone, one linear exit head per layer) and
   its per-layer caches — once; later runs reuse the cache;
2. train REINFORCE (self-critical) with the ``hardness`` and ``vanilla`` rewards over a few α on
   the train split, with the native vector env;
3. sweep the exit rules (entropy, patience, max-probability, PALBERT Q-exit, oracle) on test;
4. write ``summary.json``, ``pareto.png`` and ``report.md``;
5. ``replay --verify`` every recorded test episode (thousands) against a fresh environment;
6. print the ranking and where the report is.

Budget: under 10 minutes on a 2-core CPU including the first prepare.
"""

from __future__ import annotations

import argparse
import time

DEMO_ALPHAS = (0.01, 0.02, 0.05, 0.1, 0.2)
"""Cost weights of the demo. On rt-polarity the heads' cross-entropy changes by only a few
hundredths of a nat across layers, so every α >= 0.2 already exits at layer 1 (measured); this
grid spreads the agents' operating points over the whole cost range."""
DEMO_STEPS = 200
"""REINFORCE updates per agent (64 episodes each)."""
DEMO_RULES = ("entropy", "patience", "maxprob", "qexit", "oracle")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="run the main job on the embedded default (~minutes)",
                            description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None,
                        help="output directory (default: runs/<time>-demo)")
    parser.add_argument("--task", default="rt-polarity", help="task (default: rt-polarity)")
    parser.add_argument("--backbone", default="minilm-l6", help="backbone (default: minilm-l6)")
    parser.add_argument("--alphas", default=",".join(f"{a:g}" for a in DEMO_ALPHAS),
                        help="comma-separated cost weights α of the RL agents")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    parser.add_argument("--steps", type=int, default=DEMO_STEPS,
                        help=f"REINFORCE updates per agent (default: {DEMO_STEPS})")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="first n rows of every split (a quicker, rougher demo)")
    parser.add_argument("--no-verify", action="store_true", help="skip replay --verify")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from exitgym.cli.common import parse_list, user_errors
    from exitgym.cli.compare import print_ranking
    from exitgym.data.prepare import prepare
    from exitgym.experiments.compare import CompareConfig, compare
    from exitgym.experiments.replay import verify
    from exitgym.experiments.trajectories import trajectory_files
    from exitgym.reports.comparison import report_markdown
    from exitgym.utils.atomic import atomic_write_text

    start = time.perf_counter()
    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-demo")
    with user_errors():
        alphas = parse_list(args.alphas, float, "--alphas")
        seeds = parse_list(args.seeds, int, "--seeds")
        print(f"[1/4] prepare {args.task} x {args.backbone} (frozen heads; reused when cached)")
        options = {} if args.max_samples is None else {"max_samples": args.max_samples}
        prepared = prepare(task=args.task, backbone=args.backbone, heads="frozen", **options)
        t_prepare = time.perf_counter() - start
        config = CompareConfig(task=args.task, backbone=args.backbone, rewards=("hardness",
                               "vanilla"), alphas=alphas, rules=DEMO_RULES, seeds=seeds,
                               steps=args.steps, max_samples=args.max_samples)
        print(f"[2/4] train REINFORCE x {len(config.rewards)} rewards x {len(alphas)} alphas x "
              f"{len(seeds)} seeds, sweep {', '.join(DEMO_RULES)}, write the report")
        result = compare(config, out)
        t_compare = time.perf_counter() - start - t_prepare
        sections = []
        if not args.no_verify:
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
        title = (f"exitgym demo: {args.task} x {args.backbone}, REINFORCE (hardness / vanilla "
                 f"rewards) vs exit rules")
        atomic_write_text(out / "report.md", report_markdown(result.summary, title, "pareto.png",
                                                      sections))
    print("[4/4] done")
    print_ranking(result.summary)
    print(f"total wall time {total:.1f} s")
    print(f"report: {out / 'report.md'}  (plot: {out / 'pareto.png'})")
    return 0
