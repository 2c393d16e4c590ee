"""The generation section's trained-heads rows and issue 25's goals, read from its rows.

The rows added here (every one on the section's prompts, columns as the other exit rows):

- ``generate, predictor θ=… (trained heads, LTT)``: the ``trained`` exit-head recipe (per-layer
  low-rank adapters for the frozen decoder, :mod:`exitgym.data.trained_heads`) with the exit
  predictor fitted beside it, which decides from the hidden state alone (a few thousand FLOPs a
  layer; the LM head runs only at the exit). Its threshold is CALM's calibration on live
  generation (:func:`~exitgym.experiments.calm_calibration.calibrate_generation`): disagreement
  with the full model ``<= CALIBRATION_DELTA`` with probability ``>= 1 - CALIBRATION_EPSILON``,
  token units, on the first :data:`CALIBRATION_PROMPTS` prompts of the task's ``policy`` split
  (held out from the heads' ``train`` prompts and from the timed ``validation`` prompts). No
  threshold passing the test leaves the row out; the calibration is recorded either way.

The section also keeps the trained heads' agreement with the last layer per layer (validation
prompts + continuations; the plain LM head and ridge maps beside them) and the token oracle on
them per layer cap (:func:`oracle_limit`): the limit any exit policy on these heads can reach,
which is what the README points to where a goal is out of reach.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

CALIBRATION_PROMPTS = 16
"""Calibration prompts (``quick``: 8 made-up token-id prompts): 16 x 16 tokens = 256 units,
ample for δ = 0.1 (a zero-risk threshold passes from 22), and half the time of 32 (the bench
stays under 10 minutes)."""
CALIBRATION_THRESHOLDS = (0.999, 0.995, 0.99, 0.98, 0.95, 0.9, 0.8, 0.7, 0.5)
"""Tested most conservative first. 0.9999 is left out: on SmolLM2 it exits nothing (cost
1.000), and each threshold tested costs a generation over the calibration prompts."""
CALIBRATION_DELTA = 0.1
"""Tolerated disagreement with the full model: the goals' 0.90 agreement."""
CALIBRATION_EPSILON = 0.1
"""Tolerated probability that the guarantee fails."""
AGREEMENT_LAYER = 20
"""The layer of the trained-heads goal (``quick``: the last layer)."""
PREDICTOR_ROW = "generate, predictor"


def trained_rows(cfg: Any, bb: Any, tokens: int, exits: Any) -> dict[str, Any]:
    """Prepare (or load) the trained heads, calibrate the predictor rule and time it with
    ``exits(name, policy, heads=...)`` (the section's row maker); returns the section's
    ``trained_heads`` entry."""
    from exitgym.agents.generation_rules import PredictorExit
    from exitgym.data.decoder_heads import _texts
    from exitgym.data.trained_heads import TrainedHeadsConfig, agreement_rows, prepare_trained
    from exitgym.experiments.calm_calibration import calibrate_generation

    if cfg.quick:
        from exitgym.backbones.decoder_adapters import AdapterTraining
        from exitgym.bench.generation import QUICK_PROMPTS

        config = TrainedHeadsConfig(train_texts=3, validation_texts=3, new_tokens=4,
                                    training=AdapterTraining(rank=2, epochs=2))
        maps, predictor, meta = prepare_trained(
            bb, "bench-quick", config, progress=False,
            prompts={"train": QUICK_PROMPTS, "validation": QUICK_PROMPTS})
        # 8 prompts x 4 tokens: 32 units, enough for a zero-risk threshold to pass (>= 22)
        calibration_prompts = [[(5 * i + j) % 60 + 2 for j in range(3)] for i in range(8)]
        validation_prompts = QUICK_PROMPTS
    else:
        from exitgym.data.tasks import load_task

        config = TrainedHeadsConfig()
        maps, predictor, meta = prepare_trained(bb, cfg.data.task, config)
        validation_prompts = [ids[: config.max_tokens] for ids in bb.encode(
            _texts(cfg.data.task, "validation", config.validation_texts, {}))]  # the heads'
        texts = list(load_task(cfg.data.task).split("policy")["text"])[:CALIBRATION_PROMPTS]
        calibration_prompts = [ids[:32] for ids in bb.encode(texts)]
    limit = oracle_limit(bb, maps, validation_prompts, config.new_tokens)
    rule = PredictorExit(predictor=predictor)
    calibration = calibrate_generation(
        rule, calibration_prompts, CALIBRATION_DELTA, CALIBRATION_EPSILON,
        thresholds=list(CALIBRATION_THRESHOLDS), backbone=bb, heads=maps,
        max_new_tokens=tokens, batch_size=8)
    if calibration.theta is not None:
        exits(f"{PREDICTOR_ROW} θ={calibration.theta} (trained heads, LTT)",
              rule.with_knob(calibration.theta), heads=maps)
    return {"calibration": asdict(calibration), "calibration_prompts": len(calibration_prompts),
            "agreement": agreement_rows(meta),
            "prepare_s": meta["collect_s"] + meta["train_s"], "positions": meta["positions"],
            "oracle": limit}


def oracle_limit(bb: Any, maps: Any, prompts: list[list[int]], new_tokens: int
                 ) -> list[dict[str, Any]]:
    """The token oracle on the trained heads, per layer cap ``l``: exit at the first layer whose
    head picks the last layer's token, else at ``l``; its agreement (the share of tokens some
    head up to ``l`` gets right: no exit policy on these heads that stops by ``l`` does better)
    and its mean exit layer. On the full model's states (prompts + greedy continuations, the
    ``kv="full"`` setting), so deployed with ``kv="copy"`` the limit is if anything lower."""
    import numpy as np
    import torch

    from exitgym.backbones.exit_predictor import head_agrees
    from exitgym.data.trained_heads import continuation_states

    with torch.inference_mode():
        agree = head_agrees(bb, continuation_states(bb, prompts, new_tokens), maps).numpy()
    first = agree.argmax(axis=1) + 1  # the last layer always agrees with itself
    return [{"cap": cap, "agreement": float((first <= cap).mean()),
             "mean_exit_layer": float(np.minimum(first, cap).mean())}
            for cap in range(1, agree.shape[1] + 1)]


