"""Throughput of the early-exit environments against ``CartPole-v1``, measured in one run.

Measures steps per second of: ``CartPole-v1`` (``gym.make``, the floor of a Python env step),
``exitgym/EarlyExit-v0`` through ``gym.make`` (features and hidden views), the native vector env
at several ``num_envs`` (env steps/s = N × vector steps/s) and the live env (the embedded MiniLM
stepped one layer per step). Every env gets the same policy: uniformly random actions, drawn in
advance so sampling is not timed; episodes reset when they end, and resets count in the time.

Usage: ``python -m exitgym.bench.envs --out DIR`` or ``bench_envs(out_dir=...)`` from Python;
both write ``bench_envs.json`` and ``bench_envs.md`` and return the results as a dict.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import exitgym  # noqa: F401  (registers the environments)
from exitgym.bench.output import machine_info, write_result
from exitgym.data.synthetic import synthetic_cache

ENV_ID = "exitgym/EarlyExit-v0"
LIVE_TEXTS = (
    "a gripping, funny and humane film that earns every one of its quiet moments",
    "dull and far too long",
    "the plot wanders for two hours and never arrives anywhere worth the trip",
    "not bad, not great, just fine for a rainy afternoon",
)


def _timed(step: Callable[[int], None], seconds: float, chunk: int) -> tuple[float, int]:
    """Call ``step(k)`` for k = 0, 1, ... in chunks until ``seconds`` pass; (elapsed, calls)."""
    calls, start = 0, time.perf_counter()
    while True:
        for _ in range(chunk):
            step(calls)
            calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed, calls


def bench_single(env: gym.Env, seconds: float, seed: int = 0) -> dict[str, float]:
    """Steps/s of one env under uniformly random actions (resets included)."""
    actions = np.random.default_rng(seed).integers(0, 2, size=1 << 16).tolist()
    mask = len(actions) - 1
    env.reset(seed=seed)
    episodes = [0]

    def step(k: int) -> None:
        _, _, terminated, truncated, _ = env.step(actions[k & mask])
        if terminated or truncated:
            episodes[0] += 1
            env.reset()

    env.step(actions[0])  # the passive checker runs on the first step only; keep it out
    env.reset()
    elapsed, steps = _timed(step, seconds, 1000)
    return {
        "steps_per_s": steps / elapsed,
        "mean_episode_length": steps / max(episodes[0], 1),
        "steps": steps,
    }


def bench_vector(env: gym.vector.VectorEnv, seconds: float, seed: int = 0) -> dict[str, float]:
    """Env steps/s (= num_envs × vector steps/s) of a vector env under random actions."""
    n = env.num_envs
    actions = np.random.default_rng(seed).integers(0, 2, size=(256, n))
    env.reset(seed=seed)
    elapsed, calls = _timed(lambda k: env.step(actions[k & 255]), seconds, 10 if n > 64 else 100)
    return {
        "num_envs": n,
        "vector_steps_per_s": calls / elapsed,
        "steps_per_s": n * calls / elapsed,
        "steps": n * calls,
    }


def _live_env(texts: tuple[str, ...]) -> gym.Env:
    """The embedded MiniLM stepped live, with random-init exit heads (speed is what is measured)."""
    import torch

    from exitgym.backbones.cache import build_cache
    from exitgym.backbones.heads import ExitHeads, HeadsConfig
    from exitgym.backbones.registry import load_backbone

    backbone = load_backbone("minilm-l6")
    torch.manual_seed(0)
    config = HeadsConfig(
        num_layers=backbone.num_layers, hidden_size=backbone.hidden_size, num_labels=2
    )
    heads = ExitHeads(config).eval()
    labels = np.arange(len(texts)) % 2
    cache = build_cache(backbone, heads, list(texts), labels, progress=False)
    return gym.make(ENV_ID, cache=cache, live=True, backbone=backbone, heads=heads)


def bench_envs(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    seconds: float = 2.0,
    num_samples: int = 8000,
    num_layers: int = 6,
    hidden_size: int = 384,
    vector_sizes: tuple[int, ...] = (1, 64, 1024),
    live: bool = True,
    real_cache: bool = False,
    cache_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Measure everything in one run and (optionally) write ``bench_envs.json`` / ``.md``.

    Args:
        out_dir: Where to write the JSON and markdown; None writes nothing.
        seconds: Wall time per measurement.
        num_samples: Size of the synthetic cache (8000 ≈ the ``rt-polarity`` train split).
        num_layers: Depth of the synthetic cache (6 = MiniLM-L6).
        hidden_size: Pooled state size of the synthetic cache (384 = MiniLM-L6).
        vector_sizes: ``num_envs`` values for the native vector env.
        live: Also measure the live env on the embedded MiniLM (needs torch, loads the model).
        real_cache: Use the prepared ``rt-polarity`` × ``minilm-l6`` cache (built if missing).
        cache_path: Read this stored cache directory instead (verified, never written).
    """
    machine = machine_info(1 if live else None)
    if cache_path is not None:
        from exitgym.backbones.cache import load_cache

        cache = load_cache(cache_path)
        cache_name = (
            f"{cache.meta.get('task')}/{cache.meta.get('backbone')}/{cache.meta.get('split')}"
        )
    elif real_cache:
        from exitgym.data.prepare import get_cache

        cache = get_cache(task="rt-polarity", backbone="minilm-l6", split="train")
        cache_name = "rt-polarity/minilm-l6/train (prepared)"
    else:
        cache = synthetic_cache(
            num_samples=num_samples, num_layers=num_layers, hidden_size=hidden_size
        )
        cache_name = "synthetic"
    rows: dict[str, dict[str, Any]] = {}
    rows["cartpole"] = {
        "env": "CartPole-v1 (gym.make)",
        **bench_single(gym.make("CartPole-v1"), seconds),
    }
    for view in ("features", "hidden"):
        env = gym.make(ENV_ID, cache=cache, observation=view)
        rows[f"single_{view}"] = {
            "env": f"EarlyExit-v0 (gym.make, {view})",
            **bench_single(env, seconds),
        }
    for n in vector_sizes:
        env = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", cache=cache)
        rows[f"vector_{n}"] = {
            "env": f"EarlyExitVectorEnv N={n} (features)",
            **bench_vector(env, seconds),
        }
    if live:
        from exitgym.utils.threads import one_torch_thread

        if real_cache:
            live_env, what = gym.make(ENV_ID, live=True), "prepared heads, rt-polarity texts"
        else:
            live_env, what = _live_env(LIVE_TEXTS), "random heads, 4 review sentences"
        # Batch-1 layers are too small to split across threads; on a shared 2-core box extra
        # threads only contend (measured: ~10x slower with 2 threads under load). Restored after,
        # so callers (exitgym bench) keep their own setting.
        with one_torch_thread():
            rows["live"] = {
                "env": f"EarlyExit-v0 live (minilm-l6, {what}, 1 torch thread)",
                **bench_single(live_env, seconds),
            }
    floor = rows["cartpole"]["steps_per_s"]
    for row in rows.values():
        row["ratio_to_cartpole"] = row["steps_per_s"] / floor
    result = {
        "machine": machine,
        "cache": {
            "kind": cache_name,
            "num_samples": cache.num_samples,
            "num_layers": cache.num_layers,
            "hidden_size": cache.hidden_size,
        },
        "seconds_per_measurement": seconds,
        "policy": "uniform random actions (exit with probability 0.5), resets timed",
        "targets": {"single_vs_cartpole": 0.5, "vector_1024_env_steps_per_s": 1_000_000},
        "results": rows,
    }
    if out_dir is not None:
        write_result(out_dir, "bench_envs", result, to_markdown(result))
    return result


