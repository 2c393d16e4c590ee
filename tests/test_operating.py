"""Deploying a trained exit policy at a budget (``exitgym.experiments.operating``): the reading is
chosen on validation, recorded in the run, evaluated and replayed as chosen, and ``infer`` runs
the live backbone with the same decisions as the cached env at that reading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exitgym.agents.calibrated import CalibratedExit
from exitgym.agents.rollout import evaluate
from exitgym.cli import main
from exitgym.experiments.binding import bound_cache
from exitgym.experiments.operating import OPERATING_FILE, operating_point
from exitgym.experiments.policies import load_exit_run, open_training_run
from tests.tiny_project import make_tiny_project

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("operating")
    names = make_tiny_project(root)
    run = root / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXITGYM_CACHE", str(tmp_path_factory.getbasetemp() / "exitgym-cache"))
        assert main(["train", "--task", names["task"], "--backbone", names["backbone"],
                     "--max-length", "16", "--steps", "4", "--batch-size", "8", "--num-envs",
                     "8", "--reward", "vanilla", "--alpha", "0.05", "--out", str(run)]) == 0
    return {"run": run, **names}


def _all_readings(run: Path) -> list[tuple[float, float, float]]:
    """(τ, validation cost, validation accuracy) of a fine τ grid, evaluated independently."""
    policy, spec = load_exit_run(run)
    val = spec.with_split("validation")
    env = val.make(8, bound_cache(run, val))
    out = []
    for tau in np.linspace(0.0, 1.0, 101):
        result = evaluate(CalibratedExit(policy, float(tau)), env)
        out.append((float(tau), result.cost, result.accuracy))
    return out


def test_the_budget_point_is_chosen_on_validation_and_recorded(trained) -> None:
    run = trained["run"]
    costs = sorted({c for _, c, _ in _all_readings(run)})
    budget = float(np.round(costs[len(costs) // 2] + 1e-3, 3))  # a budget inside the curve
    point = operating_point(run, budget=budget, num_envs=8)
    rec = point.record
    assert rec["val_cost"] <= budget and rec["split"] == "validation" and rec["readings"] >= 2
    assert isinstance(point.policy, CalibratedExit) and point.policy.tau == rec["tau"]
    # no reading of a fine independent τ grid within the budget validates better (beyond the
    # calibration grid's own resolution)
    best_in_budget = max(a for _, c, a in _all_readings(run) if c <= budget)
    assert rec["val_accuracy"] >= best_in_budget - 0.1
    stored = json.loads((run / OPERATING_FILE).read_text())
    assert stored[f"{budget:g}"] == rec
    again = operating_point(run, budget=budget, num_envs=8)
    assert again.record == rec and again.policy.tau == rec["tau"]  # read back, not re-chosen


def test_refusals_name_what_was_wrong(trained) -> None:
    run = trained["run"]
    with pytest.raises(ValueError, match="exactly one of budget"):
        operating_point(run)
    with pytest.raises(ValueError, match="exactly one of budget"):
        operating_point(run, budget=0.5, tau=0.5)
    with pytest.raises(ValueError, match="budget must be a FLOPs fraction > 0"):
        operating_point(run, budget=-0.5)
    with pytest.raises(ValueError, match="cheapest costs"):
        operating_point(run, budget=0.01, num_envs=8)


def test_evaluate_at_a_budget_records_the_point_and_replays_with_the_policy(trained,
                                                                            capsys) -> None:
    run = trained["run"]
    assert main(["evaluate", str(run), "--tau", "0.5", "--num-envs", "8"]) == 0
    assert main(["evaluate", str(run), "--num-envs", "8"]) == 0
    half = json.loads((run / "eval-test-t0.5.json").read_text())
    greedy = json.loads((run / "eval-test.json").read_text())
    assert (half["accuracy"], half["cost"]) == (greedy["accuracy"], greedy["cost"])
    assert main(["evaluate", str(run), "--budget", "0.9", "--num-envs", "8"]) == 0
    assert "operating point" in capsys.readouterr().out
    chosen = json.loads((run / "eval-test-b0.9.json").read_text())
    assert chosen["operating_point"]["val_cost"] <= 0.9
    # --policy re-runs the saved policy *at the recorded reading* on every recorded episode
    assert main(["replay", str(run), "--verify", "--policy"]) == 0
    out = capsys.readouterr().out
    assert "eval-test-b0.9" in out or "policy" in out


def test_infer_at_a_budget_equals_the_cached_env_at_that_reading(trained) -> None:
    import exitgym

    run = trained["run"]
    point = operating_point(run, budget=0.9, num_envs=8)
    policy, spec = load_exit_run(run)
    test = spec.with_split("test")
    cache = bound_cache(run, test)
    texts = list(cache.texts)
    live = exitgym.infer(str(run), texts, budget=0.9)
    assert live.operating_point == point.record
    env = test.make(8, cache)
    reading = CalibratedExit(policy, point.record["tau"])
    cached = evaluate(reading, env, sample_ids=range(len(texts)))
    assert live.exit_layers.tolist() == [r.exit_layer for r in cached.records]
    assert live.predictions.tolist() == [r.prediction for r in cached.records]
    with pytest.raises(ValueError, match="read a run's policy"):
        exitgym.infer(policy, texts, budget=0.5)
    assert open_training_run(run).config["command"] == "train"


def test_the_bench_deploys_the_policy_and_the_best_rule_at_their_validation_points(
        trained, tmp_path: Path) -> None:
    """Both deployed points are the cheapest within the allowed loss on validation; the rows
    report their live test accuracy, and the RL row acts as its chosen reading."""
    from exitgym.bench.config import BenchConfig
    from exitgym.bench.pipeline import inference_section
    from exitgym.data.config import DataConfig

    data = DataConfig(task=trained["task"], backbone=trained["backbone"], max_length=16)
    cfg = BenchConfig(out=str(tmp_path), data=data, quick=True, max_loss=0.2)
    rl, rule = inference_section(cfg, str(trained["run"]))
    assert (rl["category"], rule["category"]) == ("rl", "rule")
    for entry in (rl, rule):
        point = entry["operating_point"]
        assert point["max_loss"] == 0.2 and point["split"] == "validation"
        assert point["val_accuracy"] >= point["full_depth_val_accuracy"] - 0.2 - 1e-12
        assert {r["mode"] for r in entry["rows"]} == {"batch1", "batched"}
        assert all(0.0 <= r["exit_accuracy"] <= 1.0 for r in entry["rows"])
    assert rule["policy"]["agent"] in ("entropy", "maxprob", "patience")
    recorded = json.loads((trained["run"] / OPERATING_FILE).read_text())
    assert recorded["loss<=0.2"]["tau"] == rl["operating_point"]["tau"]
    # no rule reading of the candidates is cheaper while within the loss
    assert rule["operating_point"]["readings"] > 3


def test_a_cost_conditioned_run_is_deployed_at_a_cost_weight_and_threshold(
        trained, tmp_path: Path, capsys) -> None:
    """One conditioned policy serves every budget: the point records the α (and τ) it reads,
    evaluate at that budget records it, and replay --verify --policy re-runs the policy at that
    α and τ on every recorded episode."""
    run = tmp_path / "cond"
    assert main(["train", "--task", trained["task"], "--backbone", trained["backbone"],
                 "--max-length", "16", "--steps", "4", "--batch-size", "8", "--num-envs", "8",
                 "--reward", "hardness", "--alpha", "0.2", "--cost-conditioned",
                 "--out", str(run)]) == 0
    point = operating_point(run, budget=1.2, num_envs=8)
    assert point.record["alpha"] is not None and point.record["val_cost"] <= 1.2
    assert point.policy.policy.alpha == pytest.approx(point.record["alpha"])
    assert main(["evaluate", str(run), "--budget", "1.2", "--num-envs", "8"]) == 0
    chosen = json.loads((run / "eval-test-b1.2.json").read_text())["operating_point"]
    assert (chosen["alpha"], chosen["tau"]) == (point.record["alpha"], point.record["tau"])
    capsys.readouterr()
    assert main(["replay", str(run), "--verify", "--policy"]) == 0