def _exit_rows(section: dict[str, Any], batch: int) -> list[dict[str, Any]]:
    return [r for r in section["rows"] if r["batch_size"] == batch and "flops_speedup" in r
            and not r["name"].startswith("generate, speculative")]


def goals(section: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 25's goals against the section's rows: ``goal``, ``target``, ``measured`` (None:
    no row qualifies), ``row`` (which one) and ``met``."""
    out: list[dict[str, Any]] = []
    batches = sorted({r["batch_size"] for r in section["rows"]})
    if not batches:  # nothing measured (a partial or hand-made section)
        return out
    for batch, target in ((1, 1.3), (batches[-1], 1.2)):
        ok = [r for r in _exit_rows(section, batch) if r["agreement"] >= 0.9]
        best = max(ok, key=lambda r: r["ratio_to_hf_generate"], default=None)
        out.append({"goal": f"× HF generate at batch {batch}, agreement >= 0.90",
                    "target": target, "measured": best and best["ratio_to_hf_generate"],
                    "row": best and best["name"]})
    spec = [r for r in section["rows"] if r["name"].startswith("generate, speculative")]
    best = max(spec, key=lambda r: r["ratio_to_hf_generate"], default=None)
    out.append({"goal": "lossless: same tokens as HF, × HF generate at batch 1",
                "target": 1.1, "measured": best and (best["ratio_to_hf_generate"]
                                                     if best["same_tokens_as_hf"] else 0.0),
                "row": best and best["name"]})
    sped = [r for r in _exit_rows(section, batches[-1]) if r["flops_speedup"] > 1.05]
    worst = min(sped, key=lambda r: r["wall_speedup"] / r["flops_speedup"], default=None)
    out.append({"goal": f"batched exits realise their FLOPs speed-up at batch {batches[-1]} "
                        "(wall / FLOPs, worst row with FLOPs speed-up > 1.05)",
                "target": 0.7,
                "measured": worst and worst["wall_speedup"] / worst["flops_speedup"],
                "row": worst and worst["name"]})
    trained = section.get("trained_heads")
    if trained and trained["calibration"]["theta"] is not None:  # the guarantee, held out
        held = [r for r in section["rows"] if r["name"].startswith(PREDICTOR_ROW)]
        out.append({"goal": "calibrated predictor on held-out prompts: agreement >= 1 - δ",
                    "target": 1.0 - trained["calibration"]["delta"],
                    "measured": held[0]["agreement"], "row": held[0]["name"]})
    if trained:
        rows = trained["agreement"]
        layer = min(AGREEMENT_LAYER, len(rows))
        out.append({"goal": f"trained heads agree with the last layer at layer {layer}",
                    "target": 0.6, "measured": rows[layer - 1]["trained"],
                    "row": "trained heads (validation prompts + continuations)"})
    for g in out:
        g["met"] = g["measured"] is not None and g["measured"] >= g["target"]
    return out


def goals_table(section: dict[str, Any]) -> list[str]:
    """The goals as a markdown table (the README's, generated from ``bench.json``), read off the
    section's rows by the current :func:`goals` (a stored ``goals`` list is not consulted)."""
    if not goals(section):
        return []
    lines = ["| goal | target | measured | met | row |", "|---|---:|---:|---|---|"]
    for g in goals(section):
        measured = "none qualifies" if g["measured"] is None else f"{g['measured']:.2f}"
        lines.append(f"| {g['goal']} | {g['target']:.2f} | {measured} | "
                     f"{'yes' if g['met'] else 'no'} | {g['row'] or ''} |")
    return lines


def to_markdown(section: dict[str, Any]) -> list[str]:
    """The goals table and the trained heads' agreement at a few layers, for ``bench.md``."""
    lines = goals_table(section)
    trained = section.get("trained_heads")
    if trained:
        rows = trained["agreement"]
        shown = sorted({1, 2, len(rows) // 3, len(rows) * 2 // 3, len(rows) - 1, len(rows)}
                       - {0})
        names = [k for k in rows[0] if k != "layer"]
        oracle = trained["oracle"]
        lines += ["", "Agreement with the last layer's token per exit layer (validation prompts "
                  "and their continuations), and the token oracle on the trained heads that "
                  "stops by that layer (its agreement: the limit of any exit policy on them):",
                  "", "| layer | " + " | ".join(names) + " | oracle by layer | its mean exit "
                  "layer |", "|---:|" + "---:|" * (len(names) + 2)]
        lines += [f"| {rows[i - 1]['layer']} | "
                  + " | ".join(f"{rows[i - 1][n]:.3f}" for n in names)
                  + f" | {oracle[i - 1]['agreement']:.3f} | "
                  f"{oracle[i - 1]['mean_exit_layer']:.1f} |" for i in shown]
        cal = trained["calibration"]
        lines += ["", f"Predictor threshold by Learn-then-Test (δ = {cal['delta']}, "
                  f"ε = {cal['epsilon']}, {cal['units']} calibration tokens): "
                  f"θ = {cal['theta']}; tested {cal['tested']} with risks "
                  f"{[round(r, 3) for r in cal['risks']]}."]
    return lines
