"""``exitgym/SkipBlock-v0``: walk one input up the layers, choosing which sub-blocks to run.

The per-layer step logic (:func:`step_cohort`) works on a cohort of episodes;
:class:`SkipBlockFamily` applies it for both this single env (a cohort of one) and the native
vector env, so they run exactly the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from exitgym.envs.rewards import RewardShape
from exitgym.envs.settings import SkipBlockSettings
from exitgym.envs.skip_core import SkipWorld, observe, pooled_space
from exitgym.envs.skip_env import CohortStep, SkipEnv, SkipFamily
from exitgym.envs.skip_live import TOKEN_STRATEGIES, Cohort

__all__ = ["EXIT", "RUN", "SKIP_ATTENTION", "SKIP_FFN", "SKIP_LAYER", "SkipBlockEnv",
           "SkipBlockFamily", "step_cohort"]

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
        reward, info = world.finish(shape, cohort, exiting, cohort.layer)
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
            reward, info = world.finish(shape, sub, everyone, sub.layer)
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


class SkipBlockFamily(SkipFamily):
    """SkipBlock-v0's spaces and step, shared by :class:`SkipBlockEnv` and its vector env."""

    settings_class = SkipBlockSettings
    extras = True
    settings: SkipBlockSettings

    def _spaces(self) -> tuple[spaces.Box, spaces.Space]:
        s = self.settings
        self.token_strategy = bool(s.token_strategy)
        if self.token_strategy and not self.world.token_strategies:
            raise ValueError("token_strategy=True is for encoder backbones; a decoder backbone "
                             "holds its skips for the whole continuation and drops no prompt "
                             "token (docs/design.md §6.1)")
        obs_space, action_space = make_spaces(self.world, bool(s.allow_exit), self.token_strategy,
                                              self.policy_flops, s.pooled_clip)
        self.rules = SkipRules(bool(s.allow_exit), bool(s.dense), self.policy_flops, obs_space)
        return obs_space, action_space

    def _step_cohort(self, cohort: Cohort, actions: np.ndarray) -> CohortStep:
        if self.token_strategy:
            return step_cohort(self.world, self.reward_shape, self.rules, cohort,
                               actions[:, 0].copy(), actions[:, 1].copy())
        return step_cohort(self.world, self.reward_shape, self.rules, cohort, actions, None)


