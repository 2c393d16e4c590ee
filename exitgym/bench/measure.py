"""The measurements behind ``exitgym bench``: each returns JSON-ready rows with units in the keys.

Kept apart from :mod:`exitgym.bench` (orchestration and output) so each measurement can be
called and tested on its own:

- :func:`flops_check`: the analytic FLOPs model against ``torch.utils.flop_counter`` on the real
  modules (eager attention, whose matmuls the counter can see);
- :func:`inference_speed`: early-exit inference (:mod:`exitgym.inference`) against the model's plain
  full-depth forward on the same texts, at batch 1 and batched with compaction;
- :func:`external_env_benchmarks`: the env benchmarks of ``exitgym.bench.envs`` (with
  ``CartPole-v1`` as the floor of a Python env step) and ``exitgym.bench.skip`` (owned by
  the env modules).

Wall-clock numbers are best-of-``repeats`` (the usual ``timeit`` practice: on a shared machine the
minimum is the measurement least disturbed by other processes), taken per short chunk of texts
with the two things compared back to back, so both see the same machine state.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from typing import Any

import numpy as np

"""Where the env modules keep their benchmark scripts."""


# ---- FLOPs model vs the counter -------------------------------------------------------------
def flops_configs(quick: bool) -> dict[str, Any]:
    """Configurations checked: the embedded backbone's and the base sizes of each family."""
    from transformers import AlbertConfig, BertConfig, DistilBertConfig, RobertaConfig

    if quick:
        return {"tiny-bert": BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=64)}
    from exitgym.backbones.hf_compat import config_from_pretrained
    from exitgym.backbones.registry import BACKBONE_ALIASES

    return {
        "minilm-l6": config_from_pretrained(str(BACKBONE_ALIASES["minilm-l6"]())),
        "bert-base": BertConfig(),
        "roberta-base": RobertaConfig(vocab_size=50265, max_position_embeddings=514,
                                      pad_token_id=1),
        "albert-base": AlbertConfig(hidden_size=768, num_attention_heads=12,
                                    intermediate_size=3072),
        "distilbert-base": DistilBertConfig(),
    }


def flops_check(lengths: tuple[int, ...], quick: bool = False) -> list[dict[str, Any]]:
    """Per config and length: model FLOPs of a full forward vs ``FlopCounterMode``'s count.

    ``ratio_matmul`` compares the matrix products only (what the counter counts; expected exactly
    1), ``ratio_total`` the model's total with element-wise work (expected within 2 %).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from exitgym.backbones import hf_compat
    from exitgym.backbones.registry import load_backbone

    rows = []
    for name, config in flops_configs(quick).items():
        bb = load_backbone(config)
        hf_compat.use_eager_attention(bb.model)
        model = bb.flops
        for length in lengths:
            ids = torch.randint(1000 % config.vocab_size, config.vocab_size - 1, (1, length))
            with FlopCounterMode(display=False) as counter, torch.inference_mode():
                bb.forward_pooled({"input_ids": ids})
            counted = float(counter.get_total_flops())
            matmul = float(model.embeddings_matmul(length) + model.num_layers * (
                model.attention_matmul(length) + model.ffn_matmul(length)))
            total = float(model.full(length))
            rows.append({"config": name, "length": int(length), "model_flops": total,
                         "model_matmul_flops": matmul, "counted_flops": counted,
                         "ratio_matmul": matmul / counted, "ratio_total": total / counted})
        del bb
    return rows


# ---- early-exit inference vs full depth -----------------------------------------------------
def inference_speed(
    engine: Any,
    texts: list[str],
    labels: np.ndarray | None,
    batch_sizes: dict[str, int],
    repeats: int,
    text_pairs: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Wall-clock and FLOPs speed-up of early exit over the plain full-depth forward.

    Args:
        engine: An :class:`~exitgym.inference.ExitInference` (backbone, heads, trained policy).
        texts: The inputs, identical for both paths.
        labels: Gold labels for the accuracy columns (optional).
        batch_sizes: Mode name -> batch size (``{"batch1": 1, "batched": 32}``).
        repeats: Timed repetitions per path (best-of, interleaved).
        text_pairs: Second segments of pair tasks.
    """
    warm = min(len(texts), 16)
    pairs_warm = None if text_pairs is None else text_pairs[:warm]
    engine(texts[:warm], text_pairs=pairs_warm, batch_size=4)
    engine.full_depth(texts[:warm], text_pairs=pairs_warm, batch_size=4)
    rows = []
    for mode, batch_size in batch_sizes.items():
        # Short chunks, each timed for both paths back to back: a load change on a shared machine
        # then hits both sides of a ratio instead of one.
        chunk = max(20, 2 * batch_size)
        full_s = exit_s = 0.0
        predictions, full_predictions, layers, spent, full_flops = [], [], [], [], []
        for lo in range(0, len(texts), chunk):
            part = texts[lo:lo + chunk]
            pairs = None if text_pairs is None else text_pairs[lo:lo + chunk]
            best_full = best_exit = float("inf")
            for _ in range(max(1, repeats)):
                tic = time.perf_counter()
                full = engine.full_depth(part, text_pairs=pairs, batch_size=batch_size)
                best_full = min(best_full, time.perf_counter() - tic)
                tic = time.perf_counter()
                result = engine(part, text_pairs=pairs, batch_size=batch_size)
                best_exit = min(best_exit, time.perf_counter() - tic)
            full_s, exit_s = full_s + best_full, exit_s + best_exit
            full_predictions.append(full.predictions)
            predictions.append(result.predictions)
            layers.append(result.exit_layers)
            spent.append(result.flops)
            full_flops.append(result.full_flops)
        exit_layers = np.concatenate(layers)
        wall = full_s / exit_s
        flops = float(np.concatenate(full_flops).sum() / np.concatenate(spent).sum())
        n = len(texts)
        row = {
            "mode": mode, "batch_size": int(batch_size), "num_texts": n,
            "full_s": full_s, "exit_s": exit_s,
            "full_ms_per_text": 1e3 * full_s / n, "exit_ms_per_text": 1e3 * exit_s / n,
            "full_texts_per_s": n / full_s, "exit_texts_per_s": n / exit_s,
            "wall_speedup": wall, "flops_speedup": flops, "realised_fraction": wall / flops,
            "mean_exit_layer": float(exit_layers.mean()),
            "mean_cost": float((np.concatenate(spent) / np.concatenate(full_flops)).mean()),
            "exit_layer_histogram": np.bincount(exit_layers,
                                                minlength=engine.num_layers + 1)[1:].tolist(),
        }
        if labels is not None:
            row["full_accuracy"] = float((np.concatenate(full_predictions) == labels).mean())
            row["exit_accuracy"] = float((np.concatenate(predictions) == labels).mean())
        rows.append(row)
    return rows


