"""``exitgym/SkipBlock-v0``: walk one input up the layers, choosing which sub-blocks to run.

The per-layer step logic (:func:`step_cohort`) works on a cohort of episodes, so this single env
(a cohort of one) and the native vector env run exactly the same code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from exitgym.envs.exit_core import BlockSampler, check_sample_id
from exitgym.envs.rewards import RewardShape, make_reward
from exitgym.envs.skip_core import (
    DEFAULT_HEADS,
    DEFAULT_POOLED_CLIP,
    SkipWorld,
    build_world,
    check_policy_flops,
    finish_rows,
    observe,
    pooled_space,
)
from exitgym.envs.skip_live import TOKEN_STRATEGIES, Cohort

__all__ = ["EXIT", "RUN", "SKIP_ATTENTION", "SKIP_FFN", "SKIP_LAYER", "SkipBlockEnv",
           "step_cohort"]

RUN, SKIP_ATTENTION, SKIP_FFN, SKIP_LAYER, EXIT = range(5)
ACTION_NAMES = ("run", "skip_attention", "skip_ffn", "skip_layer", "exit")
_SKIP_ATT = np.array([False, True, False, True, False])
_SKIP_FFN = np.array([False, False, True, True, False])


@dataclass(frozen=True)
class SkipRules:
    """Per-environment settings :func:`step_cohort` needs (fixed at construction)."""

    allow_exit: bool
    """Action 4 exits with the current layer's head."""
    dense: bool
    """Pay ``−w·Δcost`` every step instead of everything at the end."""
    policy_flops: float
    """FLOPs charged per decision (one policy evaluation)."""
    space: spaces.Box
    """Observation space (observations are clipped to it)."""


@dataclass(eq=False)
class CohortStep:
    """Outcome of one step of a cohort; arrays are over the cohort's rows before the step."""

    obs: np.ndarray
    """float32 ``[B, d]`` next (or final) observation."""
    rewards: np.ndarray
    """float64 ``[B]``."""
    done: np.ndarray
    """bool ``[B]``: the episode ended (exit or last layer)."""
    terminal: dict[str, np.ndarray]
    """Terminal info arrays over all B rows (meaningful where ``done``)."""
    survivors: Cohort | None
    """The rows that go on (None when every row finished)."""


def step_cohort(world: SkipWorld, shape: RewardShape, rules: SkipRules, cohort: Cohort,
                block: np.ndarray, token: np.ndarray | None) -> CohortStep:
    """Apply one decision per row: exit, or token drop (first step) and the next layer."""
    ex, size = world.executor, cohort.size
    cohort.flops = cohort.flops + rules.policy_flops
    exiting = (block == EXIT) if rules.allow_exit else np.zeros(size, dtype=bool)
    obs = np.empty((size, rules.space.shape[0]), dtype=np.float32)
    rewards = np.zeros(size, dtype=np.float64)
    terminal: dict[str, np.ndarray] = {}
    if exiting.any():
        logits = ex.answer(cohort, exiting)
        reward, info = finish_rows(world, shape, cohort, exiting, logits, cohort.layer)
        rewards[exiting] = reward
        _scatter(terminal, info, exiting)
        obs[exiting] = observe(world, cohort, rules.space, True)[exiting]
    done = exiting.copy()
    cont = ~exiting
    survivors = None
    if cont.any():
        sub = cohort if cont.all() else cohort.select(cont)
        if sub.layer == 0 and token is not None:
            ex.drop_tokens(sub, token[cont])
        b = block[cont]
        ex.run_layer(sub, _SKIP_ATT[b], _SKIP_FFN[b])
        if sub.layer == world.num_layers - 1:
            everyone = np.ones(sub.size, dtype=bool)
            logits = ex.answer(sub, everyone)
            reward, info = finish_rows(world, shape, sub, everyone, logits, sub.layer)
            rewards[cont] = reward
            _scatter(terminal, info, cont)
            done[cont] = True
        else:
            if rules.dense:
                cost = ex.cost(sub)
                weight = shape.cost_weight(world.memorized[sub.sample_ids], world.num_layers)
                rewards[cont] = -weight * (cost - sub.charged)
                sub.charged = cost
            survivors = sub
        obs[cont] = observe(world, sub, rules.space, True)
    return CohortStep(obs, rewards, done, terminal, survivors)