class SkipBlockEnv(SkipBlockFamily, SkipEnv):
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

    **Decoder backbones** (``backbone="smollm2-135m"``, a local decoder directory, a
    ``DecoderBackbone`` or a Llama / GPT-2 config): an episode is one prompt (the task split's
    texts or ``prompts=``). Layer 1 runs on the prompt; each step decides the next layer's
    sub-blocks on the prompt, and the decision is **held** for the whole greedy continuation of
    ``max_new_tokens`` tokens (prefill and every generated token skip the same blocks; a skipped
    attention writes no keys or values, so that layer's cache stays empty for the episode). An
    exit at layer ``t`` skips every layer above ``t`` for the whole continuation and answers with
    the model's final norm + LM head on layer ``t``'s state. After the last decision the
    continuation is generated and compared with the full-depth greedy continuation of the same
    prompt (:mod:`exitgym.envs.skip_decoder`). Token strategies are refused for decoders.

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

    ``Box(float32, (H + 2,))``, after layer ``l`` (the layer just computed):

    | Index      | Name           | Min            | Max                                         |
    |------------|----------------|----------------|---------------------------------------------|
    | 0 .. H − 1 | pooled state   | −pooled_clip   | pooled_clip                                 |
    | H          | layer fraction | 0              | 1 (``l/L``)                                 |
    | H + 1      | cost so far    | 0              | 1 + (L − 1)·policy_flops / min full FLOPs   |

    The pooled state is the backbone's pooling of the current hidden states (what the heads
    read), clipped to ``pooled_clip`` (default 20; MiniLM-L6 stays within ±16). The cost fraction
    stays in ``[0, 1]`` unless ``policy_flops`` are charged. Decoders: the pooled state is the
    final norm of the prompt's last position (what the LM head reads to emit the first token).

    ## Rewards

    Any registered shape of :mod:`exitgym.envs.rewards` (``vanilla``, ``hardness``, ``accuracy``,
    ``flops`` or your own): ``R = quality − w·c`` with the quality (−CE or correctness) of the
    answering head and ``c`` = FLOPs actually spent (embeddings, layer 1, the sub-blocks run at
    each sample's current real length, the answering head, ``policy_flops`` per decision) /
    FLOPs of the full model with its final head (docs/design.md). Running everything costs
    exactly 1.
    ``hardness`` uses the memorized layer of the unskipped model. Terminal by default;
    ``dense=True`` pays ``−w·Δc`` each step and the rest at the end (same return).

    Decoders: quality is measured against the full-depth greedy continuation ``y*`` of the
    prompt: ``−CE`` is minus the mean cross-entropy of ``y*`` under the skips (teacher-forced,
    evaluation only), correctness is the agreement (the share of the ``max_new_tokens``
    positions where the generated token equals ``y*``'s). ``c`` = FLOPs actually run over the
    prefill and every generated token (skipped blocks cost nothing; attention over the cache as
    in :mod:`exitgym.backbones.decoder_flops`; one LM head per token) / the same at full depth.
    ``hardness`` is refused (its memorized layer is per input; a continuation has one per token).

    ## Starting State

    ``reset`` picks an input uniformly with the seeded generator (or ``options={"sample_id":
    i}``), embeds it and runs layer 1; the observation is the state after layer 1.

    ## Episode End

    Terminates after the decision on layer ``L`` (``L − 1`` steps) or on exit. Never truncated.
    ``info`` every step: ``layer`` (1-based, last computed), ``cost``, ``sample_id``; at the end
    also ``exit_layer`` (whose head answered), ``prediction``, ``label``, ``correct``, ``flops``,
    ``memorized_layer``, ``attention_skip_rate`` / ``ffn_skip_rate`` (skipped blocks over the
    layers decided, ``exit_layer − 1``), ``token_skip_rate`` (dropped / real tokens) and
    ``token_strategy`` (index applied). Decoders add ``prompt``, ``prompt_ids``,
    ``generated_ids``, ``generated_text``, ``reference_ids`` (``y*``), ``agreement``,
    ``prefix_agreement`` (leading agreeing tokens / ``max_new_tokens``), ``ce``, ``full_flops``,
    ``skipped_attention`` / ``skipped_ffn`` (1-based layers); ``prediction`` / ``label`` are the
    last generated / reference token, ``correct`` = the whole continuation agrees.

    ## Arguments

    ```python
    gym.make("exitgym/SkipBlock-v0", task="rt-polarity", backbone="minilm-l6", split="policy",
             heads="joint", text_column="text", label_column="label", text_pair_column=None,
             prepare_options=None, inputs=None, labels=None, text_pairs=None,
             max_length=None, reward="vanilla", alpha=None, dense=False, allow_exit=False,
             token_strategy=False, policy_flops=0.0, pooled_clip=20.0, render_mode=None,
             world=None, prompts=None, max_prompts=64, max_prompt_tokens=32,
             max_new_tokens=16, device="auto", dtype="float32", **reward_kwargs)
    ```

    The keyword arguments are the fields of :class:`~exitgym.envs.settings.SkipBlockSettings`
    (each documented there); ``SkipBlockEnv(settings)`` takes such an object instead. A key that
    is not a field goes to the reward shape (``lam=`` for ``reward="flops"``); any other is
    refused with the allowed keys listed.

    - ``task``, ``split``, ``backbone``, ``heads`` (names): prepared on first use by
      ``exitgym.data.prepare``. Default: ``heads="joint"`` with ``prepare_options=``
      :data:`~exitgym.envs.skip_core.DEFAULT_PREPARE_OPTIONS` (``skip_prob=0.15``,
      ``max_length=64``): backbone and heads fine-tuned on the training split with random
      block skipping, so the backbone tolerates skips. ``heads="frozen"`` uses frozen-backbone
      heads (no fine-tuning; skips then hurt more). ``max_length`` overrides the prepared one;
      ``text_column``, ``label_column``, ``text_pair_column`` name a local data file's columns.
    - Injection (tests, custom models): ``backbone`` a ``Backbone``, ``heads`` its
      ``ExitHeads``, ``inputs`` texts or a dict of token ids, ``labels``.
    - ``reward``, ``alpha``, ``reward_kwargs``: the reward shape; ``dense``: delivery.
    - ``allow_exit``, ``token_strategy``: extend the action space (above).
    - ``policy_flops``: FLOPs of one policy evaluation, charged per decision.
    - ``pooled_clip``: bound of the pooled part of the observation.
    - ``device``, ``dtype``: where and in which precision backbone and heads run (``auto``:
      CUDA when present; injected models are moved there; ``world.device`` says where they
      run). Ignored with ``world=``, which runs where it was built.
    - ``world``: a prebuilt :class:`~exitgym.envs.skip_core.SkipWorld`
      (``env.unwrapped.world`` of another env) to share one backbone and tokenized split
      between environments; the arguments that build a world are then ignored.
    - Decoders: ``backbone`` a decoder (above); ``prompts`` texts, token-id lists or a text
      file (default: the ``task`` split's texts), the first ``max_prompts``, each cut to
      ``max_prompt_tokens``; ``max_new_tokens`` greedy tokens per episode. ``heads`` must stay
      the default (or ``"lm-head"``); ``inputs``, ``labels``, ``text_pairs``, ``max_length``,
      ``prepare_options`` and ``token_strategy=True`` are encoder-only and refused.

    ## Version History

    - v0: initial version. Since 2026-11-29 the default ``split`` is ``policy`` (training rows
      the exit heads were not fitted on) instead of ``train``; rewards and observations unchanged.
      Since 2026-11-30 a decoder ``backbone`` (new arguments ``prompts``, ``max_prompts``,
      ``max_prompt_tokens``, ``max_new_tokens``) runs skips held for a greedy continuation;
      encoder episodes are unchanged.

    ## Examples

    >>> import gymnasium as gym
    >>> import exitgym

    By name, the skip-tolerant fine-tuned MiniLM is prepared on first use (minutes):

    >>> env = gym.make("exitgym/SkipBlock-v0")  # doctest: +SKIP

    :func:`~exitgym.envs.skip_core.synthetic_world` (a tiny random-init backbone with random heads
    on random token ids, injected as ``backbone=``, ``heads=``, ``inputs=``, ``labels=``) runs
    offline in a second:

    >>> from exitgym.envs.skip_core import synthetic_world
    >>> world = synthetic_world(num_samples=6, num_layers=3, hidden_size=16)
    >>> env = gym.make("exitgym/SkipBlock-v0", world=world, allow_exit=True)
    >>> env.observation_space.shape, env.action_space
    ((18,), Discrete(5))
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(1)  # layer 2 without its attention
    >>> terminated, info["layer"]
    (False, 2)
    >>> obs, reward, terminated, truncated, info = env.step(4)  # exit with layer 2's head
    >>> terminated, info["exit_layer"], info["attention_skip_rate"], info["ffn_skip_rate"]
    (True, 2, 1.0, 0.0)

    Another environment (or a vector env) can share the world, the tokenized inputs included:

    >>> from exitgym.envs import SkipBlockSettings
    >>> from exitgym.envs.skip_block import SkipBlockEnv
    >>> pairs = SkipBlockEnv(SkipBlockSettings(world=world, token_strategy=True))
    >>> pairs.action_space
    MultiDiscrete([4 7])
    >>> venv = gym.make_vec("exitgym/SkipBlock-v0", num_envs=2, world=world,
    ...                     vectorization_mode="vector_entry_point")
    >>> venv.reset(seed=0)[0].shape
    (2, 18)

    A decoder (a tiny random-init Llama here; ``backbone="smollm2-135m"`` for the embedded one):

    >>> from transformers import LlamaConfig
    >>> tiny = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
    ...                    num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1)
    >>> env = gym.make("exitgym/SkipBlock-v0", backbone=tiny, prompts=[[5, 9, 2], [7, 7]],
    ...                max_new_tokens=4)
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(0)  # layer 2 in full
    >>> obs, reward, terminated, truncated, info = env.step(2)  # layer 3 without its FFN
    >>> terminated, len(info["generated_ids"]), info["skipped_ffn"]
    (True, 4, [3])
    """

    title = "SkipBlock"
    reset_text = "sample {sample_id}: layer 1/{num_layers} cost={cost:.3f}"
    end_text = ("sample {sample_id}: answered at layer {exit_layer} prediction={prediction} "
                "label={label} cost={cost:.3f}")

    def _describe_actions(self) -> str:
        return _describe(self.action_space)


def _describe(space: spaces.Space) -> str:
    if isinstance(space, spaces.Discrete):
        names = ", ".join(f"{i} {ACTION_NAMES[i]}" for i in range(int(space.n)))
        return f"an int in [0, {int(space.n) - 1}] ({names})"
    n_block, n_token = (int(v) for v in space.nvec)
    return (f"a pair [block action in 0..{n_block - 1}, token strategy in 0..{n_token - 1}] "
            f"(token strategies: {[s.name for s in TOKEN_STRATEGIES]})")
