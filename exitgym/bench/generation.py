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
  ``features`` view, each head's statistics computed batched with it), with ``flops_speedup``
  (1 / mean cost), ``wall_speedup`` against exits off at the same batch size (both timed
  without the reference pass) and ``agreement`` with the full-depth continuation (from one
  more, untimed, call with the reference);
- ``generate, learned <run>``: a trained policy deployed live (``kv="copy"``) with the heads and
  view of its run, the same columns. The run is ``generation_run`` or one trained here
  (:func:`train_generation_run`: REINFORCE, hardness reward, budget-targeted at
  ``generation_target``, ``generation_steps`` updates on the cached ``kv="full"`` env of the
  task's ``policy`` prompts with distilled heads), its training time in ``learned_train_s`` and
  the time of everything the learned rows cost (training included) in ``learned_s``;
- ``generate, speculative (draft layer k, n tokens)``: the lossless mode at batch 1 for the
  choices of :data:`SPECULATIVE_DRAFTS`, with ``same_tokens_as_hf`` (must be True),
  ``acceptance`` (accepted / drafted), ``mean_cost`` and ``flops_speedup`` (at most 1: every
  emitted token runs all layers once, rejected drafts come on top), ``wall_speedup`` against
  exits off at batch 1 and ``agreement`` with HF (1.0 when the tokens are the same).

- ``generate, predictor θ (trained heads, LTT)``: the trained exit heads with the exit
  predictor rule at a calibrated threshold (:mod:`exitgym.bench.generation_goals`, which also
  keeps the heads' agreement per layer and reads issue 25's goals off the rows: ``goals``).

Batched rows run synchronous token steps (``exitgym.generate``): each layer index runs once per
step over the rows still climbing.

``quick`` uses a tiny random Llama (numbers not meaningful; the learned policy is a few in-memory
REINFORCE updates, unless ``generation_run`` names a run); otherwise the embedded SmolLM2-135M on
the first prompts of the task's validation texts (with ``generation_run``: the run's decoder).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exitgym.bench.generation_goals import goals, trained_rows
from exitgym.bench.generation_goals import to_markdown as goals_markdown

GENERATION_TOKENS = 16
"""Tokens generated per prompt."""
GENERATION_PROMPTS = 8
"""Prompts timed (``quick``: 3)."""
MARGIN_THETAS = (0.9,)
"""Knobs of the margin rule measured (lower exits earlier). 0.99 is left out of the bench: it
exits late (layer 23 of 30) and reads the LM head at every layer it visits (each a quarter of a
token on SmolLM2), so it computes 5.5x the full model's FLOPs; measured once (2026-11-30, 8
prompts x 16 tokens): 2.8 tokens/s at batch 1, wall speed-up 0.20 against FLOPs speed-up 0.18,
agreement 0.594, and its rows alone took about 400 s of the section. (Before each head's softmax
statistics were computed once, the live features view recomputed them over every layer so far on
every step, O(L²·V) per token: 0.9 tokens/s.)"""


SPECULATIVE_DRAFTS = ((0.8, 4),)
"""Lossless rows: (draft layer as a share of ``L``, rounded, at least 1; draft tokens). On an
off-the-shelf model the drafts of early layers are rarely the full model's, so the gain, if any,
is wall time from fewer, wider layer calls (the verify chunk), not FLOPs. One row: a second one
(draft layer 0.5·L, 2 tokens; acceptance 0.13 against 0.20, 0.51× exits off) cost the bench
about a minute and showed the same limit (2026-12-05). Timed once, not best of ``repeats``: each
run takes ~18 s, and at half the speed of exits off the ratio needs no finer reading."""
GENERATION_RUN_PROMPTS = 8
"""``policy`` prompts of the generation run's cached env: building its teacher-forced tables for
the training and evaluation splits took 96 of the 102 s of that run with 32 prompts, and the
learned rows 95 s of the bench with 16 (2026-12-05); 8 keep the bench under 10 minutes with the
trained-heads rows. The policy is a smoke test either way (30 updates)."""


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        tic = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - tic)
    return best, out


QUICK_PROMPTS = [[5, 6, 7], [9, 3], [4, 4, 8, 1]]
"""The token-id prompts of ``quick`` (valid for any vocabulary of 10 or more)."""
LEARNED_OBSERVATION = "depth+hidden+prev"
"""View of the policy trained here: head-free, like the demo's agents (docs/design.md)."""


