"""Every exitgym environment under Ray's registry, made inside each Ray worker.

``register_envs()`` registers each id of :data:`exitgym.registration.ENVS` with
``ray.tune.registry.register_env`` under the same name, so
``PPOConfig().environment("exitgym/EarlyExit-v0", env_config={...})`` works on every worker.

Why the creators are module-level functions bound by name (``functools.partial``): Ray pickles the
creator to ship it to workers, so it must carry names and paths only, never a cache or a model.
Each worker imports exitgym itself and loads what ``env_config`` points to:

- ``cache_path``: a saved :class:`~exitgym.backbones.layer_cache.LayerCache` directory
  (``exitgym.backbones.cache.save_cache``), memory-mapped and checksum-verified in the worker;
- otherwise ``task`` / ``backbone`` / ``split`` / ``heads`` name a prepared cache, found under
  ``cache_dir`` (sets ``$EXITGYM_CACHE`` in the worker: a directory every node can read);
- ``torch_threads``: torch threads of the worker process (default 1: RLlib's env runners run a
  tiny MLP on a few rows, where thread hand-offs cost more than they save, and several runners
  share the cores; see :func:`exitgym.utils.threads.one_torch_thread`);
- every other key is a ``gym.make`` keyword of the env (reward, alpha, observation, ...).

Seeding. RLlib resets each env runner once with ``seed = config.seed + worker_index`` and asks the
creator for ``num_envs_per_env_runner`` slots. With ``gym_env_vectorize_mode="vector_entry_point"``
(what :func:`rllib_env_settings` sets) the creator returns exitgym's native vector env, wrapped so
that runner seed ``s`` seeds slot ``i`` with ``s * num_envs + i``: the slots of different runners
draw from disjoint seeds, where ``s + i`` would give runner 1's second slot the seed of runner 2's
first. A single env (the ``SYNC`` mode) takes the seed it is given unchanged.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import gymnasium as gym

CONTROL_KEYS = ("cache_path", "cache_dir", "torch_threads", "num_envs")
"""``env_config`` keys read by the creator itself; the rest are ``gym.make`` keywords."""
CONTEXT_KEYS = ("worker_index", "num_workers", "vector_index", "remote")
"""Keys Ray may add to a plain ``env_config`` dict (not env keywords)."""


def register_envs() -> list[str]:
    """Register every exitgym id with Ray's env registry under the same name (idempotent).

    Returns:
        The registered ids.
    """
    from ray.tune.registry import register_env

    from exitgym.registration import ENVS

    for entry in ENVS:
        register_env(entry.id, functools.partial(make_env, entry.id))
    return [entry.id for entry in ENVS]


def make_env(env_id: str, env_config: Mapping[str, Any] | None = None) -> Any:
    """The env creator Ray calls in a worker: a single env, or the native vector env.

    Args:
        env_id: the exitgym id.
        env_config: Ray's ``EnvContext`` (a dict) or a plain dict; see the module docstring.
            RLlib adds ``num_envs`` when it asks for a vector env.
    """
    config = dict(env_config or {})
    _set_torch_threads(int(config.get("torch_threads", 1)))
    if config.get("cache_dir"):
        os.environ["EXITGYM_CACHE"] = str(config["cache_dir"])
    kwargs = {k: v for k, v in config.items() if k not in CONTROL_KEYS + CONTEXT_KEYS}
    if config.get("cache_path"):
        from exitgym.backbones.cache import load_cache

        kwargs["cache"] = load_cache(config["cache_path"])
    import exitgym  # noqa: F401  (registers the gymnasium ids in this worker)

    num_envs = config.get("num_envs")
    if num_envs is None:
        return gym.make(env_id, **kwargs)
    env = gym.make_vec(env_id, num_envs=int(num_envs), vectorization_mode="vector_entry_point",
                       **kwargs)
    return RunnerSeeding(env)


def _set_torch_threads(threads: int) -> None:
    """Give this worker process ``threads`` torch threads (the RLModule's forward passes)."""
    if threads < 1:
        raise ValueError(f"torch_threads must be >= 1, got {threads}")
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class RunnerSeeding(gym.vector.VectorWrapper):
    """Maps an env runner's seed ``s`` to slot seeds ``s * num_envs + i`` (disjoint per runner)."""

    def reset(self, *, seed: int | list[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if isinstance(seed, int):
            seed = seed * self.num_envs
        return self.env.reset(seed=seed, options=options)


def rllib_env_settings(env_id: str, env_config: Mapping[str, Any],
                       num_env_runners: int = 0, num_envs_per_env_runner: int = 1,
                       ) -> dict[str, Any]:
    """Keyword arguments of ``AlgorithmConfig.environment`` / ``.env_runners`` for an exitgym env.

    Returns ``{"environment": {...}, "env_runners": {...}}``: the env id (registered by
    :func:`register_envs`), its config, and runners stepping exitgym's native vector env.
    """
    from exitgym.registration import ENVS

    ids = [entry.id for entry in ENVS]
    if env_id not in ids:
        raise ValueError(f"unknown exitgym env {env_id!r}; allowed: {ids}")
    if num_env_runners < 0 or num_envs_per_env_runner < 1:
        raise ValueError(f"need num_env_runners >= 0 and num_envs_per_env_runner >= 1, got "
                         f"{num_env_runners} and {num_envs_per_env_runner}")
    return {
        "environment": {"env": env_id, "env_config": dict(env_config)},
        "env_runners": {"num_env_runners": num_env_runners,
                        "num_envs_per_env_runner": num_envs_per_env_runner,
                        "gym_env_vectorize_mode": "vector_entry_point"},
    }


def worker_cache_path(cache: Any, target: str | os.PathLike[str]) -> str:
    """A directory Ray workers load ``cache`` from: its prepared one, else a copy at ``target``.

    Why a path: workers must load the cache themselves (memory-mapped, checksum-verified), never
    receive it pickled. A copy already at ``target`` with the same fingerprint is reused (a
    resumed sweep).
    """
    from pathlib import Path

    path = (cache.meta or {}).get("path")
    if path and Path(path, "meta.json").is_file():
        return str(Path(path).absolute())
    from exitgym.backbones.cache import load_cache, save_cache

    target = Path(target).absolute()
    if (target / "meta.json").is_file():
        stored = load_cache(target)
        if stored.meta.get("fingerprint") == cache.meta.get("fingerprint"):
            return str(target)
    return str(save_cache(cache, target))


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = 2) -> Iterator[Any]:
    """Ray for exitgym: join ``address``, or start a local Ray of ``num_cpus`` CPUs (no
    dashboard, quiet logs); a Ray already running in this process is used as it is.

    Shuts down only a Ray it started itself, so a caller's session (tests, notebooks) survives.
    """
    import ray

    started = not ray.is_initialized()
    if started:
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "configure_logging": False}
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=num_cpus, **options)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


