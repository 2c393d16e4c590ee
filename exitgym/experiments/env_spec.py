"""The JSON-able description of an environment: what run configs and trajectory files store.

``evaluate`` and ``replay --verify`` rebuild exactly the environment an agent was trained or
evaluated in from an :class:`EnvSpec`: its id, the prepared cache it reads (task, backbone, heads,
split and prepare options) and its ``gym.make`` kwargs. A cache *object* is never stored, only
the names that rebuild it (the cache checks its own fingerprints when loaded).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exitgym.data.config import DEFAULT_RECIPE, POLICY_SPLIT

if TYPE_CHECKING:
    from exitgym.data.config import DataConfig

CACHE_ENVS = ("exitgym/EarlyExit-v0",)
"""Environments that read a prepared per-layer cache (``cache=``); others run the backbone live."""
PREPARED_ENVS = (*CACHE_ENVS, "exitgym/SkipBlock-v0", "exitgym/SwitchableDecision-v0")
"""Environments built from a prepared split cache: the cached ones, and the live skip envs, which
run the prepared backbone and heads on that cache's inputs (its texts, labels, memorized layers).
A run in one of them is bound to the cache's data, backbone and heads fingerprints."""
SKIP_ENVS = ("exitgym/SkipBlock-v0", "exitgym/SwitchableDecision-v0")
"""The live skip environments (encoder or decoder backbones)."""
WORLD_KWARGS = ("inputs", "labels", "text_pairs", "world", "prompts", "max_length")
"""Skip-env kwargs that change the world an env runs on (a spec with one is never shared)."""
TOKEN_ENVS = ("exitgym/TokenExit-v0",)
"""Decoder environments: ``backbone`` names the decoder, ``heads`` its exit heads (``lm-head`` or
``distilled``), ``prepare`` the task's column options and ``kwargs`` the generation settings
(:class:`~exitgym.envs.settings.TokenExitSettings`); a run in one is bound to the decoder's and
the heads' fingerprints (:mod:`exitgym.experiments.token_runs`)."""


def env_ids() -> list[str]:
    """The registered environment ids, sorted (what ``--env`` allows)."""
    from exitgym.registration import ENVS

    return sorted(entry.id for entry in ENVS)


def reward_names() -> list[str]:
    """The registered reward shapes, sorted (what ``--reward`` / ``--rewards`` allow)."""
    from exitgym.envs.rewards import REWARDS

    return sorted(REWARDS)