@dataclass(frozen=True)
class Learned:
    """The learned policy a generation row deploys, with what it was trained with."""

    label: str
    """Row name suffix (the run directory's name, or ``in-memory``)."""
    policy: Any
    """The policy."""
    heads: Any
    """Its exit heads (``LayerMaps`` or None)."""
    observation: str
    """Its view."""
    train_s: float | None
    """Seconds spent training it here (None: loaded)."""


def _setup(cfg: Any) -> tuple[Any, list[list[int]], Learned | None]:
    """The decoder, the prompts and, when ``generation_run`` names one, the run's policy."""
    from exitgym.envs.token_core import decoder_by_name

    learned = None
    if cfg.generation_run is not None:
        from exitgym.experiments.token_runs import load_generation_run

        run = load_generation_run(cfg.generation_run)
        bb = run.backbone
        learned = Learned(Path(cfg.generation_run).name, run.policy, run.heads, run.observation,
                          None)
    elif cfg.quick:
        from transformers import LlamaConfig

        from exitgym.backbones.decoder_registry import load_decoder

        bb = load_decoder(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=3, num_attention_heads=2))
    else:
        bb = decoder_by_name("smollm2-135m")  # the object the trained run's envs use
    if cfg.quick:
        return bb, QUICK_PROMPTS, learned
    from exitgym.data.tasks import load_task

    texts = list(load_task(cfg.data.task).split("validation")["text"])[:GENERATION_PROMPTS]
    return bb, [ids[:32] for ids in bb.encode(texts)], learned


def train_generation_run(cfg: Any) -> Learned:
    """Train the section's policy as an ``exitgym train`` run into ``<out>/generation-run``
    (replacing an earlier one) and load it back as ``exitgym.generate`` would."""
    from exitgym.data.config import DataConfig
    from exitgym.experiments.configs import TokenEnvConfig, TrainConfig
    from exitgym.experiments.token_runs import load_generation_run
    from exitgym.experiments.training import train

    train_cfg = TrainConfig(
        env="exitgym/TokenExit-v0", data=DataConfig(task=cfg.data.task), reward="hardness",
        alpha=0.0, target_cost=cfg.generation_target, observation=LEARNED_OBSERVATION,
        steps=cfg.generation_steps, batch_size=16, num_envs=16,
        checkpoint_every=cfg.generation_steps, seed=0,
        token=TokenEnvConfig(max_prompts=GENERATION_RUN_PROMPTS))
    out = Path(cfg.out) / "generation-run"
    tic = time.perf_counter()
    train(train_cfg, out, overwrite=True, progress=False, plots=False)
    seconds = time.perf_counter() - tic
    run = load_generation_run(out)
    return Learned(out.name, run.policy, run.heads, run.observation, seconds)


def _quick_policy(bb: Any, prompts: list[list[int]], tokens: int) -> Learned:
    """A few in-memory REINFORCE updates on the cached env of ``prompts`` (``quick``)."""
    from exitgym.agents.registry import lookup
    from exitgym.envs.token_exit_vector import TokenExitVectorEnv

    env = TokenExitVectorEnv(len(prompts), backbone=bb, prompts=prompts, max_new_tokens=tokens,
                             kv="full", teacher_forcing=True, cached=True,
                             observation=LEARNED_OBSERVATION, reward="vanilla", alpha=0.5)
    tic = time.perf_counter()
    agent = lookup("reinforce", "trainer").factory(env, batch_size=len(prompts), seed=0)
    for _ in range(3):
        agent.update()
    env.close()
    return Learned("in-memory", agent.policy, None, LEARNED_OBSERVATION,
                   time.perf_counter() - tic)