# ---- env step rates -------------------------------------------------------------------------
def _early_exit_rows(module: Any, quick: bool, seconds: float) -> list[dict[str, Any]]:
    kwargs: dict[str, Any] = {"seconds": seconds}
    if quick:
        kwargs.update(num_samples=64, hidden_size=8, vector_sizes=(1, 4), live=False)
    result = module.bench_envs(None, **kwargs)
    return [{"name": key, **row} for key, row in result["results"].items()]


def _skip_rows(module: Any, quick: bool, seconds: float) -> list[dict[str, Any]]:
    """Samples/s of the live skip vector envs (everything run) and their ratio to the plain
    forward; env steps/s = samples/s x steps per episode (L - 1 for SkipBlock, 1 for SD)."""
    sizes, rounds = ((1, 4), 1) if quick else ((1, 16, 64), 3)
    result = module.run_benchmark(batch_sizes=sizes, rounds=rounds)
    steps = result["num_layers"] - 1
    rows = []
    for r in result["rows"]:
        n = r["batch"]
        for key, env, per_episode in (("skip_block", "SkipBlockVectorEnv", steps),
                                      ("switchable", "SwitchableDecisionVectorEnv", 1)):
            rows.append({
                "name": f"{key}_{n}", "env": f"{env} N={n} (live {result['backbone']}, run all)",
                "num_envs": n, "samples_per_s": r[f"{key}_best_sps"],
                "steps_per_s": r[f"{key}_best_sps"] * per_episode,
                "ratio_to_plain_forward": r[f"{key}_ratio_best"],
            })
    return rows


EXTERNAL_BENCHES: dict[str, tuple[str, str, Callable[[Any, bool, float], list[dict[str, Any]]]]] = {
    "early exit": ("exitgym.bench.envs", "bench_envs", _early_exit_rows),
    "skip": ("exitgym.bench.skip", "run_benchmark", _skip_rows),
}
"""Env family -> (benchmark module, its entry function, adapter to bench rows)."""


def external_env_benchmarks(quick: bool, seconds: float) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of every env benchmark script (tagged with ``family``), and a note for each that
    could not run (so a missing script is visible in ``bench.md`` instead of silently absent)."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for family, (module_name, function, adapt) in EXTERNAL_BENCHES.items():
        module = importlib.import_module(module_name)
        if not hasattr(module, function):
            notes.append(f"{module_name} has no {function}(); {family} envs not measured")
            continue
        rows.extend({"family": family, **row} for row in adapt(module, quick, seconds))
    floor = next((r["steps_per_s"] for r in rows if r["name"] == "cartpole"), None)
    for row in rows:
        if floor and "ratio_to_cartpole" not in row:
            row["ratio_to_cartpole"] = row["steps_per_s"] / floor
    return rows, notes
