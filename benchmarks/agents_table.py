"""Accuracy / FLOPs table of every exit method on a prepared task (default rt-polarity, minilm-l6).

Trains the learned methods on the train split's cache, evaluates everything greedily on another
split with the shared :func:`exitgym.agents.evaluate`, and writes:

- ``<out>/points.json``: every (method, knob, seed) point: accuracy, cost fraction, exit layer;
- ``<out>/table.md``: per method its best accuracy within cost budgets, the Pareto front, and
  whether REINFORCE (hardness reward) beats the entropy / patience / max-prob rules at >= 30 %
  FLOPs saved.

Costs are FLOPs fractions with overheads (exit heads; the REINFORCE policy's own FLOPs are charged
through ``policy_flops``; the rules' few arithmetic operations are not).

    python benchmarks/agents_table.py --seeds 0 1 2 --alphas 0.05 0.1 0.2 0.4 --updates 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

import exitgym  # noqa: F401  (registers the envs)
from exitgym.agents import evaluate
from exitgym.agents.berxit import Berxit, BerxitConfig
from exitgym.agents.palbert import Palbert, PalbertConfig
from exitgym.agents.reinforce import Reinforce, ReinforceConfig
from exitgym.agents.rules import EntropyExit, MaxProbExit, OracleExit, PatienceExit, StaticExit
from exitgym.utils.atomic import atomic_write_text

RULE_NAMES = ("entropy", "patience", "maxprob")
BUDGETS = (0.7, 0.6, 0.5, 0.4)


def make_env(cache: Any, observation: str, num_envs: int = 256, **kw: Any) -> Any:
    return gym.make_vec("exitgym/EarlyExit-v0", num_envs=num_envs, cache=cache,
                        observation=observation, vectorization_mode="vector_entry_point", **kw)


def point(method: str, knob: Any, res: Any, **extra: Any) -> dict[str, Any]:
    return {"method": method, "knob": knob, "accuracy": res.accuracy, "cost": res.cost,
            "exit_layer": res.mean_exit_layer, **extra}


def run_rules(train: Any, test: Any) -> list[dict[str, Any]]:
    env = make_env(test, "features+logits")
    out = [point("full-depth", test.num_layers, evaluate(StaticExit(test.num_layers), env)),
           point("oracle", None, evaluate(OracleExit(test), env))]
    for rule in (StaticExit(), EntropyExit(), MaxProbExit(), PatienceExit()):
        for r in rule.sweep(test.num_layers):
            out.append(point(r.name, getattr(r, r.knob), evaluate(r, env)))
    lte = Berxit.fit(train, BerxitConfig(seed=0))
    for theta in lte.default_grid(test.num_layers):
        out.append(point("berxit", theta, evaluate(lte.with_knob(theta), env)))
    pal = Palbert.fit(train, PalbertConfig(seed=0))
    env_h = make_env(test, "features+hidden+prev")
    for q in pal.default_grid(test.num_layers):
        out.append(point("palbert", q, evaluate(pal.with_knob(q), env_h)))
    return out


def run_reinforce(train: Any, test: Any, reward: str, alphas: list[float], seeds: list[int],
                  updates: int, baseline: str) -> list[dict[str, Any]]:
    out = []
    probe = Reinforce(make_env(train, "features", 8), ReinforceConfig())
    flops = probe.policy.policy_flops
    for alpha in alphas:
        for seed in seeds:
            t0 = time.perf_counter()
            env = make_env(train, "features", reward=reward, alpha=alpha, policy_flops=flops)
            cfg = ReinforceConfig(baseline=baseline, batch_size=256, lr=3e-3, seed=seed)
            agent = Reinforce(env, cfg).learn(updates)
            res = evaluate(agent.policy, make_env(test, "features", reward=reward, alpha=alpha,
                                                  policy_flops=flops))
            out.append(point(f"reinforce-{reward}", alpha, res, seed=seed,
                             train_s=round(time.perf_counter() - t0, 1)))
            print(f"  {reward} alpha={alpha} seed={seed}: acc={res.accuracy:.4f} "
                  f"cost={res.cost:.3f} ({out[-1]['train_s']} s)", flush=True)
    return out


def best_within(points: list[dict[str, Any]], budget: float) -> dict[str, Any] | None:
    """Most accurate point whose cost fraction is at most ``budget``."""
    ok = [p for p in points if p["cost"] <= budget]
    return max(ok, key=lambda p: p["accuracy"]) if ok else None


def pareto(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points no other point beats on both accuracy (>=) and cost (<=), by increasing cost."""
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (p["cost"], -p["accuracy"])):
        if p["accuracy"] > best:
            front.append(p)
            best = p["accuracy"]
    return front


