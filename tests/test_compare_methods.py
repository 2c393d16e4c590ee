"""Lexicographic, fixed-α and ConsistentEE agents inside ``compare``, on the tiny real task.

ConsistentEE retrains the exit heads, so its rows are only right when validation, test and
``replay --verify`` all run on the logits of *its* heads: the tests check those logits by hand
and that a tampered heads file is caught.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from exitgym.cli import main
from exitgym.data.prepare import get_cache
from exitgym.experiments.runs import RunDir
from exitgym.experiments.trajectories import load_trajectories, trajectory_files
from tests.tiny_project import make_tiny_project

FAST = ["--max-length", "16", "--steps", "6", "--batch-size", "8", "--num-envs", "8"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One comparison with every agent kind: budget-targeted, fixed α, lexicographic,
    ConsistentEE (one seed, few updates)."""
    root = tmp_path_factory.mktemp("cmpm")
    names = make_tiny_project(root)
    out = root / "cmp"
    data = ["--task", names["task"], "--backbone", names["backbone"]]
    with pytest.MonkeyPatch.context() as mp:  # the per-test cache dir (conftest), set earlier
        mp.setenv("EXITGYM_CACHE", str(tmp_path_factory.getbasetemp() / "exitgym-cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        code = main(["compare", *data, *FAST, "--rewards", "hardness", "--targets", "0.5",
                     "--fixed-alphas", "0.1", "--drops", "0.05,0.3", "--consistentee", "0.5",
                     "--rules", "oracle", "--seeds", "0,1", "--out", str(out)])
    assert code == 0
    return {"out": out, "names": names,
            "summary": json.loads((out / "summary.json").read_text())}


def test_every_agent_kind_has_validation_and_test_rows(compared) -> None:
    """Each trained agent is a greedy row (``-greedy``) and a curve of calibrated readings whose
    τ = 0.5 reading is the greedy one, on both splits."""
    summary = compared["summary"]
    rows, val = summary["rows"], summary["selection_rows"]
    for method, knobs in (("lexicographic", {0.05, 0.3}), ("consistentee", {0.5}),
                          ("reinforce-vanilla", {0.1}), ("reinforce-hardness-budget", {0.5})):
        for split_rows in (rows, val):
            greedy = [r for r in split_rows if r["method"] == method + "-greedy"]
            assert {r["knob"] for r in greedy} == knobs, method
            assert sorted(r["seed"] for r in greedy) == sorted([0, 1] * len(knobs)), method
            curve = [r for r in split_rows if r["method"] == method]
            for knob in knobs:
                for seed in (0, 1):
                    mine = [r for r in curve if r["knob"] == knob and r["seed"] == seed]
                    assert 0.5 in {r["tau"] for r in mine}, (method, knob, seed)
                    assert all(0.0 <= r["tau"] <= 1.0 for r in mine)
                    (half,) = [r for r in mine if r["tau"] == 0.5]
                    (plain,) = [r for r in greedy if r["knob"] == knob and r["seed"] == seed]
                    assert (half["accuracy"], half["cost"]) == pytest.approx(
                        (plain["accuracy"], plain["cost"]))
    # every reading's test episodes are recorded, named after its run and threshold
    names = {f.name for f in trajectory_files(compared["out"])}
    assert "lexicographic-d0.05-s0-t0.5.parquet" in names
    # The lexicographic run trained with its own step size and knob, not REINFORCE's.
    cfg = json.loads((compared["out"] / "runs" / "lexicographic-d0.05-s0" /
                      "config.json").read_text())["config"]
    assert cfg["agent"] == "lexicographic" and cfg["allowed_drop"] == 0.05
    assert cfg["reward"] == "flops" and cfg["lr"] is None
    report = (compared["out"] / "runs" / "lexicographic-d0.05-s0" / "report.md").read_text()
    assert "| lr | 0.1 |" in report  # the step size it trained with (LexicoConfig's default)


