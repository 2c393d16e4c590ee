"""The bench's ``gpu`` section: the speed claims of issue 24, measured on a CUDA device.

Without CUDA it records ``{"skipped": "no CUDA device"}`` at once, so the CPU bench keeps its
time and its figures. With CUDA, :func:`measure_on` records the device (name, torch and CUDA
versions) and five measurements, each a function of a ``device`` so the same code runs on a CPU
in the unit tests with tiny models:

- ``prepare``: a cold ``prepare`` (fine-tuning and every per-layer cache) in a scratch cache;
- ``finetune``: exitgym's fine-tuning steps/s against the plain Hugging Face step on the device;
- ``infer``: :func:`~exitgym.bench.measure.inference_speed` at batch 1, 32 and 256 (the
  realised fraction of the FLOPs speed-up), a max-probability rule on the prepared heads;
- ``live_env``: steps/s of ``EarlyExit-v0`` with ``live=True`` on the device;
- ``generate``: ``exitgym.generate`` with exits off against Hugging Face ``generate``, tokens/s
  at batch 1 and 8, and whether the tokens are the same.

A measurement that fails records ``{"error": ...}`` and the others still run: the script that
runs this section (``scripts/gpu_check.sh``) gets one try on a lent GPU. None of these figures
has been measured yet: no GPU was at hand when this was written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

SKIPPED = "no CUDA device"
"""What the section records when this machine has no CUDA device."""
INFER_BATCHES = {"batch1": 1, "batch32": 32, "batch256": 256}
"""Batch sizes of the ``infer`` rows (the issue's 1 and 32 / 256)."""
GENERATE_BATCHES = (1, 8)
"""Batch sizes of the ``generate`` rows."""
GENERATE_TOKENS = 32
"""New tokens per prompt in the ``generate`` rows."""


def gpu_section(cfg: Any) -> dict[str, Any]:
    """The ``gpu`` entry of ``bench.json``."""
    import torch

    if not torch.cuda.is_available():
        return {"skipped": SKIPPED}
    return measure_on(cfg, "cuda")


def measure_on(cfg: Any, device: str) -> dict[str, Any]:
    """Every measurement of the section on ``device`` (``cfg.quick``: tiny sizes)."""
    from exitgym.backbones.registry import load_backbone
    from exitgym.bench.pipeline import _scratch_cache
    from exitgym.utils.devices import device_record, resolve_device

    out: dict[str, Any] = {"device": device_record(resolve_device(device))}
    out["finetune"] = _guarded(lambda: finetune_rates(cfg, device))
    with _scratch_cache():  # cold: nothing prepared; removed with what was built in it
        prepared: dict[str, Any] = {}
        out["prepare"] = _guarded(lambda: cold_prepare(cfg, device, prepared))
        if "result" in prepared:
            from exitgym.backbones.heads import ExitHeads, load_backbone_weights
            from exitgym.data.recipes import texts_of
            from exitgym.data.tasks import load_task

            result = prepared["result"]
            bb = load_backbone(cfg.data.backbone)
            if result.backbone_weights is not None:
                load_backbone_weights(bb.model, result.backbone_weights)
            heads = ExitHeads.load(result.directory)
            texts, _, labels = texts_of(load_task(cfg.data.task), cfg.inference_split)
            n = 64 if cfg.quick else 2048
            out["infer"] = _guarded(lambda: infer_rates(
                bb, heads, list(texts[:n]), np.asarray(labels[:n]), device,
                1 if cfg.quick else min(cfg.repeats, 2)))
            out["live_env"] = _guarded(lambda: live_env_rate(
                bb, heads, list(texts[:64]), device, cfg.env_seconds))
        else:
            out["infer"] = out["live_env"] = {"error": "not measured: prepare failed"}
    out["generate"] = _guarded(lambda: generate_rates(
        _decoder(cfg), 8 if cfg.quick else 32, 4 if cfg.quick else GENERATE_TOKENS, device, 1))
    return out


def _guarded(measure: Callable[[], Any]) -> Any:
    """``measure()``, or ``{"error": ...}`` when it raises (one failure must not cost the other
    measurements of a single lent-GPU run)."""
    try:
        return measure()
    except Exception as err:  # noqa: BLE001 - recorded: the other measurements still run
        return {"error": f"{type(err).__name__}: {err}"}


def _sync(device: str) -> None:
    """Wait for the device's queued work, so a wall-clock interval covers it."""
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        torch.cuda.synchronize()


def cold_prepare(cfg: Any, device: str, keep: dict[str, Any] | None = None) -> dict[str, Any]:
    """Seconds of a ``prepare`` of the bench's data config on ``device`` (cold when the cache
    is empty: :func:`measure_on` runs it in a scratch cache); ``keep["result"]`` gets what
    ``prepare`` returned, for the measurements that deploy the prepared heads.

    The full task is prepared (the issue's goal: a cold prepare in 30 s on a GPU); ``quick``
    takes its first rows.
    """
    from exitgym.bench.pipeline import QUICK_SAMPLES
    from exitgym.data.prepare import PrepareConfig, prepare

    config = PrepareConfig(**{**asdict(cfg.data), "device": device})
    rows = QUICK_SAMPLES if cfg.quick else None
    tic = time.perf_counter()
    result = prepare(config, max_samples=rows, progress=False, verbose=False)
    _sync(device)
    seconds = time.perf_counter() - tic
    if keep is not None:
        keep["result"] = result
    return {"prepare_s": seconds, "rows_per_split": rows, "heads": config.heads}


def finetune_rates(cfg: Any, device: str) -> dict[str, Any]:
    """exitgym's fine-tuning against the plain HF step, both on ``device``
    (:func:`~exitgym.bench.finetune.finetune_speed`)."""
    from exitgym.bench.finetune import finetune_speed

    return finetune_speed(cfg, device=device)


def infer_rates(bb: Any, heads: Any, texts: list[str], labels: np.ndarray | None, device: str,
                repeats: int, theta: float = 0.9) -> list[dict[str, Any]]:
    """Early exit against the full-depth forward at the :data:`INFER_BATCHES` on ``device``: a
    max-probability rule (``theta``) on ``heads``; the rows of ``inference_speed``."""
    from exitgym.agents.rules import MaxProbExit
    from exitgym.bench.measure import inference_speed
    from exitgym.inference import ExitInference

    engine = ExitInference(MaxProbExit(theta), bb, heads, device=device)
    return inference_speed(engine, texts, labels, INFER_BATCHES, repeats)


def live_env_rate(bb: Any, heads: Any, texts: list[str], device: str,
                  seconds: float) -> dict[str, Any]:
    """Steps/s of ``EarlyExit-v0`` with ``live=True`` on ``device`` (the cache that describes
    the episodes is built first, on the same device, and not timed)."""
    import gymnasium as gym

    from exitgym.backbones.cache import build_cache
    from exitgym.bench.envs import bench_single
    from exitgym.utils.devices import place

    place([bb.model, heads], device)
    labels = np.arange(len(texts)) % heads.config.num_labels
    cache = build_cache(bb, heads, texts, labels, progress=False)
    env = gym.make("exitgym/EarlyExit-v0", cache=cache, live=True, backbone=bb, heads=heads,
                   device=device)
    try:
        rate = bench_single(env, seconds)
    finally:
        env.close()
    return {**rate, "env_device": env.unwrapped.device}


def _decoder(cfg: Any) -> Any:
    """The embedded SmolLM2 (a tiny random Llama with ``quick``: nothing to load)."""
    from exitgym.backbones.decoder_registry import load_decoder

    if not cfg.quick:
        return load_decoder("smollm2-135m")
    from transformers import LlamaConfig

    return load_decoder(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                    num_hidden_layers=3, num_attention_heads=2))