@dataclass(frozen=True)
class EnvSpec:
    """Everything needed to re-make an environment, as JSON."""

    env_id: str = "exitgym/EarlyExit-v0"
    """Registered Gymnasium id."""
    task: str = "rt-polarity"
    """Task registry name or local data path."""
    backbone: str = "minilm-l6"
    """Backbone short name or local directory."""
    heads: str = DEFAULT_RECIPE
    """Exit-head recipe of the prepared cache."""
    split: str = POLICY_SPLIT
    """Data split the episodes draw from."""
    prepare: dict[str, Any] = field(default_factory=dict)
    """Extra :class:`~exitgym.data.prepare.PrepareConfig` options (``max_samples``, ...)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """``gym.make`` kwargs: reward, alpha, observation, dense, policy_flops, ..."""
    heads_file: str | None = None
    """Exit heads that replace the prepared ones: per-layer linear heads on the cached pooled
    states (``exitgym.agents.consistentee.save_heads``, safetensors), e.g. the heads ConsistentEE
    retrained, as a path relative to the run or comparison directory. None: the prepared heads
    (and the key is left out of the JSON, so specs without it read as before)."""

    @classmethod
    def of(cls, env_id: str, data: DataConfig, split: str, kwargs: dict[str, Any]) -> EnvSpec:
        """The spec of ``env_id`` on the prepared cache ``data`` names.

        The stored JSON form stays the one trajectory files already hold: task, backbone and
        heads at the top, the other prepare options (``max_length``, ``max_samples`` when set)
        under ``prepare``.
        """
        return cls(env_id, data.task, data.backbone, data.heads, split, data.prepare_options(),
                   kwargs)

    def with_split(self, split: str) -> EnvSpec:
        return replace(self, split=split)

    def with_kwargs(self, **kwargs: Any) -> EnvSpec:
        return replace(self, kwargs={**self.kwargs, **kwargs})

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.heads_file is None:
            del data["heads_file"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnvSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown EnvSpec fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    @property
    def uses_cache(self) -> bool:
        return self.env_id in CACHE_ENVS

    @property
    def reads_prepared(self) -> bool:
        """The env is built from the prepared cache :meth:`cache` returns (``PREPARED_ENVS``)."""
        return self.env_id in PREPARED_ENVS

    def cache(self, progress: bool = True, root: str | Path | None = None) -> Any:
        """The LayerCache of this spec: the prepared one (built on first use), with
        :attr:`heads_file` (relative to ``root``) applied when set."""
        return self.own_heads(self.prepared_cache(progress), root)

    def prepared_cache(self, progress: bool = True, require: dict[str, str] | None = None) -> Any:
        """The prepared LayerCache of this spec's data and recipe (built on first use; not from a
        backbone or heads other than ``require``'s fingerprints, see
        :func:`~exitgym.data.prepare.prepare`)."""
        from exitgym.data.prepare import get_cache

        return get_cache(task=self.task, backbone=self.backbone, split=self.split,
                         heads=self.heads, progress=progress, require=require, **self.prepare)

    def own_heads(self, cache: Any, root: str | Path | None = None) -> Any:
        """``cache`` with its logits recomputed by :attr:`heads_file` (the file's path is
        relative to ``root``, the run or comparison directory); ``cache`` itself when unset."""
        if self.heads_file is None:
            return cache
        from exitgym.agents.consistentee import load_heads

        path = Path(root if root is not None else ".") / self.heads_file
        return load_heads(path).apply_to(cache, f"file:{self.heads_file}")

    def make_kwargs(self, cache: Any | None = None) -> dict[str, Any]:
        """The ``gym.make`` keyword arguments of this spec (``cache``: the LayerCache of a cached
        env, default :meth:`cache`)."""
        kwargs = dict(self.kwargs)
        if self.uses_cache:
            kwargs["cache"] = cache if cache is not None else self.cache()
        elif self.env_id in TOKEN_ENVS:  # TokenExitSettings fields, columns included
            kwargs.update(task=self.task, backbone=self.backbone, split=self.split,
                          heads=self.heads, **self.prepare)
        else:
            kwargs.update(task=self.task, backbone=self.backbone, split=self.split,
                          heads=self.heads, prepare_options=dict(self.prepare))
            world = shared_world(self)
            if world is not None:
                kwargs["world"] = world
        return kwargs

    def make(self, num_envs: int | None = None, cache: Any | None = None) -> Any:
        """A single env (``num_envs=None``) or the native vector env with ``num_envs`` slots."""
        import gymnasium as gym

        import exitgym  # noqa: F401  (registers the ids)

        kwargs = self.make_kwargs(cache)
        if num_envs is None:
            return gym.make(self.env_id, disable_env_checker=True, **kwargs)
        env = gym.make_vec(self.env_id, num_envs=num_envs,
                           vectorization_mode="vector_entry_point", **kwargs)
        world = getattr(env, "world", None)
        if not hasattr(env, "num_samples") and hasattr(world, "num_samples"):
            # Live skip vector envs keep their split size on ``world``; the agents' rollout
            # helpers look for ``env.num_samples`` (or a cache), so expose it there.
            env.num_samples = int(world.num_samples)
        return env


def shared_world(spec: EnvSpec) -> Any | None:
    """The process-wide ``SkipWorld`` of a named encoder skip spec (None for any other spec).

    Why: every env of a comparison's split runs on the same backbone, heads and tokenized inputs
    (read-only), and building them (prepare check, backbone load, tokenization) takes seconds, ten
    times more than evaluating a static pattern on a small split. The world depends only on the
    data, the split and the prepare options, never on the reward or the policy.
    """
    if spec.env_id not in SKIP_ENVS or any(k in spec.kwargs for k in WORLD_KWARGS):
        return None
    from exitgym.envs.skip_decoder import is_decoder

    if is_decoder(spec.backbone):
        return None
    return _world(spec.task, spec.backbone, spec.heads, spec.split,
                  json.dumps(spec.prepare, sort_keys=True))


@functools.lru_cache(maxsize=4)
def _world(task: str, backbone: str, heads: str, split: str, prepare: str) -> Any:
    """Built as ``SkipWorld.from_settings`` builds a named world from :meth:`EnvSpec.make_kwargs`
    (explicit prepare options: no skip-tolerant default is added)."""
    from exitgym.envs.skip_core import build_world

    return build_world(task, backbone, split, heads, None, None, None, None, json.loads(prepare))
