"""Ray benchmarks of ``exitgym bench`` (only when ``exitgym[ray]`` is installed).

- RLlib sampling: env steps per second of an RLlib PPO ``EnvRunnerGroup`` (the module's forward
  pass included, as in training) with 1 and 2 remote env runners on ``EarlyExit-v0``, against
  exitgym's native vector env stepped with random actions (no policy: the ceiling).
- A sweep's wall time: the same 4-agent ``compare`` with the local engine and as Tune trials on
  2 workers (``max_concurrent=2``).

Synthetic caches (numpy only, nothing prepared), so the numbers measure the engines, not a model.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path
from typing import Any

from exitgym.bench.config import BenchConfig

ENV_ID = "exitgym/EarlyExit-v0"


def ray_available() -> bool:
    """Ray with RLlib is importable (the section is skipped otherwise)."""
    return importlib.util.find_spec("ray") is not None


def ray_section(cfg: BenchConfig) -> dict[str, Any]:
    """Both Ray measurements, or why they were skipped."""
    if not ray_available():
        return {"skipped": "ray is not installed (pip install 'exitgym[ray]')"}
    from exitgym.integrations.ray import ray_session

    steps = 2000 if cfg.quick else 20000
    with tempfile.TemporaryDirectory() as tmp, ray_session(num_cpus=2):
        path = _cache(Path(tmp))
        rates = {"native_vector_env": _native_rate(path, steps)}
        for runners in (1, 2):
            rates[f"rllib_{runners}_runners"] = _rllib_rate(path, runners, steps)
        sweep = _sweep_times(Path(tmp), cfg.quick)
    return {"env_steps": steps, "steps_per_s": rates, "sweep": sweep}


def _cache(root: Path) -> str:
    from exitgym.backbones.cache import save_cache
    from exitgym.data.synthetic import synthetic_cache

    return str(save_cache(synthetic_cache(num_samples=512, num_layers=6), root / "cache"))


def _native_rate(path: str, steps: int, num_envs: int = 8) -> float:
    import numpy as np

    from exitgym.integrations.ray import make_env

    env = make_env(ENV_ID, {"cache_path": path, "num_envs": num_envs})
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    tic = time.perf_counter()
    for _ in range(steps // num_envs):
        env.step(rng.integers(0, 2, size=num_envs))
    return steps / (time.perf_counter() - tic)


def _rllib_rate(path: str, runners: int, steps: int, num_envs: int = 8) -> float:
    from ray.rllib.algorithms.ppo import PPOConfig

    from exitgym.integrations.ray import register_envs, rllib_env_settings

    register_envs()
    settings = rllib_env_settings(ENV_ID, {"cache_path": path}, runners, num_envs)
    algo = (PPOConfig().environment(**settings["environment"])
            .env_runners(**settings["env_runners"]).debugging(seed=0).build_algo())
    group = algo.env_runner_group
    share = steps // runners

    def sample(num: int) -> int:  # env steps sampled by all remote runners at once
        out = group.foreach_env_runner(lambda r: sum(len(e) for e in r.sample(
            num_timesteps=num)), local_env_runner=False)
        return int(sum(out))

    try:
        sample(200)  # warm-up: first resets, module compilation
        tic = time.perf_counter()
        done = sample(share)
        return done / (time.perf_counter() - tic)
    finally:
        algo.stop()


def _sweep_times(root: Path, quick: bool) -> dict[str, float]:
    from exitgym.data.synthetic import synthetic_cache
    from exitgym.experiments.compare import compare
    from exitgym.experiments.configs import CompareConfig
    from exitgym.integrations.tune import compare_tune

    config = CompareConfig(rewards=("hardness",), alphas=(0.2, 0.5), seeds=(0, 1),
                           rules=("entropy",), steps=5 if quick else 100, batch_size=32,
                           num_envs=32)
    caches = {split: synthetic_cache(num_samples=256, num_layers=6, seed=i)
              for i, split in enumerate(("train", "validation", "test"))}
    tic = time.perf_counter()
    compare(config, root / "local", caches=caches, progress=False)
    local = time.perf_counter() - tic
    tic = time.perf_counter()
    compare_tune(config, root / "tune", caches=caches, progress=False, max_concurrent=2)
    return {"trials": 4, "updates_per_trial": config.steps, "local_s": local,
            "tune_2_workers_s": time.perf_counter() - tic}


def ray_markdown(result: dict[str, Any]) -> list[str]:
    """The ``bench.md`` section (empty when the section did not run)."""
    ray = result.get("ray")
    if not ray:
        return []
    if "skipped" in ray:
        return ["## Ray", "", f"Skipped: {ray['skipped']}.", ""]
    rates, sweep = ray["steps_per_s"], ray["sweep"]
    return [
        "## Ray (RLlib sampling, Tune sweep)", "",
        f"{ray['env_steps']:,} env steps of EarlyExit-v0 (synthetic cache, 8 slots per runner); "
        "RLlib includes the PPO module's forward pass per step, the native env steps random "
        "actions.", "",
        "| sampler | env steps/s |", "|---|---:|",
        *[f"| {name} | {rate:,.0f} |" for name, rate in rates.items()], "",
        f"A compare of {sweep['trials']} REINFORCE agents × {sweep['updates_per_trial']} "
        f"updates: local engine {sweep['local_s']:.1f} s, Tune with 2 workers "
        f"{sweep['tune_2_workers_s']:.1f} s (Ray already running; trial scheduling and worker "
        "start-up included).", "",
    ]
