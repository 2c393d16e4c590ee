"""Skip-policy deployment (``exitgym.infer`` on SkipBlock / SwitchableDecision runs).

The answers must be the environment's episode outcomes on the same texts (prediction, exit layer,
cost, skip rates), batch 1 and batched; skipped blocks are left out of the backbone's calls; a
TokenExit run is refused towards ``exitgym.generate``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from exitgym.agents.mlp_policy import MLPPolicy, MLPPolicyConfig
from exitgym.backbones.heads import ExitHeads, HeadsConfig
from exitgym.backbones.registry import load_backbone
from exitgym.envs.skip_block import SkipBlockEnv
from exitgym.envs.switchable_decision import SwitchableDecisionEnv
from exitgym.inference import SkipInference
from tests.tiny_project import make_tiny_project

TEXTS = ["good fun x1", "awful boring x7 and more words here to pad", "great",
         "dull bad lovely x3 lovely", "fun", "boring boring x9 great dull"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, ExitHeads]:
    """A tiny 4-layer random-init BERT with a tokenizer and random heads."""
    names = make_tiny_project(tmp_path_factory.mktemp("skip-infer"))
    backbone = load_backbone(names["backbone"])
    with torch.random.fork_rng():
        torch.manual_seed(3)
        heads = ExitHeads(HeadsConfig(backbone.num_layers, backbone.hidden_size, 2))
    return backbone, heads


def _policy(env: object, seed: int) -> MLPPolicy:
    torch.manual_seed(seed)
    cfg = MLPPolicyConfig.from_spaces(env.observation_space, env.action_space, 16, 2, "pooled")
    return MLPPolicy(cfg).eval()


def _episodes(env: object, policy: MLPPolicy, n: int) -> dict[str, np.ndarray]:
    """Each input's outcome played through the single env, one episode per input."""
    keys = ("prediction", "exit_layer", "cost", "attention_skip_rate", "ffn_skip_rate",
            "token_skip_rate")
    rows = []
    for sid in range(n):
        obs, _ = env.reset(options={"sample_id": sid})
        done = False
        while not done:
            action = np.asarray(policy.act(obs[None], {}, deterministic=True))
            obs, _, done, _, info = env.step(action.reshape(env.action_space.shape))
        rows.append([info[k] for k in keys])
    return {k: np.array([r[i] for r in rows]) for i, k in enumerate(keys)}


IDS = {SkipBlockEnv: "exitgym/SkipBlock-v0", SwitchableDecisionEnv: "exitgym/SwitchableDecision-v0"}
CASES = [(SkipBlockEnv, {"allow_exit": True, "token_strategy": True, "policy_flops": 500.0}),
         (SkipBlockEnv, {}),
         (SwitchableDecisionEnv, {"policy_flops": 100.0})]


