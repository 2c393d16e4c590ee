"""Run whole episodes on chosen samples, batched on a vector env: the engine under ``evaluate``
and the REINFORCE trainers.

Episodes are run *synchronously in blocks*: every slot of the vector env is reset onto a chosen
``sample_id`` at once, the block is stepped until every slot has finished its episode, and steps a
slot takes after its episode ended (the vector env's next-step autoreset) are ignored. This costs at
most ``L`` wasted steps per block and gives exact control over which input each slot runs, which is
what a greedy evaluation of "every sample once" and the self-critical / mean-of-K baselines need
(the greedy rerun must see the same input as the sampled one). Plain single envs run one episode
at a time through the same code (a block of one slot).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from exitgym.agents.records import EpisodeRecord, EvalResult

ActFn = Callable[[np.ndarray, dict[str, Any]], np.ndarray]
"""``act(obs [B, D], infos) -> actions [B] or [B, k]``."""


@dataclass
class Rollout:
    """A block of finished episodes, step-major (``[T, B]``) for batched log-prob computation."""

    obs: np.ndarray
    """float32 ``[T, B, D]`` observation each action was taken on."""
    actions: np.ndarray
    """int64 ``[T, B]`` (Discrete) or ``[T, B, k]`` (MultiDiscrete)."""
    rewards: np.ndarray
    """float64 ``[T, B]`` (0 where the slot's episode had ended)."""
    alive: np.ndarray
    """bool ``[T, B]``: the step belongs to the slot's episode."""
    sample_ids: np.ndarray
    """int64 ``[B]``."""
    final_infos: list[dict[str, Any]]
    """Terminal info of each slot's episode."""

    @property
    def returns(self) -> np.ndarray:
        """Undiscounted episode returns ``[B]``."""
        return self.rewards.sum(axis=0)

    def info_array(self, key: str, default: float = np.nan) -> np.ndarray:
        """``final_infos[b][key]`` for every slot as a float array."""
        return np.array([float(i.get(key, default)) for i in self.final_infos])


def decision_steps(alive: np.ndarray, forced_at: int | None) -> np.ndarray:
    """Bool ``[T, B]``: the live steps whose action was a decision.

    ``forced_at`` is the 0-based step whose action the env ignores (the last layer of an exit
    env: every action exits there), or None when every live step decides.
    """
    mask = np.asarray(alive, dtype=bool).copy()
    if forced_at is not None:
        mask[forced_at:] = False
    return mask


def is_vector_env(env: Any) -> bool:
    """True for gymnasium vector envs (they have ``num_envs`` and batched spaces)."""
    return hasattr(env, "num_envs") and hasattr(env, "single_action_space")


def env_cache(env: Any) -> Any | None:
    """The :class:`LayerCache` behind an exit env (``env.unwrapped.cache``), if it has one."""
    for obj in (env, getattr(env, "unwrapped", None)):
        cache = getattr(obj, "cache", None)
        if cache is not None:
            return cache
    return None


def env_attr(env: Any, name: str) -> Any:
    """Attribute of the (unwrapped) env, or None."""
    for obj in (env, getattr(env, "unwrapped", None)):
        if obj is not None and hasattr(obj, name):
            return getattr(obj, name)
    return None


def env_split(env: Any) -> str | None:
    """The data split an env's episodes come from (None: the env does not say).

    An env that loaded its data itself reads the ``split`` of its settings; one made with
    ``cache=`` reads that cache whatever its ``split`` setting says (then left at its default),
    so the cache's recorded split is the answer.
    """
    settings = env_attr(env, "settings")
    split = getattr(settings, "split", None)
    if getattr(settings, "cache", None) is None and isinstance(split, str):
        return split
    meta = getattr(env_cache(env), "meta", None)
    recorded = meta.get("split") if isinstance(meta, dict) else None
    return recorded if isinstance(recorded, str) else None


def cost_weighted_shape(env: Any, mode: str) -> Any:
    """The env's reward shape, whose cost weight ``alpha`` a trainer sets at run time (the
    budget-targeted multiplier, cost-conditioned draws).

    Raises:
        ValueError: the env's reward has no cost weight; ``mode`` names what needed one.
    """
    shape = env_attr(env, "reward_shape")
    if shape is None or not hasattr(shape, "alpha"):
        raise ValueError(f"{mode} needs an env whose reward shape has a cost weight alpha "
                         "(vanilla, hardness, accuracy)")
    return shape


def _size_of(env: Any, name: str, unknown: str) -> int:
    """``name`` of the env (``num_samples``, ``num_layers``), else of its cache.

    Raises:
        ValueError: Neither has it; ``unknown`` is the message.
    """
    n = env_attr(env, name)
    if n is None:
        n = getattr(env_cache(env), name, None)
    if n is None:
        raise ValueError(unknown)
    return int(n)


def num_samples_of(env: Any) -> int:
    """How many samples the env's split has (from its cache or a ``num_samples`` attribute)."""
    return _size_of(env, "num_samples",
                    "cannot tell how many samples the env has; pass sample_ids explicitly")


def _slot_info(infos: dict[str, Any], b: int) -> dict[str, Any]:
    """The entries of a vector env's info dict that are set for slot ``b``."""
    out = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get("_" + key)
        if mask is not None and not bool(np.asarray(mask)[b]):
            continue
        arr = np.asarray(value)
        out[key] = arr[b].item() if arr.ndim >= 1 and arr.dtype != object else value[b]
    return out


def _run_block(env: Any, act: ActFn, ids: np.ndarray, seed: int | None) -> Rollout:
    """One synchronous block on a vector env with ``len(ids) == env.num_envs``."""
    num_envs = len(ids)
    obs, infos = env.reset(seed=seed, options={"sample_id": ids})
    alive = np.ones(num_envs, dtype=bool)
    final: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    obs_l, act_l, rew_l, alive_l = [], [], [], []
    while alive.any():
        infos = dict(infos)
        infos["sample_id"] = ids
        actions = np.asarray(act(np.asarray(obs, dtype=np.float32), infos))
        obs_l.append(np.asarray(obs, dtype=np.float32))
        act_l.append(actions.astype(np.int64))
        alive_l.append(alive.copy())
        obs, rewards, term, trunc, infos = env.step(actions)
        rew_l.append(np.where(alive, rewards, 0.0))
        done = (np.asarray(term) | np.asarray(trunc)) & alive
        for b in np.flatnonzero(done):
            final[b] = _slot_info(infos, b)
        alive &= ~done
    return Rollout(
        obs=np.stack(obs_l), actions=np.stack(act_l), rewards=np.stack(rew_l).astype(np.float64),
        alive=np.stack(alive_l), sample_ids=ids.astype(np.int64), final_infos=final,
    )


def _run_single(env: Any, act: ActFn, sample_id: int, seed: int | None) -> Rollout:
    """One episode on a plain (non-vector) env, shaped like a block of one slot."""
    obs, info = env.reset(seed=seed, options={"sample_id": int(sample_id)})
    obs_l, act_l, rew_l = [], [], []
    while True:
        info = dict(info)
        info["sample_id"] = np.array([sample_id])
        batch = np.asarray(obs, dtype=np.float32)[None]
        action = np.asarray(act(batch, info))[0]
        obs_l.append(batch)
        act_l.append(np.asarray(action, dtype=np.int64)[None])
        obs, reward, term, trunc, info = env.step(action)
        rew_l.append(np.array([reward], dtype=np.float64))
        if term or trunc:
            break
    steps = len(obs_l)
    return Rollout(
        obs=np.stack(obs_l), actions=np.stack(act_l), rewards=np.stack(rew_l),
        alive=np.ones((steps, 1), dtype=bool), sample_ids=np.array([sample_id], dtype=np.int64),
        final_infos=[dict(info)],
    )


def run_episodes(
    env: Any, act: ActFn, sample_ids: Sequence[int] | np.ndarray, seed: int | None = None,
    on_block_start: Callable[[int], None] | None = None,
) -> list[Rollout]:
    """Run one episode per requested sample; returns one :class:`Rollout` per block.

    Args:
        env: A vector env (blocks of ``num_envs`` slots; the last block is padded by repeating
            its first id and the padding is dropped) or a single env (blocks of one).
        act: The acting function.
        sample_ids: Samples to run, in order (repeats allowed: mean-of-K runs each id K times).
        seed: Passed to the first reset only (gymnasium convention: seed once, then continue).
        on_block_start: Called with the block size before each block (policies reset there).
    """
    ids = np.asarray(sample_ids, dtype=np.int64)
    blocks: list[Rollout] = []
    if is_vector_env(env):
        n = int(env.num_envs)
        for start in range(0, len(ids), n):
            chunk = ids[start:start + n]
            padded = np.concatenate([chunk, np.full(n - len(chunk), chunk[0])])
            if on_block_start:
                on_block_start(n)
            ro = _run_block(env, act, padded, seed if start == 0 else None)
            if len(chunk) < n:
                ro = _take(ro, slice(0, len(chunk)))
            blocks.append(ro)
    else:
        for j, sid in enumerate(ids):
            if on_block_start:
                on_block_start(1)
            blocks.append(_run_single(env, act, int(sid), seed if j == 0 else None))
    return blocks


def _take(ro: Rollout, cols: slice) -> Rollout:
    return Rollout(
        obs=ro.obs[:, cols], actions=ro.actions[:, cols], rewards=ro.rewards[:, cols],
        alive=ro.alive[:, cols], sample_ids=ro.sample_ids[cols], final_infos=ro.final_infos[cols],
    )


def _to_action(a: np.ndarray) -> Any:
    return tuple(int(x) for x in a) if np.ndim(a) else int(a)


def concat_rollouts(blocks: list[Rollout]) -> Rollout:
    """Join blocks along the episode axis, padding shorter ones in time (``alive`` = False)."""
    steps = max(b.obs.shape[0] for b in blocks)

    def pad(x: np.ndarray, fill: Any = 0) -> np.ndarray:
        width = [(0, steps - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
        return np.pad(x, width, constant_values=fill)

    return Rollout(
        obs=np.concatenate([pad(b.obs) for b in blocks], 1),
        actions=np.concatenate([pad(b.actions) for b in blocks], 1),
        rewards=np.concatenate([pad(b.rewards) for b in blocks], 1),
        alive=np.concatenate([pad(b.alive, False) for b in blocks], 1),
        sample_ids=np.concatenate([b.sample_ids for b in blocks]),
        final_infos=[i for b in blocks for i in b.final_infos],
    )


def records_from(ro: Rollout, seed: int | None) -> list[EpisodeRecord]:
    """One :class:`EpisodeRecord` per slot of a rollout block."""
    out = []
    for b, info in enumerate(ro.final_infos):
        steps = np.flatnonzero(ro.alive[:, b])
        actions = tuple(_to_action(ro.actions[t, b]) for t in steps)
        missing = [k for k in ("exit_layer", "prediction", "label", "correct") if k not in info]
        if missing:
            raise KeyError(
                f"terminal info lacks {missing}; the env must report them (interfaces.md)"
            )
        out.append(EpisodeRecord(
            sample_id=int(info.get("sample_id", ro.sample_ids[b])),
            actions=actions,
            exit_layer=int(info["exit_layer"]),
            prediction=int(info["prediction"]),
            label=int(info["label"]),
            correct=bool(info["correct"]),
            memorized_layer=int(info.get("memorized_layer", -1)),
            oracle_layer=int(info.get("oracle_layer", -1)),
            decisions=tuple(np.asarray(info.get("decisions", ())).ravel().tolist()),
            rewards=tuple(float(ro.rewards[t, b]) for t in steps),
            cost=float(info.get("cost", np.nan)),
            flops=float(info.get("flops", np.nan)),
            seed=seed,
        ))
    return out


def num_layers_of(env: Any) -> int:
    """Depth L of the env's backbone."""
    return _size_of(env, "num_layers",
                    "cannot tell the env's number of layers (no num_layers / cache)")


def env_observation(env: Any) -> str | None:
    """The observation spec an exit env was made with (``env.unwrapped.view.spec``), if known."""
    view = env_attr(env, "view")
    spec = getattr(view, "spec", None)
    return spec if isinstance(spec, str) else None


def check_observation(policy: Any, env: Any) -> None:
    """Fail early when the env's observation is not the one the policy was built for."""
    need = getattr(policy, "required_observation", None)
    have = env_observation(env)
    if need is None or have is None:
        return
    if need != have:
        raise ValueError(
            f"{type(policy).__name__} needs observation={need!r} but the env was made with "
            f"observation={have!r}; make the env with observation={need!r}"
        )


def as_policy(policy: Any, env: Any) -> Any:
    """``policy`` as a :class:`~exitgym.agents.base.Policy`: a stable-baselines3 model (``PPO``,
    ``A2C``, ``DQN``, ...) is wrapped in :class:`~exitgym.agents.sb3.SB3Policy`.

    Raises:
        TypeError: neither a Policy (``reset`` / ``act``) nor an SB3 model (``predict``).
    """
    if hasattr(policy, "act") and hasattr(policy, "reset"):
        return policy
    if hasattr(policy, "predict") and hasattr(policy, "policy"):
        from exitgym.agents.sb3 import SB3Policy

        return SB3Policy(policy, type(policy).__name__.lower(), env_observation(env))
    raise TypeError(f"evaluate needs a Policy (reset(num_envs) and act(obs, infos); see "
                    f"exitgym.agents.base.Policy) or a stable-baselines3 model, got "
                    f"{type(policy).__name__}")


def evaluate(
    policy: Any, env: Any, num_episodes: int | None = None,
    sample_ids: Sequence[int] | np.ndarray | None = None, seed: int = 0,
    deterministic: bool = True,
) -> EvalResult:
    """Greedy evaluation of any :class:`~exitgym.agents.base.Policy` on every sample once.

    Args:
        policy: Rule, learned policy, SB3 wrapper or a stable-baselines3 model (wrapped).
        env: Exit env made with the policy's ``required_observation`` — preferably the native
            vector env (``gym.make_vec(..., vectorization_mode="vector_entry_point")``), which runs
            ``num_envs`` samples per step.
        num_episodes: Evaluate the first ``num_episodes`` samples (default: all of the split).
        sample_ids: Explicit samples to evaluate (overrides ``num_episodes``).
        seed: Seed of the first reset (recorded in every EpisodeRecord).
        deterministic: Greedy actions (True, the evaluation protocol) or sampled ones.

    Returns:
        :class:`EvalResult` with accuracy, cost, speed-up, exit-layer histogram, the split it
        ran on (:func:`env_split`) and one :class:`EpisodeRecord` per sample in the order of
        ``sample_ids``.
    """
    policy = as_policy(policy, env)
    check_observation(policy, env)
    if sample_ids is None:
        total = num_samples_of(env)
        sample_ids = np.arange(total if num_episodes is None else min(num_episodes, total))
    ids = np.asarray(sample_ids, dtype=np.int64)
    if ids.size == 0:
        raise ValueError("evaluate needs at least one sample id")
    t0 = time.perf_counter()
    blocks = run_episodes(
        env, lambda o, i: policy.act(o, i, deterministic=deterministic), ids, seed,
        on_block_start=policy.reset,
    )
    records = [r for ro in blocks for r in records_from(ro, seed)]
    describe = getattr(policy, "describe", None)
    meta = {
        "policy": describe() if callable(describe) else {"method": type(policy).__name__},
        "seed": seed, "num_episodes": len(records), "wall_s": time.perf_counter() - t0,
    }
    return EvalResult.from_records(records, num_layers_of(env), meta, env_split(env))
