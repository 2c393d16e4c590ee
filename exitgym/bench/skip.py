"""Benchmark of the batched skip environments against the plain Hugging Face forward.

Measures, in one run and on the same inputs, samples per second through all layers of

- the native ``SkipBlock-v0`` vector env with the "run everything" action (reset = embed + layer 1,
  then ``L − 1`` steps: one batched layer call per step, plus observations and rewards),
- the native ``SwitchableDecision-v0`` vector env with the all-keep decision (reset + one step),
- the model's plain forward (``hf_compat.plain_forward``) on the same padded batch,

at batch sizes 1, 16 and 64 (``num_envs`` = batch size). Rounds alternate between the three so
that load from other processes hits them alike; the median and the best round are reported.
Optionally (``--accuracy``) it also reports accuracy and mean cost of fixed skip patterns.

Usage: ``python -m exitgym.bench.skip --out DIR`` (writes ``bench_skip.json`` and
``bench_skip.md``), or ``run_benchmark(...)`` from Python (returns the same dict).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv

from exitgym.backbones import hf_compat
from exitgym.bench.output import machine_info, write_result
from exitgym.data.config import HEADS_MODES
from exitgym.envs import SkipSettings
from exitgym.envs.skip_core import SkipWorld

SKIP_PATTERNS: dict[str, dict[str, Any]] = {
    "full model": {},
    "skip FFN of the last layer": {"ffn": [-1]},
    "skip the last layer": {"attention": [-1], "ffn": [-1]},
    "skip attention of every other layer (3, 5, ...)": {"attention": "odd"},
    "skip attention of layers 2..L": {"attention": "all"},
    "drop last 30 % of tokens": {"token": 3},
    "drop every 2nd token (uniform 50 %)": {"token": 6},
}
"""Fixed decisions for :func:`pattern_accuracy`: layer indices are 0-based (``-1`` = last)."""


def _skip_episode(env: VectorEnv, sids: np.ndarray, actions: np.ndarray,
                  steps: int) -> None:
    """One batch of SkipBlock episodes: reset (embed + layer 1), then every remaining layer."""
    env.reset(options={"sample_id": sids})
    for _ in range(steps):
        env.step(actions)


def _sd_episode(env: VectorEnv, sids: np.ndarray, actions: np.ndarray) -> None:
    """One batch of Switchable Decision episodes: reset, then the one decision step."""
    env.reset(options={"sample_id": sids})
    env.step(actions)


def _native_vector_env(env_id: str, num_envs: int, world: SkipWorld) -> VectorEnv:
    """The native vector env of ``env_id`` on ``world`` (one batched call per layer)."""
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                        world=world)


def _plain(model: Any, tokens: dict[str, torch.Tensor]) -> None:
    with torch.inference_mode():
        hf_compat.plain_forward(model, tokens["input_ids"], tokens["attention_mask"],
                                tokens.get("token_type_ids"))


def _time(fn: Any) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def run_benchmark(world: SkipWorld | None = None, batch_sizes: Sequence[int] = (1, 16, 64),
                  rounds: int = 7, out: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Throughput table (samples/s) of the vector envs and the plain forward; optionally saved."""
    machine = machine_info(torch.get_num_threads())
    world = world or SkipWorld.with_random_heads()
    ex, num_layers = world.executor, world.num_layers
    model = ex.backbone.model
    rows = []
    for batch in batch_sizes:
        skip_env = _native_vector_env("exitgym/SkipBlock-v0", batch, world)
        sd_env = _native_vector_env("exitgym/SwitchableDecision-v0", batch, world)
        run_all = np.zeros(batch, dtype=np.int64)
        keep_all = np.zeros((batch, 2 * (num_layers - 1) + 1), dtype=np.int64)
        times: dict[str, list[float]] = {"skip_block": [], "switchable": [], "plain": []}
        widths = []
        for r in range(rounds + 1):  # round 0 warms up and is discarded
            rng = np.random.default_rng(1000 * batch + r)
            sids = rng.integers(world.num_samples, size=batch)

            tokens = ex.bank.batch(sids)
            jobs = (("plain", partial(_plain, model, tokens)),
                    ("skip_block", partial(_skip_episode, skip_env, sids, run_all,
                                           num_layers - 1)),
                    ("switchable", partial(_sd_episode, sd_env, sids, keep_all)))
            for name, fn in jobs:
                elapsed = _time(fn)
                if r:
                    times[name].append(elapsed)
            widths.append(int(tokens["input_ids"].shape[1]))
        row: dict[str, Any] = {"batch": batch, "mean_padded_width": float(np.mean(widths))}
        for name, values in times.items():
            row[f"{name}_median_sps"] = batch / statistics.median(values)
            row[f"{name}_best_sps"] = batch / min(values)
        for name in ("skip_block", "switchable"):
            row[f"{name}_ratio_median"] = row[f"{name}_median_sps"] / row["plain_median_sps"]
            row[f"{name}_ratio_best"] = row[f"{name}_best_sps"] / row["plain_best_sps"]
        rows.append(row)
    result = {
        "backbone": ex.backbone.name,
        "num_layers": num_layers,
        "rounds": rounds,
        "machine": machine,
        "rows": rows,
    }
    if out is not None:
        write_result(out, "bench_skip", result, to_markdown(result))
    return result