def _scatter(full: dict[str, np.ndarray], part: dict[str, np.ndarray], rows: np.ndarray) -> None:
    """Write ``part`` (arrays over ``rows``) into ``full`` (arrays over all rows, zero-filled)."""
    for key, values in part.items():
        if key not in full:
            full[key] = np.zeros(rows.shape[0], dtype=values.dtype)
        full[key][rows] = values


def make_spaces(world: SkipWorld, allow_exit: bool, token_strategy: bool, policy_flops: float,
                pooled_clip: float) -> tuple[spaces.Box, spaces.Space]:
    """Observation and action space of SkipBlock-v0 for these settings."""
    num_layers = world.num_layers
    min_den = float(world.executor.denominator.min())
    cost_high = 1.0 + (num_layers - 1) * policy_flops / min_den
    obs_space = pooled_space(world.executor.backbone.hidden_size, pooled_clip,
                             [1.0, cost_high])
    num_actions = 5 if allow_exit else 4
    action_space: spaces.Space = (
        spaces.MultiDiscrete([num_actions, len(TOKEN_STRATEGIES)]) if token_strategy
        else spaces.Discrete(num_actions))
    return obs_space, action_space


class SkipBlockEnv(gym.Env[np.ndarray, Any]):
    """Width-wise dynamic inference: at each layer run or skip its attention / feed-forward block.

    ## Description

    An episode takes one input up the layers of a pretrained encoder, live (hidden states depend
    on the decisions, so nothing is cached). Layer 1 always runs; then one step per layer
    ``2..L`` decides whether that layer's attention and feed-forward sub-blocks run. A skipped
    sub-block leaves the residual stream unchanged and is really not computed, so it costs no
    FLOPs. With ``token_strategy=True`` the first step also picks one of the Switchable Decision
    token strategies, applied after layer 1 (tokens really removed, so every later layer is
    cheaper). With ``allow_exit=True`` a fifth action exits with the current layer's head,
    mixing depth and width decisions. The answer comes from the final head (layer ``L``), or from
    the exit layer's head, on the state actually computed.

    ## Action Space

    ``Discrete(4)``: ``0`` run both sub-blocks of the next layer, ``1`` skip its attention, ``2``
    skip its feed-forward block, ``3`` skip the whole layer; ``allow_exit=True`` gives
    ``Discrete(5)`` with ``4`` = exit now with the current layer's head.
    With ``token_strategy=True`` the action is ``MultiDiscrete([4 or 5, 7])``: (block action,
    token strategy). The token strategy is read on the first step only (ignored later, and not
    applied when the first action exits): ``0`` none, ``1/2/3`` drop the last 10/20/30 % of the
    non-first tokens (``k = (p·(n−1) + 50) // 100`` last real tokens), ``4/5/6`` drop every
    4th/3rd/2nd non-first token (positions ``j`` with ``j % period == 0``). The first token is
    always kept; see :mod:`exitgym.envs.skip_live`.

    ## Observation Space

    ``Box(float32, (H + 2,))``: the pooled current state (the backbone's pooling, what the heads
    read) clipped to ``[−pooled_clip, pooled_clip]`` (default 20; MiniLM-L6 stays within ±16),
    the layer fraction ``l/L`` of the layer just computed, and the cost fraction spent so far
    (in ``[0, 1]``; higher only with ``policy_flops``).

    ## Rewards

    Any registered shape of :mod:`exitgym.envs.rewards` (``vanilla``, ``hardness``, ``accuracy``,
    ``flops`` or your own): ``R = quality − w·c`` with the quality (−CE or correctness) of the
    answering head and ``c`` = FLOPs actually spent (embeddings, layer 1, the sub-blocks run at
    each sample's current real length, the answering head, ``policy_flops`` per decision) /
    FLOPs of the full model with its final head (DESIGN.md). Running everything costs exactly 1.
    ``hardness`` uses the memorized layer of the unskipped model. Terminal by default;
    ``dense=True`` pays ``−w·Δc`` each step and the rest at the end (same return).

    ## Starting State

    ``reset`` picks an input uniformly with the seeded generator (or ``options={"sample_id":
    i}``), embeds it and runs layer 1; the observation is the state after layer 1.

    ## Episode End

    Terminates after the decision on layer ``L`` (``L − 1`` steps) or on exit. Never truncated.
    ``info`` every step: ``layer`` (1-based, last computed), ``cost``, ``sample_id``; at the end
    also ``exit_layer`` (whose head answered), ``prediction``, ``label``, ``correct``, ``flops``,
    ``memorized_layer``, ``attention_skip_rate`` / ``ffn_skip_rate`` (skipped blocks over the
    layers decided, ``exit_layer − 1``), ``token_skip_rate`` (dropped / real tokens) and
    ``token_strategy`` (index applied).

    ## Arguments

    ```python
    gym.make("exitgym/SkipBlock-v0", task="rt-polarity", backbone="minilm-l6", split="train",
             heads="finetune", prepare_options=None, inputs=None, labels=None, text_pairs=None,
             max_length=None, reward="vanilla", alpha=None, dense=False, allow_exit=False,
             token_strategy=False, policy_flops=0.0, pooled_clip=20.0, render_mode=None,
             **reward_kwargs)
    ```

    - ``task``, ``split``, ``backbone``, ``heads`` (names): prepared on first use by
      ``exitgym.data.prepare``. Default: ``heads="finetune"`` with ``prepare_options=``
      :data:`~exitgym.envs.skip_core.DEFAULT_PREPARE_OPTIONS` (``skip_prob=0.15``,
      ``finetune_samples=2000``, ``max_length=64``): backbone and heads fine-tuned with random
      block skipping, so the backbone tolerates skips. ``heads="frozen"`` uses frozen-backbone
      heads (no fine-tuning; skips then hurt more). ``max_length`` overrides the prepared one.
    - Injection (tests, custom models): ``backbone`` a ``Backbone``, ``heads`` its
      ``ExitHeads``, ``inputs`` texts or a dict of token ids, ``labels``.
    - ``reward``, ``alpha``, ``reward_kwargs``: the reward shape; ``dense``: delivery.
    - ``allow_exit``, ``token_strategy``: extend the action space (above).
    - ``policy_flops``: FLOPs of one policy evaluation, charged per decision.
    - ``pooled_clip``: bound of the pooled part of the observation.
    - ``world``: a prebuilt :class:`~exitgym.envs.skip_core.SkipWorld` (``env.unwrapped.world``
      of another env) to share one backbone and tokenized split between environments; the
      arguments that build a world are then ignored.

    ## Version History

    - v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        task: str = "rt-polarity",
        backbone: Any = "minilm-l6",
        split: str = "train",
        heads: Any = DEFAULT_HEADS,
        prepare_options: Mapping[str, Any] | None = None,
        inputs: Sequence[str] | Mapping[str, Any] | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        text_pairs: Sequence[str] | None = None,
        max_length: int | None = None,
        reward: str | RewardShape = "vanilla",
        alpha: float | None = None,
        dense: bool = False,
        allow_exit: bool = False,
        token_strategy: bool = False,
        policy_flops: float = 0.0,
        pooled_clip: float = DEFAULT_POOLED_CLIP,
        render_mode: str | None = None,
        world: SkipWorld | None = None,
        **reward_kwargs: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported; allowed: None or "
                             f"{self.metadata['render_modes']}")
        self.render_mode = render_mode
        self.world = world or build_world(task, backbone, split, heads, inputs, labels,
                                          text_pairs, max_length, default_options(
                                              heads, prepare_options))
        self.num_layers = self.world.num_layers
        self.reward_shape = make_reward(reward, alpha, **reward_kwargs)
        self.token_strategy = bool(token_strategy)
        policy_flops = check_policy_flops(policy_flops)
        self.observation_space, self.action_space = make_spaces(
            self.world, bool(allow_exit), self.token_strategy, policy_flops, pooled_clip)
        self.rules = SkipRules(bool(allow_exit), bool(dense), policy_flops,
                               self.observation_space)
        self._sampler = BlockSampler(1, self.world.num_samples)
        self._cohort: Cohort | None = None
        self._last: str = ""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        sid = self._pick(options)
        self._cohort = self.world.executor.start(np.array([sid]), np.zeros(1, dtype=np.int64))
        obs = observe(self.world, self._cohort, self.observation_space, True)[0]
        cost = float(self.world.executor.cost(self._cohort)[0])
        self._last = f"sample {sid}: layer 1/{self.num_layers} cost={cost:.3f}"
        return obs, {"layer": 1, "cost": cost, "sample_id": sid}

    def _pick(self, options: dict[str, Any] | None) -> int:
        if options and set(options) - {"sample_id"}:
            raise ValueError(f"unknown reset options {sorted(set(options) - {'sample_id'})}; "
                             "allowed: {'sample_id': int}")
        if options and "sample_id" in options:
            return check_sample_id(options["sample_id"], self.world.num_samples)
        if self.np_random is not self._sampler.rngs[0]:
            self._sampler.set_rng(0, self.np_random)
        return self._sampler.draw_one()

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._cohort is None:
            raise RuntimeError("step() called before reset() or after the episode terminated; "
                               "call reset() to start an episode")
        block, token = self._parse(action)
        cohort = self._cohort
        out = step_cohort(self.world, self.reward_shape, self.rules, cohort, block, token)
        self._cohort = out.survivors
        if out.done[0]:
            info = {k: v[0].item() for k, v in out.terminal.items()}
            self._last = (f"sample {info['sample_id']}: answered at layer {info['exit_layer']} "
                          f"prediction={info['prediction']} label={info['label']} "
                          f"cost={info['cost']:.3f}")
        else:
            assert out.survivors is not None
            cost = float(self.world.executor.cost(out.survivors)[0])
            info = {"layer": out.survivors.layer + 1, "cost": cost,
                    "sample_id": int(out.survivors.sample_ids[0])}
            self._last = f"sample {info['sample_id']}: layer {info['layer']} cost={cost:.3f}"
        return out.obs[0], float(out.rewards[0]), bool(out.done[0]), False, info

    def _parse(self, action: Any) -> tuple[np.ndarray, np.ndarray | None]:
        a = np.asarray(action)
        if not self.action_space.contains(a):
            raise ValueError(f"invalid action {action!r}; allowed: {_describe(self.action_space)}")
        if self.token_strategy:
            return a[:1].astype(np.int64), a[1:2].astype(np.int64)
        return a.reshape(1).astype(np.int64), None

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return self._last or "SkipBlock: no episode yet (call reset())"


def _describe(space: spaces.Space) -> str:
    if isinstance(space, spaces.Discrete):
        names = ", ".join(f"{i} {ACTION_NAMES[i]}" for i in range(int(space.n)))
        return f"an int in [0, {int(space.n) - 1}] ({names})"
    n_block, n_token = (int(v) for v in space.nvec)
    return (f"a pair [block action in 0..{n_block - 1}, token strategy in 0..{n_token - 1}] "
            f"(token strategies: {[s.name for s in TOKEN_STRATEGIES]})")


def default_options(heads: Any, prepare_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``prepare_options`` or, for the default ``finetune`` heads, the skip-tolerant defaults."""
    from exitgym.envs.skip_core import DEFAULT_PREPARE_OPTIONS

    if prepare_options is not None:
        return dict(prepare_options)
    return dict(DEFAULT_PREPARE_OPTIONS) if heads == "finetune" else {}