def generate_rates(bb: Any, num_prompts: int, tokens: int, device: str,
                   repeats: int) -> list[dict[str, Any]]:
    """``exitgym.generate`` with exits off against Hugging Face ``generate`` (the same greedy
    tokens, one prompt per call) at the :data:`GENERATE_BATCHES`, on ``device``."""
    import torch

    import exitgym
    from exitgym.backbones import hf_compat
    from exitgym.utils.devices import place

    where, _ = place(bb.model, device)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, bb.vocab_size, size=int(rng.integers(4, 17))).tolist()
               for _ in range(num_prompts)]

    def hf() -> list[list[int]]:
        out = []
        with torch.inference_mode():
            for p in prompts:
                ids = torch.tensor([p], device=where)
                out.append(hf_compat.greedy_generate(bb.model, ids, torch.ones_like(ids),
                                                     tokens)[0].tolist())
        return out

    hf_s, hf_ids = _best(hf, repeats, device)
    total = tokens * num_prompts
    rows = []
    for batch in GENERATE_BATCHES:
        secs, result = _best(lambda b=batch: exitgym.generate(
            None, prompts, max_new_tokens=tokens, batch_size=b, backbone=bb, progress=False,
            device=device), repeats, device)
        rows.append({"batch_size": batch, "num_prompts": num_prompts, "new_tokens": tokens,
                     "tokens_per_s": total / secs, "hf_generate_tokens_per_s": total / hf_s,
                     "ratio_to_hf_generate": hf_s / secs,
                     "same_tokens_as_hf": result.generated_ids == hf_ids})
    return rows


def _best(fn: Callable[[], Any], repeats: int, device: str) -> tuple[float, Any]:
    """Best-of-``repeats`` seconds of ``fn`` (after one untimed warm-up call) and its result."""
    result = fn()
    best = float("inf")
    for _ in range(max(1, repeats)):
        tic = time.perf_counter()
        result = fn()
        _sync(device)
        best = min(best, time.perf_counter() - tic)
    return best, result


def gpu_markdown(result: dict[str, Any]) -> list[str]:
    """The ``bench.md`` part of the section: the device and its figures, or why there are none."""
    entry = result["gpu"]
    if "skipped" in entry:
        return ["", "## GPU", "", f"Skipped: {entry['skipped']} on this machine; no GPU "
                "figures were measured."]
    device = entry["device"]
    lines = ["", "## GPU", "", f"{device['name']} ({device['device']}), torch "
             f"{device['torch']}, CUDA {device['cuda']}.", ""]
    for name in ("prepare", "finetune", "infer", "live_env", "generate"):
        value = entry.get(name)
        if isinstance(value, dict) and "error" in value:
            lines.append(f"- {name}: not measured ({value['error']})")
        elif name == "prepare":
            lines.append(f"- cold prepare: {value['prepare_s']:.1f} s")
        elif name == "finetune":
            lines.append(f"- fine-tuning: {value['exitgym_steps_per_s']:.2f} steps/s, "
                         f"{value['ratio_to_hf']:.2f}x the plain HF step")
        elif name == "infer":
            lines += [f"- infer batch {r['batch_size']}: wall {r['wall_speedup']:.2f}x, FLOPs "
                      f"{r['flops_speedup']:.2f}x, realised {r['realised_fraction']:.2f}"
                      for r in value]
        elif name == "live_env":
            lines.append(f"- live EarlyExit-v0: {value['steps_per_s']:.0f} steps/s")
        else:
            lines += [f"- generate batch {r['batch_size']}, exits off: "
                      f"{r['tokens_per_s']:.0f} tokens/s, {r['ratio_to_hf_generate']:.2f}x HF "
                      f"generate, same tokens: {r['same_tokens_as_hf']}" for r in value]
    return lines
