"""The ``generation`` section of ``exitgym bench``: early-exit generation against HF ``generate``.

Rows (each on the same prompts, ``max_new_tokens`` greedy tokens per prompt, best of
``repeats``), every one with ``tokens_per_s``, ``hf_generate_tokens_per_s`` (Hugging Face
``generate(do_sample=False)`` one prompt at a time, the same prompts and lengths) and
``ratio_to_hf_generate``:

- ``generate, exits off``: :func:`exitgym.generate` with no policy at batch 1 and batched (the
  goal of issue 14 is ≥ 0.8× HF at batch 1);
- ``TokenExit-v0 live, exits off``: the environment stepped with action 0 (it also runs the
  full-depth reference, so it does twice the work);
- ``generate, margin θ``: CALM's softmax-difference rule (heads at every layer: the
  ``features+logits`` view), with ``flops_speedup`` (1 / mean cost), ``wall_speedup`` against
  exits off at the same batch size (both timed without the reference pass) and ``agreement``
  with the full-depth continuation (from one more, untimed, call with the reference).

``quick`` uses a tiny random Llama (numbers not meaningful); otherwise the embedded SmolLM2-135M
on the first prompts of the task's validation texts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

GENERATION_TOKENS = 16
"""Tokens generated per prompt."""
GENERATION_PROMPTS = 8
"""Prompts timed (``quick``: 3)."""
MARGIN_THETAS = (0.9,)
"""Knobs of the margin rule measured (lower exits earlier). 0.99 is left out: it exits late, and
the live features view recomputes its statistics over every layer so far (O(L²·V) per token), so
it ran at 0.9 tokens/s and kept a full ``exitgym bench`` over 25 minutes on the 2-core machine."""


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        tic = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - tic)
    return best, out


def _setup(cfg: Any) -> tuple[Any, list[list[int]]]:
    from exitgym.backbones.decoder_registry import load_decoder

    if cfg.quick:
        from transformers import LlamaConfig

        bb = load_decoder(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=3, num_attention_heads=2))
        return bb, [[5, 6, 7], [9, 3], [4, 4, 8, 1]]
    from exitgym.data.tasks import load_task

    bb = load_decoder("smollm2-135m")
    texts = list(load_task(cfg.data.task).split("validation")["text"])[:GENERATION_PROMPTS]
    return bb, [ids[:32] for ids in bb.encode(texts)]


def generation_section(cfg: Any) -> dict[str, Any]:
    """Measure the rows described in the module docstring."""
    import gymnasium as gym
    import torch

    import exitgym
    from exitgym.agents.generation_rules import MarginExit
    from exitgym.backbones import hf_compat

    bb, prompts = _setup(cfg)
    tokens = 4 if cfg.quick else GENERATION_TOKENS
    repeats = 1 if cfg.quick else cfg.repeats
    total = tokens * len(prompts)

    def hf() -> list[list[int]]:
        out = []
        with torch.inference_mode():
            for p in prompts:
                ids = torch.tensor([p])
                out.append(hf_compat.greedy_generate(bb.model, ids, torch.ones_like(ids),
                                                     tokens)[0].tolist())
        return out

    hf_s, hf_ids = _best(hf, repeats)
    hf_rate = total / hf_s
    rows: list[dict[str, Any]] = []

    def row(name: str, batch: int, seconds: float, **extra: Any) -> dict[str, Any]:
        entry = {"name": name, "batch_size": batch, "num_prompts": len(prompts),
                 "new_tokens": tokens, "tokens_per_s": total / seconds,
                 "hf_generate_tokens_per_s": hf_rate,
                 "ratio_to_hf_generate": (total / seconds) / hf_rate, **extra}
        rows.append(entry)
        return entry

    plain = {}
    for batch in (1, min(8, len(prompts))):
        secs, result = _best(lambda b=batch: exitgym.generate(
            None, prompts, max_new_tokens=tokens, batch_size=b, backbone=bb), repeats)
        plain[batch] = secs
        row("generate, exits off", batch, secs,
            same_tokens_as_hf=result.generated_ids == hf_ids)

    env = gym.make("exitgym/TokenExit-v0", backbone=bb, prompts=prompts, max_new_tokens=tokens,
                   kv="copy", observation="hidden").unwrapped

    def env_run() -> None:
        for sid in range(len(prompts)):
            env.reset(seed=0, options={"sample_id": sid})
            done = False
            while not done:
                done = env.step(0)[2]

    secs, _ = _best(env_run, repeats)
    row("TokenExit-v0 live, exits off", 1, secs)
    for theta in MARGIN_THETAS:
        for batch in (1, min(8, len(prompts))):
            secs, _ = _best(lambda b=batch, t=theta: exitgym.generate(
                MarginExit(theta=t), prompts, max_new_tokens=tokens, batch_size=b, backbone=bb),
                repeats)
            # Agreement needs the full-depth reference (a second pass): measured untimed.
            result = exitgym.generate(MarginExit(theta=theta), prompts, max_new_tokens=tokens,
                                      batch_size=batch, backbone=bb, reference=True)
            cost = float(result.cost.mean())
            row(f"generate, margin θ={theta}", batch, secs, mean_cost=cost,
                flops_speedup=1.0 / cost, wall_speedup=plain[batch] / secs,
                agreement=float(result.agreement.mean()),
                mean_exit_layer=float(sum(sum(x) for x in result.exit_layers) / total))
    return {"backbone": bb.name, "rows": rows}


def to_markdown(section: dict[str, Any]) -> list[str]:
    """The section's table for ``bench.md``."""
    lines = [f"## Generation ({section['backbone']})", "",
             "| setting | batch | tokens/s | HF generate tokens/s | × HF | FLOPs speed-up | "
             "wall speed-up | agreement | mean exit layer |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def fmt(value: Any, spec: str) -> str:
        return "" if value is None else format(value, spec)

    for r in section["rows"]:
        lines.append(f"| {r['name']} | {r['batch_size']} | {r['tokens_per_s']:.1f} | "
                     f"{r['hf_generate_tokens_per_s']:.1f} | {r['ratio_to_hf_generate']:.2f} | "
                     f"{fmt(r.get('flops_speedup'), '.2f')} | {fmt(r.get('wall_speedup'), '.2f')}"
                     f" | {fmt(r.get('agreement'), '.3f')} | "
                     f"{fmt(r.get('mean_exit_layer'), '.1f')} |")
    return [*lines, ""]
