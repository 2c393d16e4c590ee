"""The benchmark's measurements and outputs (tiny sizes; real numbers come from `exitgym bench`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exitgym.bench import BenchConfig
from exitgym.bench.finetune import finetune_speed
from exitgym.bench.measure import flops_check, inference_speed
from exitgym.bench.pipeline import demo_seconds
from exitgym.bench.report import to_markdown
from exitgym.inference import ExitInference
from exitgym.utils.configs import add_arguments, from_args
from tests.test_infer import MaxProbPolicy, setup  # noqa: F401, F811 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_flops_check_rows_compare_model_and_counter() -> None:
    rows = flops_check((8, 16), quick=True)
    assert [r["length"] for r in rows] == [8, 16]
    for r in rows:
        assert r["ratio_matmul"] == 1.0  # matrix products are counted exactly
        assert r["ratio_total"] == pytest.approx(r["model_flops"] / r["counted_flops"])
        assert 1.0 < r["ratio_total"] < 1.1  # plus element-wise work, a larger share when tiny


def test_inference_speed_rows_are_consistent(setup: dict[str, Any]) -> None:  # noqa: F811
    engine = ExitInference(MaxProbPolicy(0.8), setup["bb"], setup["heads"])
    texts = setup["texts"][:12]
    labels = np.zeros(len(texts), dtype=np.int64)
    rows = inference_speed(engine, texts, labels, {"batch1": 1, "batched": 4}, repeats=1)
    reference = engine(texts)
    for row in rows:
        assert row["num_texts"] == 12
        assert row["wall_speedup"] == pytest.approx(row["full_s"] / row["exit_s"])
        assert row["realised_fraction"] == pytest.approx(row["wall_speedup"] / row["flops_speedup"])
        assert row["flops_speedup"] == pytest.approx(reference.flops_speedup)
        assert row["mean_exit_layer"] == pytest.approx(reference.exit_layers.mean())
        assert sum(row["exit_layer_histogram"]) == 12
        assert row["exit_accuracy"] == pytest.approx(float((reference.predictions == 0).mean()))


def test_demo_time_is_read_from_the_newest_demo_report(tmp_path: Path) -> None:
    assert demo_seconds(tmp_path) == (None, None)
    for name, total in (("20260101-000000-demo", 400.5), ("20260102-000000-demo", 312.0)):
        run = tmp_path / name
        run.mkdir()
        (run / "report.md").write_text(f"# demo\n\n## Wall time\n\nprepare 12.0 s (load 1.0 s), "
                                       f"train + rules + report 90.1 s, total {total} s on this "
                                       "machine.\n")
    seconds, where = demo_seconds(tmp_path)
    assert seconds == 312.0 and where is not None and where.endswith("20260102-000000-demo")


def test_finetune_speed_times_both_trainers_on_the_same_batches() -> None:
    result = finetune_speed(BenchConfig(quick=True))
    assert result["steps"] == 2 and result["batch_size"] == 32  # 60 rows cut to 3 x 32 -> 2
    assert result["ratio_to_hf"] == pytest.approx(
        min(result["hf_s"]) / min(result["exitgym_s"]))
    assert result["goal_met"] == (result["ratio_to_hf"] >= 0.8)


def test_flags_map_onto_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, BenchConfig)
    cfg = from_args(BenchConfig, parser.parse_args(["--alphas", "0.05,0.3", "--num-texts", "9",
                                                    "--out", "x"]))
    assert cfg == BenchConfig(out="x", alphas=(0.05, 0.3), num_texts=9)
    for bad in (["--alphas", "a,b"], ["--alphas", "-1"], ["--batch-size", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_markdown_puts_rates_next_to_ratios() -> None:
    row = {"mode": "batch1", "batch_size": 1, "num_texts": 10, "full_ms_per_text": 40.0,
           "exit_ms_per_text": 10.0, "full_texts_per_s": 25.0, "exit_texts_per_s": 100.0,
           "wall_speedup": 4.0, "flops_speedup": 4.5, "realised_fraction": 4.0 / 4.5,
           "goal": 0.8, "goal_met": True, "mean_exit_layer": 1.5, "full_accuracy": 0.8,
           "exit_accuracy": 0.75}
    result = {
        "total_s": 12.0,
        "machine": {"date": "D", "processor": "cpu", "cpus": 2, "platform": "linux",
                    "load_average_1min": 1.0, "torch_threads": 1, "versions": {"torch": "2"}},
        "inference": {"policies": [
            {"policy": {"agent": "reinforce", "reward": "vanilla", "alpha": 0.2},
             "category": "rl", "operating_point": {"tau": 0.3125, "max_loss": 0.01},
             "split": "validation", "rows": [row]},
            {"policy": {"agent": "entropy"}, "category": "rule",
             "operating_point": {"knob": 0.4, "max_loss": 0.01}, "split": "validation",
             "rows": [row]}]},
        "env_throughput": {"rows": [{"family": "early exit", "name": "cartpole",
                                     "env": "CartPole-v1", "steps_per_s": 20000.0,
                                     "ratio_to_cartpole": 1.0}], "notes": ["skip: missing"]},
        "flops_check": {"rows": [{"config": "c", "length": 8, "model_flops": 2e9,
                                  "counted_flops": 1.98e9, "ratio_matmul": 1.0,
                                  "ratio_total": 1.0101}]},
        "timings": {"prepare_s": 3.0, "prepare_built": False, "prepare_fresh_s": 5.0,
                    "prepare_fresh_rows": 60, "train_s": [2.0], "train_steps": 3,
                    "runs": ["r"], "demo_s": None, "demo_run": None},
        "finetune": {"steps": 20, "batch_size": 32, "threads": 1, "mean_tokens": 25.5,
                     "exitgym_steps_per_s": 1.5, "hf_steps_per_s": 1.2, "ratio_to_hf": 1.25,
                     "goal": 0.8, "goal_met": True, "exitgym_s": [13.3, 14.0],
                     "hf_s": [16.7, 17.0]},
    }
    text = to_markdown(result)
    assert ("| exitgym `finetune` (every exit, embeddings frozen) | 1.500 | 1.25 | 0.8 (met) |"
            in text and "| plain HF step (AutoModel + AdamW) | 1.200 | 1.00 | |" in text)
    assert ("| reinforce vanilla α=0.2 | τ=0.3125 | batch1 | 1 | 40.00 | 10.00 | 25.0 | 100.0 | "
            "4.00x | 4.50x | 89 % | met (>= 80 %) | 1.50 | 0.800 | 0.750 |") in text
    assert "| rule: entropy | knob 0.4 | batch1 |" in text and "within 0.010 of full" in text
    assert "| early exit | CartPole-v1 | 20,000 | 1.00 | n/a | n/a |" in text
    assert "| c | 8 | 2.0000 | 1.9800 | 1.0000 | 1.0101 |" in text
    assert "- skip: missing" in text and "cache reused, verified" in text


def test_only_selects_sections_with_what_they_read() -> None:
    from exitgym.bench import SECTIONS, selected
    from exitgym.utils.configs import add_arguments, from_args

    assert selected(()) == tuple(SECTIONS)
    assert selected(("generation",)) == ("machine", "generation")
    assert selected(("inference", "flops_check")) == ("machine", "flops_check", "timings",
                                                      "inference")
    with pytest.raises(ValueError, match="unknown bench sections \\['gen'\\]; allowed"):
        selected(("gen",))
    parser = argparse.ArgumentParser()
    add_arguments(parser, BenchConfig)
    assert from_args(BenchConfig, parser.parse_args(["--only", "generation"])).only == (
        "generation",)
    # bench.md of a partial result has the measured sections only
    text = to_markdown({"machine": {"date": "d", "processor": "x", "platform": "p", "cpus": 2,
                                    "load_average_1min": 0.5, "torch_threads": 1,
                                    "versions": {"torch": "t"}},
                        "generation": {"backbone": "b", "rows": []}, "total_s": 1.0})
    assert "## Generation (b)" in text and "Inference" not in text