def dominance(points: list[dict[str, Any]], learned: str) -> list[str]:
    """Learned points at >= 30 % saved that beat every rule's best at the same or higher cost."""
    lines = []
    by = {m: [p for p in points if p["method"] == m] for m in {p["method"] for p in points}}
    for p in sorted(by.get(learned, []), key=lambda p: p["cost"]):
        if p["cost"] > 0.7:
            continue
        rivals = {m: best_within(by[m], p["cost"]) for m in RULE_NAMES if m in by}
        beaten = all(r is None or p["accuracy"] > r["accuracy"] for r in rivals.values())
        detail = ", ".join(f"{m} {r['accuracy']:.4f}" if r else f"{m} -" for m, r in
                           rivals.items())
        lines.append(f"| {p['knob']} | {p.get('seed', '')} | {p['accuracy']:.4f} | "
                     f"{p['cost']:.3f} | {detail} | {'yes' if beaten else 'no'} |")
    return lines


def table(points: list[dict[str, Any]], header: str) -> str:
    methods = list(dict.fromkeys(p["method"] for p in points))
    md = [header, "", "## Best accuracy within a FLOPs budget (cost fraction <= budget)", "",
          "| method | " + " | ".join(f"<= {b:.0%}" for b in BUDGETS) + " |",
          "|---" * (len(BUDGETS) + 1) + "|"]
    for m in methods:
        cells = []
        for b in BUDGETS:
            p = best_within([q for q in points if q["method"] == m], b)
            cells.append(f"{p['accuracy']:.4f} @ {p['cost']:.3f}" if p else "-")
        md.append(f"| {m} | " + " | ".join(cells) + " |")
    md += ["", "## Pareto fronts (accuracy @ cost, knob)", ""]
    for m in methods:
        front = pareto([q for q in points if q["method"] == m])
        md.append(f"- **{m}**: " + "; ".join(
            f"{p['accuracy']:.4f} @ {p['cost']:.3f} ({p['knob']}"
            + (f", seed {p['seed']}" if "seed" in p else "") + ")" for p in front))
    for learned in [m for m in methods if m.startswith("reinforce")]:
        md += ["", f"## Does {learned} beat the entropy / patience / max-prob rules at >= 30 % "
               "FLOPs saved?", "",
               "| alpha | seed | accuracy | cost | best rule accuracy at <= that cost "
               "| beats all |",
               "|---|---|---|---|---|---|", *dominance(points, learned)]
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="rt-polarity")
    ap.add_argument("--backbone", default="minilm-l6")
    ap.add_argument("--heads", default="frozen")
    ap.add_argument("--eval-split", default="test", choices=["validation", "test"])
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4, 0.8])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--baseline", default="self-critical")
    ap.add_argument("--rewards", nargs="+", default=["hardness"])
    ap.add_argument("--out", type=Path, default=Path("runs/agents_table"))
    ap.add_argument("--cache-dirs", type=Path, nargs=2, metavar=("TRAIN", "EVAL"),
                    help="load these stored cache folders directly instead of get_cache()")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.cache_dirs:
        from exitgym.backbones.cache import load_cache

        train, test = (load_cache(p, verify=True) for p in args.cache_dirs)
    else:
        from exitgym.data.prepare import get_cache

        train = get_cache(task=args.task, backbone=args.backbone, split="train", heads=args.heads)
        test = get_cache(task=args.task, backbone=args.backbone, split=args.eval_split,
                         heads=args.heads)
    print(f"train {train.num_samples} samples, {args.eval_split} {test.num_samples}", flush=True)
    points = run_rules(train, test)
    for reward in args.rewards:
        points += run_reinforce(train, test, reward, args.alphas, args.seeds, args.updates,
                                args.baseline)
    atomic_write_text(args.out / "points.json", json.dumps(points, indent=1))
    header = (f"# Exit methods on {args.task} / {args.backbone} ({args.heads} heads), evaluated "
              f"on {args.eval_split} ({test.num_samples} samples); learned methods trained on "
              f"train ({train.num_samples}); REINFORCE: {args.baseline} baseline, "
              f"{args.updates} updates x 256 episodes, seeds {args.seeds}")
    md = table(points, header)
    atomic_write_text(args.out / "table.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
