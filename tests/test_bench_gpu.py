"""The bench's gpu measurements run on any device: here on the CPU with tiny models (the section
itself is skipped without CUDA; see tests/test_devices.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from exitgym.backbones.decoder_registry import load_decoder
from exitgym.bench.gpu import (
    GENERATE_BATCHES,
    INFER_BATCHES,
    generate_rates,
    gpu_markdown,
    infer_rates,
    live_env_rate,
)
from tests.test_devices import models  # noqa: F401
from tests.tiny_decoders import tiny_decoder_configs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_generate_rates_compare_the_same_tokens_as_hf() -> None:
    bb = load_decoder(tiny_decoder_configs()["llama"])
    rows = generate_rates(bb, num_prompts=8, tokens=3, device="cpu", repeats=1)
    assert [r["batch_size"] for r in rows] == list(GENERATE_BATCHES)
    for r in rows:
        assert r["same_tokens_as_hf"] is True  # float32 on one device: token for token
        assert r["num_prompts"] == 8 and r["new_tokens"] == 3
        assert r["ratio_to_hf_generate"] == pytest.approx(
            r["tokens_per_s"] / r["hf_generate_tokens_per_s"])


def test_infer_and_live_env_rates_on_the_cpu(models: dict[str, Any]) -> None:  # noqa: F811
    bb, heads, texts = models["bb"], models["heads"], models["texts"]
    rows = infer_rates(bb, heads, texts, np.zeros(len(texts), dtype=np.int64), "cpu", 1)
    assert [r["mode"] for r in rows] == list(INFER_BATCHES)
    assert [r["batch_size"] for r in rows] == [1, 32, 256]
    for r in rows:
        assert r["num_texts"] == len(texts)
        assert r["realised_fraction"] == pytest.approx(r["wall_speedup"] / r["flops_speedup"])
        assert 1 <= r["mean_exit_layer"] <= bb.num_layers
    live = live_env_rate(bb, heads, texts[:8], "cpu", seconds=0.2)
    assert live["env_device"] == "cpu" and live["steps"] > 0
    assert live["steps_per_s"] > 0 and 1 <= live["mean_episode_length"] <= bb.num_layers


def test_the_markdown_of_a_measured_section() -> None:
    entry = {"device": {"device": "cuda:0", "name": "H200", "torch": "2.x", "cuda": "12.x"},
             "prepare": {"prepare_s": 12.34}, "finetune": {"error": "RuntimeError: oom"},
             "infer": [{"batch_size": 1, "wall_speedup": 1.5, "flops_speedup": 2.0,
                        "realised_fraction": 0.75}],
             "live_env": {"steps_per_s": 900.0},
             "generate": [{"batch_size": 8, "tokens_per_s": 400.0,
                           "ratio_to_hf_generate": 1.1, "same_tokens_as_hf": True}]}
    text = "\n".join(gpu_markdown({"gpu": entry}))
    assert "H200 (cuda:0), torch 2.x, CUDA 12.x." in text
    assert "- cold prepare: 12.3 s" in text
    assert "- finetune: not measured (RuntimeError: oom)" in text
    assert "- infer batch 1: wall 1.50x, FLOPs 2.00x, realised 0.75" in text
    assert "- live EarlyExit-v0: 900 steps/s" in text
    assert "- generate batch 8, exits off: 400 tokens/s, 1.10x HF generate, same tokens: True" \
        in text


def test_the_whole_section_runs_on_the_cpu_with_quick_sizes() -> None:
    """What ``gpu_section`` runs with CUDA, here on the CPU: every measurement wired up."""
    from exitgym.bench.config import BenchConfig
    from exitgym.bench.gpu import measure_on

    entry = measure_on(BenchConfig(quick=True, env_seconds=0.2), "cpu")
    errors = {k: v for k, v in entry.items() if isinstance(v, dict) and "error" in v}
    assert errors == {}
    assert entry["device"]["device"] == "cpu"
    assert entry["prepare"]["prepare_s"] > 0 and entry["prepare"]["rows_per_split"] > 0
    assert entry["finetune"]["steps"] > 0 and entry["finetune"]["ratio_to_hf"] > 0
    assert [r["batch_size"] for r in entry["infer"]] == [1, 32, 256]
    assert entry["live_env"]["env_device"] == "cpu"
    assert all(r["same_tokens_as_hf"] for r in entry["generate"])
    assert len(gpu_markdown({"gpu": entry})) == 5 + 1 + 1 + 3 + 1 + 2
