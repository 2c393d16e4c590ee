"""``exitgym.infer``: live early-exit inference equals the cached env's decisions, in both modes."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig

import exitgym
from exitgym.agents.base import evaluate
from exitgym.agents.mlp_policy import MLPPolicy, MLPPolicyConfig
from exitgym.agents.rules import PatienceExit
from exitgym.backbones.cache import build_cache
from exitgym.backbones.heads import ExitHeads, HeadsConfig
from exitgym.backbones.registry import BACKBONE_ALIASES, load_backbone
from exitgym.envs.early_exit import EarlyExitEnv
from exitgym.inference import ExitInference, InferenceResult, infer

NUM_LAYERS = 4
NUM_LABELS = 3
POLICY_FLOPS = 500.0
WORDS = ("the film was good bad slow brilliant dull plot actors scene music long short "
         "funny sad never always quite really").split()


class MaxProbPolicy:
    """Hand-built exit policy on the ``features`` view: exit once max prob exceeds theta."""

    required_observation = "features"

    def __init__(self, theta: float) -> None:
        self.theta = theta

    def reset(self, num_envs: int) -> None:
        """Stateless."""

    def act(self, obs: np.ndarray, infos: Any = None, deterministic: bool = True) -> np.ndarray:
        return (np.asarray(obs)[:, 1] > self.theta).astype(np.int64)


class HiddenSignPolicy:
    """Reads the ``hidden+prev`` view: exit from layer 2 on once pooled coordinate 0 is high."""

    required_observation = "hidden+prev"
    hidden: ClassVar[int] = 32

    def reset(self, num_envs: int) -> None:
        """Stateless."""

    def act(self, obs: np.ndarray, infos: Any = None, deterministic: bool = True) -> np.ndarray:
        obs = np.asarray(obs)
        return ((obs[:, 0] > -0.6) & (obs[:, self.hidden] != 0.0)).astype(np.int64)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    tokenizer = AutoTokenizer.from_pretrained(str(BACKBONE_ALIASES["minilm-l6"]()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32,
                        num_hidden_layers=NUM_LAYERS, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128)
    bb = load_backbone(config, tokenizer=tokenizer, pooling="mean", seed=0)
    torch.manual_seed(0)
    heads = ExitHeads(HeadsConfig(num_layers=NUM_LAYERS, hidden_size=32, num_labels=NUM_LABELS,
                                  label_names=("neg", "neu", "pos"))).eval()
    with torch.no_grad():
        for p in heads.parameters():
            p.mul_(8.0)  # spread the probabilities so the exit features vary across texts
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 25)))) for _ in range(40)]
    labels = rng.integers(0, NUM_LABELS, size=len(texts))
    cache = build_cache(bb, heads, texts, labels, label_names=("neg", "neu", "pos"),
                        batch_size=1, progress=False)
    return {"bb": bb, "heads": heads, "texts": texts, "cache": cache}


def policies() -> dict[str, Any]:
    return {"maxprob": MaxProbPolicy(0.8), "patience": PatienceExit(t=1),
            "hidden": HiddenSignPolicy()}


def env_decisions(setup: dict[str, Any], policy: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    env = EarlyExitEnv(cache=setup["cache"], observation=policy.required_observation,
                       policy_flops=POLICY_FLOPS)
    result = evaluate(policy, env, sample_ids=np.arange(len(setup["texts"])))
    recs = result.records
    return (np.array([r.exit_layer for r in recs]), np.array([r.prediction for r in recs]),
            np.array([r.cost for r in recs]))


@pytest.mark.parametrize("name", sorted(policies()))
@pytest.mark.parametrize("batch_size", [1, 7])
def test_infer_takes_the_cached_envs_decisions(setup: dict[str, Any], name: str,
                                               batch_size: int) -> None:
    policy = policies()[name]
    layers, preds, costs = env_decisions(setup, policy)
    assert len(set(layers.tolist())) >= 2, "the fixture must make the policy exit at varied layers"
    engine = ExitInference(policy, setup["bb"], setup["heads"], policy_flops=POLICY_FLOPS)
    out = engine(setup["texts"], batch_size=batch_size, record=True)
    np.testing.assert_array_equal(out.exit_layers, layers)
    np.testing.assert_array_equal(out.predictions, preds)
    np.testing.assert_allclose(out.cost, costs, rtol=1e-12)
    # The policy saw the env's observations (float noise only) up to each text's exit.
    table = EarlyExitEnv(cache=setup["cache"], observation=policy.required_observation,
                         policy_flops=POLICY_FLOPS).tables.obs
    for k, layer in enumerate(out.exit_layers):
        np.testing.assert_allclose(out.observations[k, :layer], table[k, :layer], atol=1e-5)
        assert not out.observations[k, layer:].any()


def test_flops_and_cost_follow_the_cache_formulas(setup: dict[str, Any]) -> None:
    cache = setup["cache"]
    out = infer(MaxProbPolicy(0.8), setup["texts"], backbone=setup["bb"], heads=setup["heads"],
                policy_flops=POLICY_FLOPS)
    rows = np.arange(len(out.exit_layers))
    spent = cache.cum_flops[rows, out.exit_layers - 1] + POLICY_FLOPS * out.exit_layers
    np.testing.assert_array_equal(out.lengths, cache.lengths)
    np.testing.assert_allclose(out.flops, spent, rtol=1e-12)
    np.testing.assert_allclose(out.full_flops, cache.full_flops, rtol=1e-12)
    np.testing.assert_allclose(out.cost, spent / cache.full_flops, rtol=1e-12)
    assert out.flops_speedup == pytest.approx(cache.full_flops.sum() / spent.sum())
    assert out.labels == [("neg", "neu", "pos")[p] for p in out.predictions]


@pytest.mark.parametrize("name", sorted(policies()))
def test_compaction_gives_batch_one_results(setup: dict[str, Any], name: str) -> None:
    engine = ExitInference(policies()[name], setup["bb"], setup["heads"])
    single = engine(setup["texts"], batch_size=1)
    for batch_size in (3, 16, 64):
        batched = engine(setup["texts"], batch_size=batch_size)
        np.testing.assert_array_equal(batched.exit_layers, single.exit_layers)
        np.testing.assert_array_equal(batched.predictions, single.predictions)
        np.testing.assert_array_equal(batched.cost, single.cost)


def test_exited_rows_leave_the_batch(setup: dict[str, Any], monkeypatch) -> None:
    """Later layers really run on fewer rows: row-layers run == sum of exit layers."""
    bb = setup["bb"]
    rows_run: list[tuple[int, int]] = []
    original = bb.layer

    def counting(i: int, state: Any, **kw: Any) -> Any:
        rows_run.append((i, state.batch_size))
        return original(i, state, **kw)

    monkeypatch.setattr(bb, "layer", counting)
    engine = ExitInference(MaxProbPolicy(0.8), bb, setup["heads"])
    out = engine(setup["texts"], batch_size=len(setup["texts"]))
    per_layer = [b for _, b in rows_run]
    assert per_layer == sorted(per_layer, reverse=True)
    assert per_layer[-1] < per_layer[0]
    assert sum(per_layer) == int(out.exit_layers.sum())
    for layer, rows in rows_run:
        assert rows == int((out.exit_layers > layer).sum())


def test_full_depth_baseline_is_the_last_head(setup: dict[str, Any]) -> None:
    cache = setup["cache"]
    engine = ExitInference(MaxProbPolicy(2.0), setup["bb"], setup["heads"])  # never exits early
    for batch_size in (1, 8):
        base = engine.full_depth(setup["texts"], batch_size=batch_size)
        np.testing.assert_array_equal(base.predictions, cache.logits[:, -1].argmax(-1))
        np.testing.assert_allclose(base.flops, cache.full_flops, rtol=1e-12)
        assert base.flops_speedup == pytest.approx(1.0)
    never = engine(setup["texts"])
    assert (never.exit_layers == NUM_LAYERS).all()
    np.testing.assert_array_equal(never.predictions, cache.logits[:, -1].argmax(-1))


def test_trained_run_deploys_with_the_runs_own_decisions(setup: dict[str, Any], tmp_path) -> None:
    """``exitgym train`` -> run directory -> ``exitgym.infer(run)`` reproduces the run's eval."""
    from exitgym.data.config import DataConfig
    from exitgym.experiments.configs import TrainConfig
    from exitgym.experiments.training import train
    from exitgym.experiments.trajectories import load_trajectories

    cache = setup["cache"]
    cfg = TrainConfig(data=DataConfig(task="synthetic", backbone="tiny"), steps=3, batch_size=16,
                      num_envs=8, checkpoint_every=3, reward="vanilla", alpha=0.5)
    train(cfg, tmp_path / "run", caches={"policy": cache, "test": cache}, progress=False)
    out = exitgym.infer(tmp_path / "run", list(cache.texts), backbone=setup["bb"],
                        heads=setup["heads"], batch_size=5)
    assert isinstance(out, InferenceResult)
    records = load_trajectories(tmp_path / "run" / "trajectories" / "eval-test.parquet").records
    by_id = {r.sample_id: r for r in records}
    np.testing.assert_array_equal(out.exit_layers, [by_id[k].exit_layer for k in range(40)])
    np.testing.assert_array_equal(out.predictions, [by_id[k].prediction for k in range(40)])
    np.testing.assert_allclose(out.cost, [by_id[k].cost for k in range(40)], rtol=1e-9)