def to_markdown(result: dict[str, Any]) -> str:
    """The results as a markdown table (absolute rate next to the ratio to CartPole)."""
    m = result["machine"]
    lines = [
        f"Environment throughput, {m['date']}, {m['processor']} ({m['cpus']} CPUs, "
        f"load average {m['load_average_1min']} at start), "
        f"cache: {result['cache']['kind']} ({result['cache']['num_samples']} samples, "
        f"{result['cache']['num_layers']} layers, hidden {result['cache']['hidden_size']}); "
        f"{result['policy']}.",
        "",
        "| env | env steps/s | × CartPole-v1 | mean episode length |",
        "|---|---:|---:|---:|",
    ]
    for row in result["results"].values():
        length = row.get("mean_episode_length")
        lines.append(
            f"| {row['env']} | {row['steps_per_s']:,.0f} | {row['ratio_to_cartpole']:.2f} | "
            f"{'' if length is None else f'{length:.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench", help="output directory")
    parser.add_argument("--seconds", type=float, default=2.0, help="wall time per measurement")
    parser.add_argument("--no-live", action="store_true", help="skip the live MiniLM env")
    parser.add_argument(
        "--real-cache",
        action="store_true",
        help="use the prepared rt-polarity x minilm-l6 cache (built if missing)",
    )
    parser.add_argument("--cache-path", default=None, help="a stored cache directory to read")
    args = parser.parse_args(argv)
    result = bench_envs(
        args.out,
        seconds=args.seconds,
        live=not args.no_live,
        real_cache=args.real_cache,
        cache_path=args.cache_path,
    )
    print(to_markdown(result))
    print(f"wrote {Path(args.out) / 'bench_envs.json'} and bench_envs.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
