"""Checks that need a CUDA device (issue 24): skipped without one, run by scripts/gpu_check.sh.

Written without a GPU at hand (none was lent to this project's sessions): they have not run yet.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import exitgym
from exitgym.backbones import hf_compat
from exitgym.backbones.cache import load_cache
from exitgym.backbones.decoder_registry import load_decoder
from exitgym.data.prepare import PrepareConfig, prepare
from exitgym.envs.skip_core import synthetic_world
from exitgym.inference import ExitInference
from tests.test_early_exit import live_setup  # noqa: F401
from tests.test_infer import POLICY_FLOPS, MaxProbPolicy, env_decisions, setup  # noqa: F401
from tests.tiny_decoders import random_prompts, tiny_decoder_configs
from tests.tiny_project import PREPARE_OPTIONS, make_tiny_project

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("batch_size", [1, 7])
def test_infer_on_cuda_takes_the_cached_envs_decisions(setup: dict[str, Any],  # noqa: F811
                                                       batch_size: int) -> None:
    """The layer-by-layer reference (the cache, computed on the CPU) and CUDA inference agree."""
    policy = MaxProbPolicy(0.8)
    layers, preds, costs = env_decisions(setup, policy)
    engine = ExitInference(policy, setup["bb"], setup["heads"], policy_flops=POLICY_FLOPS,
                           device="cuda")
    try:
        out = engine(setup["texts"], batch_size=batch_size)
    finally:
        setup["bb"].model.cpu()
        setup["heads"].cpu()
    # float32 kernels differ from the CPU's in the last bits: a threshold may flip on a tie
    assert np.mean(out.exit_layers == layers) >= 0.95
    same = out.exit_layers == layers
    np.testing.assert_array_equal(out.predictions[same], preds[same])
    np.testing.assert_allclose(out.cost[same], costs[same], rtol=1e-12)


def test_a_cache_prepared_on_cuda_reads_like_the_cpu_one(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Same directory and cache key on both devices; pooled states equal within float noise."""
    project = make_tiny_project(tmp_path_factory.mktemp("cuda") / "project")
    options = {**project, **PREPARE_OPTIONS, "heads": "frozen"}
    on_cpu = prepare(PrepareConfig(**options, device="cpu"), splits=("validation",),
                     progress=False, verbose=False)
    on_cuda = prepare(PrepareConfig(**options, device="cuda"), splits=("validation",),
                      progress=False, verbose=False, force=True)
    assert on_cuda.directory == on_cpu.directory
    meta = json.loads((on_cuda.directory / "prepare_config.json").read_text())
    assert meta["prepared_on"]["device"].startswith("cuda")
    assert meta["prepared_on"]["cuda"] == torch.version.cuda
    cache = load_cache(on_cuda.cache_paths["validation"])
    assert cache.meta["prepared_on"]["device"].startswith("cuda")
    assert cache.pooled.dtype == np.float32  # read anywhere: plain float32 arrays


def test_a_live_episode_on_cuda_equals_the_cached_one(live_setup: Any) -> None:  # noqa: F811
    cache, backbone, heads = live_setup
    kwargs = {"cache": cache, "observation": "features+hidden", "reward": "hardness"}
    cached = gym.make("exitgym/EarlyExit-v0", **kwargs)
    live = gym.make("exitgym/EarlyExit-v0", live=True, backbone=backbone, heads=heads,
                    device="cuda", **kwargs)
    try:
        assert live.unwrapped.device == "cuda:0"
        for sample in range(cache.num_samples):
            obs_c, _ = cached.reset(options={"sample_id": sample})
            obs_l, _ = live.reset(options={"sample_id": sample})
            np.testing.assert_allclose(obs_l, obs_c, atol=1e-4)
            for layer in range(1, cache.num_layers + 1):
                action = int(layer == cache.num_layers)
                obs_c, r_c, *_ = cached.step(action)
                obs_l, r_l, *_ = live.step(action)
                np.testing.assert_allclose(obs_l, obs_c, atol=1e-4)
                assert r_l == pytest.approx(r_c, abs=1e-4)
    finally:
        backbone.model.cpu()
        heads.cpu()


def test_generate_on_cuda_with_exits_off_is_hf_greedy_token_for_token() -> None:
    bb = load_decoder(tiny_decoder_configs()["llama"])
    prompts = random_prompts([7, 3, 5, 9, 4, 6, 8, 2, 5])
    on_cpu = [bb.greedy([p], 6)[0].tolist() for p in prompts]
    for batch in (1, 8):
        out = exitgym.generate(None, prompts, max_new_tokens=6, batch_size=batch, backbone=bb,
                               progress=False, device="cuda")
        assert bb.device.type == "cuda"
        with torch.inference_mode():
            hf = [hf_compat.greedy_generate(bb.model, ids, torch.ones_like(ids), 6)[0].tolist()
                  for ids in (torch.tensor([p], device=bb.device) for p in prompts)]
        assert out.generated_ids == hf
        assert out.generated_ids == on_cpu  # float32 on both: the same argmax, tiny model


def test_token_exit_and_skip_envs_on_cuda_equal_the_cpu() -> None:
    prompts = random_prompts([5, 3])
    infos = {}
    for device in ("cpu", "cuda"):
        env = gym.make("exitgym/TokenExit-v0", backbone=load_decoder(
            tiny_decoder_configs()["llama"]), prompts=prompts, max_new_tokens=3, device=device,
            observation="features+logits", kv="recompute")
        env.reset(seed=0, options={"sample_id": 0})
        done, actions = False, iter([0, 1, 1, 0, 0, 1] * 3)
        while not done:
            _, _, done, _, info = env.step(next(actions))
        infos[device] = info
    assert infos["cuda"]["generated_ids"] == infos["cpu"]["generated_ids"]
    assert infos["cuda"]["episode_cost"] == pytest.approx(infos["cpu"]["episode_cost"])
    world = synthetic_world(num_samples=6, num_layers=3, seed=1)
    ids = np.arange(6)
    actions = np.zeros((6, 2 * 2 + 1), dtype=np.int64)
    actions[::2, 0] = 1  # a decision that differs between inputs
    on_cpu = world.decide(ids, actions)
    world.executor.place("cuda")
    try:
        on_cuda = world.decide(ids, actions)
    finally:
        world.executor.place("cpu")
    np.testing.assert_array_equal(on_cuda["prediction"], on_cpu["prediction"])
    np.testing.assert_allclose(on_cuda["cost"], on_cpu["cost"], rtol=1e-12)