@pytest.mark.parametrize(
    ("texts", "kwargs", "error", "match"),
    [
        ([], {}, ValueError, "texts is empty"),
        ("one string", {}, TypeError, "list of strings"),
        (["ok", 3], {}, TypeError, r"texts\[1\] is int"),
        (["ok"], {"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        (["ok"], {"batch_size": 2.5}, TypeError, "batch_size must be a positive int"),
    ],
)
def test_bad_calls_name_the_problem(setup: dict[str, Any], texts: Any, kwargs: dict[str, Any],
                                    error: type[Exception], match: str) -> None:
    engine = ExitInference(MaxProbPolicy(0.8), setup["bb"], setup["heads"])
    with pytest.raises(error, match=match):
        engine(texts, **kwargs)


def test_bad_construction_names_the_problem(setup: dict[str, Any], tmp_path) -> None:
    bb, heads = setup["bb"], setup["heads"]
    with pytest.raises(ValueError, match="needs backbone= and heads="):
        infer(MaxProbPolicy(0.8), ["text"])
    with pytest.raises(TypeError, match="Policy protocol"):
        ExitInference(object(), bb, heads)
    wrong = MLPPolicy(MLPPolicyConfig(obs_dim=7, nvec=(2,), observation="features"))
    with pytest.raises(ValueError, match="observations of size 7"):
        ExitInference(wrong, bb, heads)
    with pytest.raises(ValueError, match="policy_flops must be a finite number"):
        ExitInference(MaxProbPolicy(0.8), bb, heads, policy_flops=float("nan"))
    with pytest.raises(ValueError, match="unknown observation view"):
        ExitInference(MaxProbPolicy(0.8), bb, heads, observation="features+bogus")
    from exitgym.experiments.runs import RunError

    with pytest.raises(RunError, match="not an exitgym run directory"):
        infer(tmp_path, ["text"])