def test_budget_table_reads_validation_and_reports_the_same_points_on_test(compared) -> None:
    """Each budget row's selected points (knobs, τ, mixture weight) are looked up in the stored
    validation rows: their mixture costs at most the budget there, and no pure validation point
    within the budget beats it; the reported test accuracy is the same mixture of the same
    points' *test* rows. A table chosen on test fails the first check wherever the splits
    disagree, and one reported from other points fails the second."""
    summary = compared["summary"]

    def lookup(rows, method, seed, knob, tau):
        (found,) = [r for r in rows if r["method"] == method and r["seed"] == seed
                    and r["knob"] == knob and r.get("tau") == tau]
        return found

    checked = 0
    for row in summary["budget_table"]:
        method = row["method"]
        if method not in ("lexicographic", "reinforce-hardness-budget"):
            continue
        test_acc = []
        for seed, point in zip((0, 1), row["points"], strict=True):
            taus = point.get("tau", [None] * len(point["knob"]))
            weights = [point["weight"], 1 - point["weight"]][:len(point["knob"])]
            val = [lookup(summary["selection_rows"], method, seed, k, t)
                   for k, t in zip(point["knob"], taus, strict=True)]
            test = [lookup(summary["rows"], method, seed, k, t)
                    for k, t in zip(point["knob"], taus, strict=True)]
            cost = sum(w * r["cost"] for w, r in zip(weights, val, strict=True))
            acc = sum(w * r["accuracy"] for w, r in zip(weights, val, strict=True))
            assert cost <= row["budget"] + 1e-9
            pure = [r["accuracy"] for r in summary["selection_rows"] if r["method"] == method
                    and r["seed"] == seed and r["cost"] <= row["budget"] + 1e-12]
            assert acc >= max(pure) - 1e-9
            test_acc.append(sum(w * r["accuracy"] for w, r in zip(weights, test, strict=True)))
            checked += 1
        assert row["accuracy"] == pytest.approx(np.mean(test_acc))
    assert checked >= 4


def test_consistentee_runs_on_the_logits_of_its_own_saved_heads(compared) -> None:
    out, names = compared["out"], compared["names"]
    heads = out / "runs" / "consistentee-b0.5-s0" / "heads.safetensors"
    state = load_file(str(heads))
    test = get_cache(task=names["task"], backbone=names["backbone"], split="test",
                     max_length=16, progress=False)
    own = np.einsum("nlh,lhc->nlc", test.pooled, state["weight"]) + state["bias"]
    assert not np.allclose(own, test.logits, atol=1e-3)  # they are not the prepared heads
    ts = load_trajectories(out / "trajectories" / "consistentee-b0.5-s0-greedy.parquet")
    assert ts.meta["env_spec"]["heads_file"] == "runs/consistentee-b0.5-s0/heads.safetensors"
    assert ts.meta["env_spec"]["kwargs"]["observation"] == "hidden+depth"
    assert ts.meta["env_spec"]["kwargs"]["policy_flops"] > 0
    for rec in ts.records:
        logits = own[rec.sample_id, rec.exit_layer - 1]
        assert rec.prediction == int(np.argmax(logits))
        assert rec.correct == (rec.prediction == int(test.labels[rec.sample_id]))
        # the memorized layer is recomputed from the new heads' predictions
        preds = own[rec.sample_id].argmax(-1)
        wrong = np.flatnonzero(preds != test.labels[rec.sample_id])
        layers = len(preds)
        assert rec.memorized_layer == (min(int(wrong[-1]) + 2, layers) if wrong.size else 1)


