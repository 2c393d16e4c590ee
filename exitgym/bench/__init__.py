"""``exitgym bench --out DIR``: every speed claim of exitgym, measured in one run on this machine.

Also runnable as ``python -m exitgym.bench --out DIR``. Writes ``bench.json`` (the keys below are
stable; new keys may be added, existing ones keep their meaning) and ``bench.md`` (the same
numbers as tables, absolute rates next to ratios). Sections, in order:

``machine``
    ``date``, ``platform``, ``cpus``, ``load_average_1min`` (at start: other work on a shared
    machine slows every number), ``torch_threads``, package versions.
``env_throughput``
    ``rows``: one per env setting from ``exitgym.bench.envs`` and ``exitgym.bench.skip``
    (``family``, ``name``, ``env``, ``steps_per_s``, ``ratio_to_cartpole``; skip envs also
    ``samples_per_s`` and ``ratio_to_plain_forward``); ``notes``: what could not run.
``flops_check``
    ``rows``: per config and length, ``model_flops`` (analytic, with element-wise work),
    ``model_matmul_flops``, ``counted_flops`` (``torch.utils.flop_counter``, eager attention),
    ``ratio_matmul`` (expected exactly 1) and ``ratio_total`` (expected within 1 +- 0.02).
``inference``
    ``policies``: one entry per deployed run with ``run``, ``load_s``, ``policy`` (agent,
    reward, alpha, ...), ``policy_flops`` and ``rows`` per mode (``batch1``, ``batched``):
    ``full_s`` / ``exit_s`` (best-of-``repeats`` seconds for the same ``num_texts`` texts),
    ``*_ms_per_text``, ``*_texts_per_s``, ``wall_speedup`` (full / exit),
    ``flops_speedup`` (full-model FLOPs / FLOPs spent by early exit, heads and policy included),
    ``realised_fraction`` (wall / FLOPs speed-up), ``goal`` (0.8 at batch 1, 0.6 batched),
    ``goal_met``, ``mean_exit_layer``, ``mean_cost``, ``full_accuracy``, ``exit_accuracy``.
``timings``
    ``prepare_s`` (``prepare`` on the benchmark's task, ``prepare_built`` says whether it had to
    build or reused the cache), ``prepare_fresh_s`` (a from-scratch prepare of the first
    ``prepare_fresh_rows`` rows per split in a temporary cache), ``train_s`` (``exitgym train``
    of each policy deployed above, ``train_steps`` updates, evaluation included), ``runs``,
    ``demo_s`` (read from the newest demo run under ``runs/``; None when there is none).
``total_s``
    Wall time of the whole benchmark.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from exitgym.bench.config import SCHEMA, BenchConfig
from exitgym.bench.output import machine_info, write_result

SectionFn = Callable[[BenchConfig, dict[str, Any]], dict[str, Any]]
SECTIONS: dict[str, SectionFn] = {}
"""Section name -> measurement, run in insertion order; each may read earlier sections."""


def section(name: str) -> Callable[[SectionFn], SectionFn]:
    def add(fn: SectionFn) -> SectionFn:
        SECTIONS[name] = fn
        return fn

    return add


@section("machine")
def _machine(cfg: BenchConfig, done: dict[str, Any]) -> dict[str, Any]:
    return machine_info(cfg.threads)


@section("env_throughput")
def _envs(cfg: BenchConfig, done: dict[str, Any]) -> dict[str, Any]:
    from exitgym.bench.measure import external_env_benchmarks

    rows, notes = external_env_benchmarks(cfg.quick, cfg.env_seconds)
    return {"rows": rows, "notes": notes}


@section("flops_check")
def _flops(cfg: BenchConfig, done: dict[str, Any]) -> dict[str, Any]:
    from exitgym.bench.measure import flops_check

    lengths = (8, 16) if cfg.quick else cfg.flops_lengths
    return {"rows": flops_check(lengths, quick=cfg.quick)}


@section("timings")
def _timings(cfg: BenchConfig, done: dict[str, Any]) -> dict[str, Any]:
    from exitgym.bench.pipeline import demo_seconds, fresh_prepare, timed_prepare, train_policy

    out: dict[str, Any] = {}
    out.update(timed_prepare(cfg))
    out.update(fresh_prepare(cfg))
    out.update(train_policy(cfg))
    out["demo_s"], out["demo_run"] = demo_seconds(Path("runs"))
    return out


@section("inference")
def _inference(cfg: BenchConfig, done: dict[str, Any]) -> dict[str, Any]:
    from exitgym.bench.pipeline import inference_section

    return {"policies": [inference_section(cfg, run) for run in done["timings"]["runs"]]}


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every section, write ``bench.json`` and ``bench.md`` into ``cfg.out``."""
    import torch

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    result: dict[str, Any] = {"schema": SCHEMA, "config": asdict(cfg)}
    try:
        for name, fn in SECTIONS.items():
            tic = time.perf_counter()
            log(f"bench: {name} ...")
            result[name] = fn(cfg, result)
            result[name]["section_s"] = time.perf_counter() - tic
    finally:
        torch.set_num_threads(threads)
    result["total_s"] = time.perf_counter() - start
    from exitgym.bench.report import to_markdown

    write_result(out, "bench", result, to_markdown(result))
    log(f"bench: wrote {out / 'bench.json'} and {out / 'bench.md'} in {result['total_s']:.0f} s")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`BenchConfig` field (shared by the CLI and ``python -m``)."""
    defaults = BenchConfig()
    parser.add_argument("--out", default=defaults.out, help="output directory")
    parser.add_argument("--task", default=defaults.task, help="task of the inference benchmark")
    parser.add_argument("--backbone", default=defaults.backbone, help="backbone to deploy")
    parser.add_argument("--run", default=None,
                        help="a trained `exitgym train` run to deploy (default: train one)")
    parser.add_argument("--reward", default=defaults.reward, help="reward of the trained policy")
    parser.add_argument("--alphas", type=_alphas, default=defaults.alphas,
                        help="comma-separated cost weights, one trained policy each "
                             f"(default: {','.join(map(str, defaults.alphas))})")
    parser.add_argument("--train-steps", type=_positive_int, default=defaults.train_steps,
                        help="REINFORCE updates of the trained policy")
    parser.add_argument("--num-texts", type=_positive_int, default=defaults.num_texts,
                        help="validation texts timed per inference mode")
    parser.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size,
                        help="batch size of the batched mode")
    parser.add_argument("--repeats", type=_positive_int, default=defaults.repeats,
                        help="timed repetitions (best-of)")
    parser.add_argument("--threads", type=_positive_int, default=defaults.threads,
                        help="torch threads")
    parser.add_argument("--prepare-fresh-rows", type=_non_negative_int,
                        default=defaults.prepare_fresh_rows,
                        help="rows per split of the from-scratch prepare (0 skips it)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (tests the benchmark)")


def _alphas(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") from None
    if not values or any(not v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"needs numbers >= 0, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    names = BenchConfig.__dataclass_fields__
    return BenchConfig(**{k: v for k, v in vars(args).items() if k in names})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exitgym.bench",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    run_bench(config_from_args(parser.parse_args(argv)))
    return 0