__all__ = ["CONTROL_KEYS", "RunnerSeeding", "ray_session", "make_env", "register_envs",
           "rllib_env_settings", "worker_cache_path"]


def rllib_resources(learner_device: str, num_env_runners: int,
                    num_gpus_per_env_runner: float = 0.0) -> dict[str, dict[str, Any]]:
    """Keyword arguments of ``AlgorithmConfig.learners`` / ``.env_runners`` for the GPUs.

    Args:
        learner_device: where the learner trains, resolved in the driver (``str`` of
            :func:`~exitgym.utils.devices.resolve_device` of ``TrainConfig.device``): the local
            learner (``num_learners=0``) runs in the driver, so it gets one GPU exactly when
            that is CUDA.
        num_env_runners: remote env runners (0: sampling in the driver).
        num_gpus_per_env_runner: GPUs (or a fraction) each remote runner reserves. The cached
            environments RLlib trains on run no torch, so the default 0 is right for them; a
            share is only worth it for a policy or env that computes on a GPU in the runner.

    Raises:
        ValueError: a negative share, a share without remote runners (the driver's own runner
            takes none: Ray reserves GPUs for remote actors only), or ``cuda:N`` with N > 0 (RLlib
            places the local learner on the first visible GPU; choose the GPU with
            ``CUDA_VISIBLE_DEVICES`` instead).
    """
    share = float(num_gpus_per_env_runner)
    if share < 0:
        raise ValueError(f"num_gpus_per_env_runner must be >= 0, got {num_gpus_per_env_runner!r}")
    if share > 0 and num_env_runners == 0:
        raise ValueError("num_gpus_per_env_runner applies to remote env runners; with "
                         "num_env_runners=0 the driver samples (give num_env_runners >= 1)")
    if learner_device.startswith("cuda:") and learner_device != "cuda:0":
        raise ValueError(f"RLlib's local learner uses the first visible GPU, not "
                         f"{learner_device!r}; select it with CUDA_VISIBLE_DEVICES and "
                         "device 'cuda'")
    gpu = 1 if learner_device.startswith("cuda") else 0
    return {"learners": {"num_learners": 0, "num_gpus_per_learner": gpu},
            "env_runners": {"num_gpus_per_env_runner": share}}


def trial_resources(devices: list[str], gpus_per_trial: float | None = None) -> dict[str, float]:
    """Ray Tune ``with_resources`` of one trial: one CPU, and GPUs for trials that train on one.

    Why GPUs must be asked for: Ray hides every GPU from a trial that reserves none
    (``CUDA_VISIBLE_DEVICES`` empty), so a trial whose ``device`` is ``auto`` would silently
    train on the CPU and one whose ``device`` is ``cuda`` would fail.

    Args:
        devices: each trial's ``TrainConfig.device``, resolved in the driver (``cpu``,
            ``cuda:0``, ...).
        gpus_per_trial: the share to reserve (e.g. 0.5: two trials per GPU); None: 1 when a
            trial trains on CUDA, else 0.

    Raises:
        ValueError: a negative share, or a share of 0 for trials that train on CUDA.
    """
    wants = any(d.startswith("cuda") for d in devices)
    share = (1.0 if wants else 0.0) if gpus_per_trial is None else float(gpus_per_trial)
    if share < 0:
        raise ValueError(f"gpus_per_trial must be >= 0, got {gpus_per_trial!r}")
    if wants and share == 0:
        raise ValueError("the trials train on CUDA (TrainConfig.device), but gpus_per_trial=0 "
                         "would hide every GPU from them; give a share > 0 or device 'cpu'")
    return {"cpu": 1.0, "gpu": share} if share else {"cpu": 1.0}