@pytest.mark.parametrize("family, kwargs", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_deployment_equals_the_env_episode_batch_1_and_batched(model, family, kwargs,
                                                              seed) -> None:
    backbone, heads = model
    env = family(backbone=backbone, heads=heads, inputs=TEXTS, labels=[0] * len(TEXTS),
                 max_length=16, **kwargs)
    policy = _policy(env, seed)
    want = _episodes(env, policy, len(TEXTS))
    engine = SkipInference(policy, backbone, heads, env_id=IDS[family], env_kwargs=kwargs,
                           max_length=16)
    for batch_size in (1, 4, len(TEXTS)):
        got = engine(TEXTS, batch_size=batch_size)
        np.testing.assert_array_equal(got.predictions, want["prediction"])
        np.testing.assert_array_equal(got.exit_layers, want["exit_layer"])
        np.testing.assert_allclose(got.cost, want["cost"], rtol=1e-12)
        np.testing.assert_allclose(got.attention_skip_rate, want["attention_skip_rate"])
        np.testing.assert_allclose(got.ffn_skip_rate, want["ffn_skip_rate"])
        np.testing.assert_allclose(got.token_skip_rate, want["token_skip_rate"])
        np.testing.assert_allclose(got.flops / got.full_flops, got.cost, rtol=1e-12)
        assert got.flops_speedup == pytest.approx(got.full_flops.sum() / got.flops.sum())
        assert got.seconds > 0 and got.env_id == IDS[family]


def test_skipped_blocks_are_not_computed_in_deployment(model) -> None:
    """Every attention / FFN call runs exactly the rows whose policy did not skip that block."""
    backbone, heads = model
    kwargs = {"policy_flops": 0.0}
    env = SwitchableDecisionEnv(backbone=backbone, heads=heads, inputs=TEXTS,
                                labels=[0] * len(TEXTS), max_length=16, **kwargs)
    policy = _policy(env, 5)
    engine = SkipInference(policy, backbone, heads, env_id="exitgym/SwitchableDecision-v0",
                           env_kwargs=kwargs, max_length=16)
    rows = {"att": 0, "ffn": 0}
    hooks = [m.register_forward_hook(lambda mod, i, o, kind=kind: rows.__setitem__(
        kind, rows[kind] + i[0].shape[0]))
        for layer in backbone.model.encoder.layer
        for kind, m in (("att", layer.attention), ("ffn", layer.intermediate))]
    try:
        got = engine(TEXTS, batch_size=len(TEXTS))
    finally:
        for hook in hooks:
            hook.remove()
    decided = backbone.num_layers - 1
    n = len(TEXTS)
    # layer 1 always runs; each later layer runs the rows that kept the block
    assert rows["att"] == n + round(float(((1 - got.attention_skip_rate) * decided).sum()))
    assert rows["ffn"] == n + round(float(((1 - got.ffn_skip_rate) * decided).sum()))
    assert (got.attention_skip_rate + got.ffn_skip_rate).sum() > 0  # the policy skipped some


def test_full_depth_baseline_costs_one_and_answers_with_the_last_head(model) -> None:
    backbone, heads = model
    run_all = np.zeros((1,), dtype=np.int64)

    class RunEverything:
        def reset(self, num_envs: int) -> None:
            pass

        def act(self, obs, infos, deterministic=True):
            return np.repeat(run_all, len(obs))

    engine = SkipInference(RunEverything(), backbone, heads, env_id="exitgym/SkipBlock-v0",
                           max_length=16)
    base = engine.full_depth(TEXTS, batch_size=2)
    full = engine(TEXTS, batch_size=2)
    np.testing.assert_array_equal(base.predictions, full.predictions)
    np.testing.assert_allclose(full.cost, 1.0, rtol=1e-12)
    np.testing.assert_allclose(base.full_flops, full.full_flops, rtol=1e-12)
    assert base.flops_speedup == pytest.approx(1.0) == full.flops_speedup
    assert (full.exit_layers == backbone.num_layers).all()


def test_bad_deployments_are_refused_with_what_to_do(model) -> None:
    backbone, heads = model
    with pytest.raises(ValueError, match="skip inference deploys policies of"):
        SkipInference(_policy(SkipBlockEnv(backbone=backbone, heads=heads, inputs=TEXTS,
                                           labels=[0] * 6, max_length=16), 0),
                      backbone, heads, env_id="exitgym/EarlyExit-v0")
    wrong = MLPPolicy(MLPPolicyConfig(obs_dim=7, nvec=(4,), hidden=8, num_layers=2))
    engine = SkipInference(wrong, backbone, heads, env_id="exitgym/SkipBlock-v0", max_length=16)
    with pytest.raises(ValueError, match="policy expects observations of size 7 but "
                                         "exitgym/SkipBlock-v0 has 34"):
        engine(TEXTS)


def test_infer_refuses_a_token_exit_run_towards_generate(monkeypatch, tmp_path: Path) -> None:
    import exitgym.inference as inference

    monkeypatch.setattr(inference, "run_env_id", lambda run: "exitgym/TokenExit-v0")
    with pytest.raises(ValueError, match=r"deploy it with exitgym.generate\(run_dir, prompts\)"):
        inference.infer(tmp_path, ["a text"])
    monkeypatch.setattr(inference, "run_env_id", lambda run: "exitgym/SkipBlock-v0")
    with pytest.raises(ValueError, match=r"\['budget'\] apply to early-exit runs"):
        inference.infer(tmp_path, ["a text"], budget=0.5)
