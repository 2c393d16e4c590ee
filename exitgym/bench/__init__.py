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
``finetune``
    exitgym's fine-tuning (:mod:`exitgym.bench.finetune`) against a plain Hugging Face training
    step on the same ``steps`` batches: ``exitgym_steps_per_s``, ``hf_steps_per_s``,
    ``ratio_to_hf`` (goal ``goal`` = 0.8, ``goal_met``), ``threads``, ``mean_tokens``.
``generation``
    ``backbone`` and ``rows`` (``exitgym.bench.generation``): early-exit generation on the
    embedded SmolLM2 decoder against Hugging Face ``generate``: ``tokens_per_s``,
    ``hf_generate_tokens_per_s``, ``ratio_to_hf_generate``; rule rows add ``flops_speedup``,
    ``wall_speedup``, ``agreement``, ``mean_exit_layer``.
``timings``
    ``prepare_s`` (``prepare`` on the benchmark's task, ``prepare_built`` says whether it had to
    build or reused the cache), ``prepare_fresh_s`` (a from-scratch prepare of the first
    ``prepare_fresh_rows`` rows per split in a temporary cache), ``train_s`` (``exitgym train``
    of each policy deployed above, ``train_steps`` updates, evaluation included), ``runs``,
    ``demo_s`` (read from the newest demo run under ``runs/``; None when there is none).
``gpu``
    ``{"skipped": "no CUDA device"}`` without CUDA; with it (:mod:`exitgym.bench.gpu`):
    ``device`` (name, torch and CUDA versions), ``prepare`` (``prepare_s``: a cold prepare),
    ``finetune`` (as the ``finetune`` section, on the GPU), ``infer`` (rows as ``inference``'s
    at batch 1, 32 and 256), ``live_env`` (``steps_per_s`` of ``EarlyExit-v0`` live) and
    ``generate`` (exits off against HF ``generate`` at batch 1 and 8); a measurement that
    failed holds ``{"error": ...}``.
``total_s``
    Wall time of the whole benchmark.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exitgym.bench.config import SCHEMA, BenchConfig
from exitgym.bench.output import machine_info, write_result
from exitgym.utils.configs import add_arguments, flatten, from_args

SectionFn = Callable[[BenchConfig, dict[str, Any]], dict[str, Any]]
SECTIONS: dict[str, SectionFn] = {}
"""Section name -> measurement, run in insertion order; each may read earlier sections."""
NEEDS: dict[str, tuple[str, ...]] = {"inference": ("timings",)}
"""Sections that read earlier ones (``--only`` runs those too); ``machine`` always runs."""


def selected(only: tuple[str, ...]) -> tuple[str, ...]:
    """The sections ``--only`` runs, in suite order (all of them when ``only`` is empty).

    Raises:
        ValueError: an unknown section name (the allowed ones listed).
    """
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown bench sections {unknown}; allowed: {list(SECTIONS)}")
    if not only:
        return tuple(SECTIONS)
    wanted = {"machine", *only, *(n for name in only for n in NEEDS.get(name, ()))}
    return tuple(name for name in SECTIONS if name in wanted)


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


@section("finetune")
def _finetune(cfg: BenchConfig, done: dict[str, Any]) -> dict[str, Any]:
    from exitgym.bench.finetune import finetune_speed

    return finetune_speed(cfg)


@section("generation")
def _generation(cfg: BenchConfig, done: dict[str, Any]) -> dict[str, Any]:
    from exitgym.bench.generation import generation_section

    return generation_section(cfg)


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

    return {"policies": [entry for run in done["timings"]["runs"]
                         for entry in inference_section(cfg, run)]}


@section("ray")
def _ray(cfg: BenchConfig, done: dict[str, Any]) -> dict[str, Any]:
    from exitgym.bench.ray import ray_section

    return ray_section(cfg)


@section("gpu")  # last: the CPU sections' figures come first and stay as they were
def _gpu(cfg: BenchConfig, done: dict[str, Any]) -> dict[str, Any]:
    from exitgym.bench.gpu import gpu_section

    return gpu_section(cfg)


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every section, write ``bench.json`` and ``bench.md`` into ``cfg.out``."""
    import torch

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    result: dict[str, Any] = {"schema": SCHEMA, "config": flatten(cfg)}
    try:
        for name in selected(cfg.only):
            fn = SECTIONS[name]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exitgym.bench",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser, BenchConfig)
    run_bench(from_args(BenchConfig, parser.parse_args(argv)))
    return 0