def generation_section(cfg: Any) -> dict[str, Any]:
    """Measure the rows described in the module docstring."""
    import gymnasium as gym
    import numpy as np
    import torch

    import exitgym
    from exitgym.agents.generation_rules import MarginExit
    from exitgym.backbones import hf_compat

    bb, prompts, learned = _setup(cfg)
    tokens = 4 if cfg.quick else GENERATION_TOKENS
    repeats = 1 if cfg.quick else cfg.repeats
    total = tokens * len(prompts)

    def hf() -> list[list[int]]:
        out = []
        with torch.inference_mode():
            for p in prompts:
                ids = torch.tensor([p], device=bb.device)
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
            None, prompts, max_new_tokens=tokens, batch_size=b, backbone=bb, progress=False),
            repeats)
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

    secs, _ = _best(env_run, 1)  # one repeat: a coarse ratio (0.4x), a minute at best-of-3
    row("TokenExit-v0 live, exits off", 1, secs)

    def exits(name: str, policy: Any, **kwargs: Any) -> None:
        """Timed rows of ``policy`` at batch 1 and batched; agreement, cost and exit layers from
        one untimed call with the full-depth reference (a second pass), batched: the batch size
        changes none of them (``tests/test_generate.py``)."""
        batches = (1, min(8, len(prompts)))
        result = exitgym.generate(policy, prompts, max_new_tokens=tokens, batch_size=batches[-1],
                                  backbone=bb, reference=True, progress=False, **kwargs)
        cost = float(result.cost.mean())
        for batch in batches:
            secs, _ = _best(lambda b=batch: exitgym.generate(
                policy, prompts, max_new_tokens=tokens, batch_size=b, backbone=bb,
                progress=False, **kwargs),
                repeats)
            row(name, batch, secs, mean_cost=cost, flops_speedup=1.0 / cost,
                wall_speedup=plain[batch] / secs, agreement=float(result.agreement.mean()),
                mean_exit_layer=float(sum(sum(x) for x in result.exit_layers) / total))

    for theta in MARGIN_THETAS:
        exits(f"generate, margin θ={theta}", MarginExit(theta=theta).reading("features"))
    tic = time.perf_counter()
    trained = trained_rows(cfg, bb, tokens, exits)
    trained["section_s"] = time.perf_counter() - tic
    tic = time.perf_counter()
    if learned is None:
        learned = (_quick_policy(bb, prompts, tokens) if cfg.quick
                   else train_generation_run(cfg))
    exits(f"generate, learned {learned.label}", learned.policy, heads=learned.heads,
          observation=learned.observation)
    learned_s = time.perf_counter() - tic
    for share, n in SPECULATIVE_DRAFTS:
        k = max(1, round(share * bb.num_layers))
        secs, result = _best(lambda k=k, n=n: exitgym.generate(
            None, prompts, max_new_tokens=tokens, batch_size=1, backbone=bb, progress=False,
            mode="speculative", draft_layer=k, draft_tokens=n), 1)  # once: see SPECULATIVE_DRAFTS
        cost = float(result.cost.mean())
        row(f"generate, speculative (draft layer {k}, {n} tokens)", 1, secs,
            same_tokens_as_hf=result.generated_ids == hf_ids,
            agreement=float(np.mean(np.array(result.generated_ids) == np.array(hf_ids))),
            acceptance=float(result.acceptance.mean()), mean_cost=cost,
            flops_speedup=1.0 / cost, wall_speedup=plain[1] / secs)
    section = {"backbone": bb.name, "rows": rows, "learned_train_s": learned.train_s,
               "learned_s": learned_s, "trained_heads": trained}
    section["goals"] = goals(section)
    return section


def to_markdown(section: dict[str, Any]) -> list[str]:
    """The section's table for ``bench.md``."""
    lines = [f"## Generation ({section['backbone']})", "",
             "| setting | batch | tokens/s | HF generate tokens/s | × HF | FLOPs speed-up | "
             "wall speed-up | agreement | mean exit layer | acceptance |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def fmt(value: Any, spec: str) -> str:
        return "" if value is None else format(value, spec)

    for r in section["rows"]:
        lines.append(f"| {r['name']} | {r['batch_size']} | {r['tokens_per_s']:.1f} | "
                     f"{r['hf_generate_tokens_per_s']:.1f} | {r['ratio_to_hf_generate']:.2f} | "
                     f"{fmt(r.get('flops_speedup'), '.2f')} | {fmt(r.get('wall_speedup'), '.2f')}"
                     f" | {fmt(r.get('agreement'), '.3f')} | "
                     f"{fmt(r.get('mean_exit_layer'), '.1f')} | "
                     f"{fmt(r.get('acceptance'), '.3f')} |")
    return [*lines, "", *goals_markdown(section), ""]