def pattern_actions(pattern: dict[str, Any], batch: int, num_layers: int) -> np.ndarray:
    """SwitchableDecision actions ``[batch, 2(L−1)+1]`` for one entry of :data:`SKIP_PATTERNS`."""
    depth = num_layers - 1
    action = np.zeros(2 * depth + 1, dtype=np.int64)
    for offset, key in ((0, "attention"), (depth, "ffn")):
        spec = pattern.get(key, [])
        layers = {"all": range(1, num_layers), "odd": range(2, num_layers, 2)}.get(spec, spec) \
            if isinstance(spec, str) else spec
        for layer in layers:
            action[offset + (layer % num_layers) - 1] = 1
    action[-1] = pattern.get("token", 0)
    return np.repeat(action[None], batch, axis=0)


def pattern_accuracy(world: SkipWorld, patterns: dict[str, dict[str, Any]] = SKIP_PATTERNS,
                     batch: int = 64) -> list[dict[str, Any]]:
    """Accuracy and mean cost of fixed skip patterns over every input of the world."""
    out = []
    for name, pattern in patterns.items():
        correct, cost = [], []
        for start in range(0, world.num_samples, batch):
            sids = np.arange(start, min(start + batch, world.num_samples))
            info = world.decide(sids, pattern_actions(pattern, len(sids), world.num_layers))
            correct.append(info["correct"])
            cost.append(info["cost"])
        out.append({"pattern": name, "accuracy": float(np.concatenate(correct).mean()),
                    "mean_cost": float(np.concatenate(cost).mean())})
    return out


def to_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"# Skip environments vs plain forward ({result['backbone']})", "",
             f"torch threads {m['torch_threads']}, {m['cpus']} CPUs, load average "
             f"{m['load_average_1min']} at start, {result['rounds']} rounds "
             "(median / best samples per second).", "",
             "| batch | plain forward | SkipBlock vec | ratio | SwitchableDecision vec | ratio |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['batch']} | {r['plain_median_sps']:.1f} / {r['plain_best_sps']:.1f} | "
            f"{r['skip_block_median_sps']:.1f} / {r['skip_block_best_sps']:.1f} | "
            f"{r['skip_block_ratio_median']:.2f} / {r['skip_block_ratio_best']:.2f} | "
            f"{r['switchable_median_sps']:.1f} / {r['switchable_best_sps']:.1f} | "
            f"{r['switchable_ratio_median']:.2f} / {r['switchable_ratio_best']:.2f} |")
    if "accuracy" in result:
        acc = result["accuracy"]
        lines += ["", f"## Fixed skip patterns ({acc['heads']} heads, {acc['split']} split)", "",
                  "| pattern | accuracy | mean cost |", "|---|---:|---:|"]
        lines += [f"| {r['pattern']} | {r['accuracy']:.4f} | {r['mean_cost']:.3f} |"
                  for r in acc["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for bench_skip.json / .md")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--accuracy", choices=list(HEADS_MODES), default=None,
                        help="also report fixed skip patterns with these prepared heads")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_benchmark(batch_sizes=args.batch_sizes, rounds=args.rounds)
    if args.accuracy:
        world = SkipWorld.from_settings(SkipSettings(split=args.split, heads=args.accuracy))
        result["accuracy"] = {"heads": args.accuracy, "split": args.split,
                              "rows": pattern_accuracy(world)}
    write_result(args.out, "bench_skip", result, to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
