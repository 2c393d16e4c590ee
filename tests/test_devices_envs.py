"""``device`` / ``dtype`` of the environments, ``generate``, Ray's resources and the bench's gpu
measurements, on a machine without CUDA (issue 24): the CPU default changes nothing, CUDA is
refused clearly, and bfloat16 (which CUDA serves in) runs end to end on the CPU."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import exitgym
from exitgym.backbones.decoder_registry import load_decoder
from exitgym.data.synthetic import synthetic_cache
from exitgym.envs.skip_core import synthetic_world
from exitgym.integrations.ray import rllib_resources, trial_resources
from tests.test_early_exit import live_setup  # noqa: F401
from tests.tiny_decoders import random_prompts, tiny_decoder_configs

pytestmark = pytest.mark.usefixtures("one_thread")
EXIT = "exitgym/EarlyExit-v0"


def _no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_the_cached_env_refuses_a_gpu_it_would_not_use() -> None:
    cache = synthetic_cache(num_samples=6, num_layers=3, seed=0)
    for device in ("auto", "cpu"):
        assert gym.make(EXIT, cache=cache, device=device).unwrapped.device == "cpu"
    with pytest.raises(ValueError, match=r"device='cuda' applies to live=True only.*'auto' or "
                                         r"'cpu'"):
        gym.make(EXIT, cache=cache, device="cuda")
    with pytest.raises(ValueError, match="dtype='bfloat16' applies to live=True only"):
        gym.make(EXIT, cache=cache, dtype="bfloat16")
    with pytest.raises(ValueError, match="EarlyExit-v0: unknown device 'gpu'; allowed: auto"):
        gym.make(EXIT, cache=cache, device="gpu", live=True)
    with pytest.raises(ValueError, match="unknown dtype 'fp16'; allowed: auto, float32"):
        gym.make("exitgym/TokenExit-v0", dtype="fp16")


def _episode(env: gym.Env, sample: int, exit_at: int) -> list[np.ndarray]:
    obs, _ = env.reset(options={"sample_id": sample})
    seen = [obs]
    for layer in range(1, exit_at + 1):
        obs, *_ = env.step(int(layer == exit_at))
        seen.append(obs)
    return seen


def test_live_early_exit_on_the_cpu_and_in_bfloat16(live_setup: Any,  # noqa: F811
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cache, backbone, heads = live_setup
    kwargs = {"cache": cache, "live": True, "backbone": backbone, "heads": heads,
              "observation": "features+hidden"}
    cached = gym.make(EXIT, cache=cache, observation="features+hidden")
    on_cpu = gym.make(EXIT, device="cpu", **kwargs)
    assert on_cpu.unwrapped.device == "cpu"
    for got, want in zip(_episode(on_cpu, 2, 3), _episode(cached, 2, 3), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    try:
        half = gym.make(EXIT, dtype="bfloat16", **kwargs)
        assert next(backbone.model.parameters()).dtype == torch.bfloat16
        for got, want in zip(_episode(half, 2, 3), _episode(cached, 2, 3), strict=True):
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, want, atol=0.1)  # bfloat16: 8 bits of mantissa
    finally:
        backbone.model.float()
        heads.float()
    _no_cuda(monkeypatch)
    with pytest.raises(ValueError, match="device 'cuda' asked for, but"):
        gym.make(EXIT, device="cuda", **kwargs)


def _skip_world_kwargs(world: Any) -> dict[str, Any]:
    ex = world.executor
    return {"backbone": ex.backbone, "heads": ex.heads, "labels": ex.bank.labels,
            "inputs": {"input_ids": ex.bank.input_ids.numpy(),
                       "attention_mask": ex.bank.attention_mask.numpy()}}


@pytest.mark.parametrize("env_id", ["exitgym/SkipBlock-v0", "exitgym/SwitchableDecision-v0"])
def test_skip_envs_take_a_device_and_a_dtype(env_id: str, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    kwargs = _skip_world_kwargs(synthetic_world(num_samples=6, num_layers=3, seed=1))
    default = gym.make(env_id, **kwargs)
    on_cpu = gym.make(env_id, device="cpu", **kwargs)
    assert on_cpu.unwrapped.world.device == torch.device("cpu")
    action = on_cpu.action_space.sample() * 0
    for env in (default, on_cpu):
        env.reset(seed=0, options={"sample_id": 4})
    done = False
    while not done:
        a = default.step(action)
        b = on_cpu.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1] == b[1] and a[2] == b[2]
        done = a[2]
    assert a[4]["cost"] == b[4]["cost"] > 0
    half = gym.make(env_id, dtype="bfloat16", **kwargs)
    assert next(kwargs["backbone"].model.parameters()).dtype == torch.bfloat16
    obs, _ = half.reset(seed=0, options={"sample_id": 4})
    obs, reward, *_ = half.step(action)
    assert obs.dtype == np.float32 and np.isfinite(reward)
    _no_cuda(monkeypatch)
    with pytest.raises(ValueError, match="device 'cuda:1' asked for, but"):
        gym.make(env_id, device="cuda:1", **kwargs)


def _decoder() -> Any:
    return load_decoder(tiny_decoder_configs()["llama"])


def test_token_exit_on_the_cpu_and_in_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = random_prompts([5, 3])
    kwargs = {"prompts": prompts, "max_new_tokens": 2, "observation": "features+logits"}
    runs = {}
    for dtype in ("float32", "bfloat16"):
        bb = _decoder()
        env = gym.make("exitgym/TokenExit-v0", backbone=bb, device="cpu", dtype=dtype, **kwargs)
        assert env.unwrapped.world.backbone.device == torch.device("cpu")
        assert next(bb.model.parameters()).dtype == getattr(torch, dtype)
        obs, _ = env.reset(seed=0, options={"sample_id": 0})
        seen = [obs]
        done = False
        while not done:
            obs, _, done, _, info = env.step(1)
            seen.append(obs)
        runs[dtype] = (seen, info["generated_ids"])
        assert all(o.dtype == np.float32 for o in seen)
    assert len(runs["bfloat16"][1]) == len(runs["float32"][1]) == 2
    _no_cuda(monkeypatch)
    with pytest.raises(ValueError, match="device 'cuda' asked for, but"):
        gym.make("exitgym/TokenExit-v0", backbone=_decoder(), device="cuda", **kwargs)


def test_generate_on_the_cpu_equals_the_default_and_bfloat16_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = random_prompts([6, 4, 3])
    bb = _decoder()
    default = exitgym.generate(None, prompts, max_new_tokens=3, backbone=bb, progress=False)
    on_cpu = exitgym.generate(None, prompts, max_new_tokens=3, backbone=bb, progress=False,
                              device="cpu")
    assert on_cpu.generated_ids == default.generated_ids
    expected = [bb.greedy([p], 3)[0].tolist() for p in prompts]
    assert default.generated_ids == expected
    spec = exitgym.generate(None, prompts, max_new_tokens=3, backbone=bb, progress=False,
                            mode="speculative", draft_layer=2, device="cpu")
    assert spec.generated_ids == expected  # lossless
    half = exitgym.generate(None, prompts, max_new_tokens=3, backbone=_decoder(),
                            progress=False, dtype="bfloat16")
    assert [len(g) for g in half.generated_ids] == [3, 3, 3]
    _no_cuda(monkeypatch)
    with pytest.raises(ValueError, match="device 'cuda' asked for, but"):
        exitgym.generate(None, prompts, max_new_tokens=3, backbone=bb, progress=False,
                         device="cuda")


def test_rllib_and_tune_reserve_gpus_where_the_training_runs() -> None:
    assert rllib_resources("cpu", 0) == {
        "learners": {"num_learners": 0, "num_gpus_per_learner": 0},
        "env_runners": {"num_gpus_per_env_runner": 0.0}}
    assert rllib_resources("cuda:0", 2, 0.25) == {
        "learners": {"num_learners": 0, "num_gpus_per_learner": 1},
        "env_runners": {"num_gpus_per_env_runner": 0.25}}
    with pytest.raises(ValueError, match="with num_env_runners=0 the driver samples"):
        rllib_resources("cpu", 0, 0.5)
    with pytest.raises(ValueError, match="not 'cuda:1'; select it with CUDA_VISIBLE_DEVICES"):
        rllib_resources("cuda:1", 0)
    with pytest.raises(ValueError, match="num_gpus_per_env_runner must be >= 0"):
        rllib_resources("cpu", 1, -1)
    assert trial_resources(["cpu", "cpu"]) == {"cpu": 1.0}
    assert trial_resources(["cpu", "cuda:0"]) == {"cpu": 1.0, "gpu": 1.0}
    assert trial_resources(["cuda:0"], 0.5) == {"cpu": 1.0, "gpu": 0.5}
    assert trial_resources(["cpu"], 0.5) == {"cpu": 1.0, "gpu": 0.5}
    with pytest.raises(ValueError, match="gpus_per_trial=0 would hide every GPU"):
        trial_resources(["cuda:0"], 0)


def test_the_encoder_builds_one_attention_mask_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from exitgym.backbones import hf_compat

    world = synthetic_world(num_samples=4, num_layers=3, seed=2)
    bb = world.executor.backbone
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])}
    with torch.inference_mode():
        reference = torch.stack(bb.forward_pooled(batch))
        calls = []
        build = hf_compat.attention_mask_4d
        monkeypatch.setattr(hf_compat, "attention_mask_4d",
                            lambda *a: calls.append(1) or build(*a))
        state = bb.embed(batch)
        pooled = []
        for i in range(bb.num_layers):
            state = bb.layer(i, state)
            pooled.append(bb.pool(state))
    assert len(calls) == 1  # built for the first layer, reused by the other two
    torch.testing.assert_close(torch.stack(pooled), reference, rtol=0, atol=1e-6)


def test_a_bfloat16_model_has_a_fingerprint() -> None:
    full, half = _decoder(), _decoder()
    half.model.to(torch.bfloat16)
    assert half.fingerprint() != full.fingerprint()  # other weights; numpy has no bfloat16
    assert len(half.fingerprint()) == 64


def test_distilled_maps_are_fitted_on_the_host_and_follow_the_decoder() -> None:
    from exitgym.backbones.decoder_heads import fit_layer_maps, head_agreement
    from exitgym.data.decoder_heads import collect_states

    bb = _decoder()
    bb.model.to(torch.bfloat16)
    states = collect_states(bb, random_prompts([8] * 6, seed=1))
    assert states.dtype == torch.float32 and states.device.type == "cpu"
    maps = fit_layer_maps(states)
    agree = head_agreement(bb, states, maps)
    assert len(agree) == bb.num_layers and agree[-1] == 1.0  # the last layer has no map
    env = gym.make("exitgym/TokenExit-v0", backbone=bb, heads=maps, dtype="bfloat16",
                   prompts=random_prompts([4]), max_new_tokens=2, observation="logits")
    world = env.unwrapped.world
    assert world.maps.weight.dtype == torch.bfloat16 and maps.weight.dtype == torch.float32
    env.reset(seed=0)
    obs, _, done, _, _ = env.step(1)
    assert obs.dtype == np.float32 and np.isfinite(obs).all() and not done