def test_consistentee_in_compare_is_the_official_per_layer_policy_with_mean_of_k(
        compared) -> None:
    """The saved agent has one Linear(H, 32)-GELU-Linear(32, 1) net per layer, was trained
    with the mean-of-K baseline (K = 8 divides --batch-size 8) and is charged one net's FLOPs
    per decision (the old shared ReLU MLP with the self-critical baseline fails all three)."""
    from exitgym.agents.consistentee_policy import PerLayerExitPolicy
    from exitgym.backbones.flops import mlp_flops

    out = compared["out"]
    directory = out / "runs" / "consistentee-b0.5-s0"
    meta = json.loads((directory / "policy.json").read_text())
    assert meta["reinforce"]["baseline"] == "mean-of-k" and meta["reinforce"]["k"] == 8
    assert meta["reinforce"]["batch_size"] == 8
    policy = PerLayerExitPolicy.load(directory)
    state = load_file(str(directory / "policy.safetensors"))
    ts = load_trajectories(out / "trajectories" / "consistentee-b0.5-s0-greedy.parquet")
    num_layers, hidden = policy.config.num_layers, policy.config.hidden_size
    assert num_layers == ts.num_layers > 1
    assert sorted(state) == sorted(f"net.{layer}.{i}.{p}" for layer in range(num_layers)
                                   for i in (0, 2) for p in ("weight", "bias"))
    assert all(state[f"net.{layer}.0.weight"].shape == (32, hidden) and
               state[f"net.{layer}.2.weight"].shape == (1, 32) for layer in range(num_layers))
    assert ts.meta["env_spec"]["kwargs"]["policy_flops"] == mlp_flops([hidden, 32, 1])


def test_replay_verifies_consistentee_and_catches_other_heads(compared, capsys) -> None:
    out = compared["out"]
    assert any("consistentee" in f.name for f in trajectory_files(out))
    assert main(["replay", str(out), "--verify"]) == 0
    capsys.readouterr()
    heads = out / "runs" / "consistentee-b0.5-s0" / "heads.safetensors"
    original = heads.read_bytes()
    state = load_file(str(heads))
    state["bias"] = state["bias"][:, ::-1].copy()  # swap the labels' biases
    state["weight"] = state["weight"][:, :, ::-1].copy()  # and weights: predictions flip
    save_file(state, str(heads))
    name = heads.relative_to(out).as_posix()
    try:
        assert main(["replay", str(out), "--verify"]) == 1
        assert f"{heads} differs from what the run wrote" in capsys.readouterr().err
        RunDir(out).add_to_manifest(name)  # edited with its checksum: the replay must see it
        assert main(["replay", str(out), "--verify"]) == 1
        err = capsys.readouterr().err
        assert "replay mismatch" in err and "consistentee-b0.5-s0" in err
    finally:
        heads.write_bytes(original)
        RunDir(out).add_to_manifest(name)


def test_consistentee_fits_heads_on_their_rows_and_the_policy_on_held_out_rows() -> None:
    """With a policy cache the policy phases run on those rows (with the current heads) and the
    exit-layer head phase uses the greedy exits of the heads' own rows (other sizes: mixing
    them up fails or trains on the wrong samples)."""
    import gymnasium as gym

    from exitgym.agents.consistentee import ConsistentEE, ConsistentEEConfig
    from exitgym.agents.consistentee_policy import official_reinforce
    from exitgym.data.synthetic import synthetic_cache

    heads_rows, policy_rows = synthetic_cache(num_samples=96), synthetic_cache(48, seed=1)
    made = []

    def make_env(c):
        made.append(c.num_samples)
        return gym.make_vec("exitgym/EarlyExit-v0", num_envs=16, cache=c, reward="hardness",
                            alpha=0.5, observation="hidden+depth",
                            vectorization_mode="vector_entry_point")

    cfg = ConsistentEEConfig(rounds=1, head_epochs=2, policy_updates=2,
                             reinforce=official_reinforce(batch_size=16))
    run = ConsistentEE(heads_rows, make_env, cfg, policy_cache=policy_rows).run()
    assert made == [48, 96, 48]  # policy phase, exits on the heads' rows, last policy phase
    assert run.agent is not None and run.agent.num_samples == 48
    env_cache = run.agent.env.unwrapped.cache
    with torch.no_grad():
        expect = run.heads(torch.as_tensor(policy_rows.pooled)).numpy()
    assert np.allclose(env_cache.logits, expect, atol=1e-6)  # the returned heads, policy rows
    assert run.cache.num_samples == 96  # the heads' cache stays on their rows
