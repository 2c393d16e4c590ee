"""``exitgym/SwitchableDecision-v0``: choose every skip decision and a token strategy in one step.

The decision logic (:func:`run_decisions`) works on a cohort of episodes, so this single env (a
cohort of one) and the native vector env run exactly the same code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from exitgym.envs.exit_core import BlockSampler, check_sample_id
from exitgym.envs.rewards import RewardShape, make_reward
from exitgym.envs.skip_block import default_options
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

__all__ = ["SwitchableDecisionEnv", "decision_space", "run_decisions"]


def decision_space(num_layers: int) -> spaces.MultiDiscrete:
    """``MultiDiscrete([2]·(L−1) + [2]·(L−1) + [7])``: attention, FFN (1 = skip), token strategy."""
    return spaces.MultiDiscrete([2] * (2 * (num_layers - 1)) + [len(TOKEN_STRATEGIES)])


def run_decisions(world: SkipWorld, shape: RewardShape, policy_flops: float, space: spaces.Box,
                  cohort: Cohort, actions: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Run layers 2..L of every row with its decisions, answer with the final head.

    Args:
        actions: int ``[B, 2(L−1) + 1]`` rows of the decision space.

    Returns:
        ``(obs [B, H], rewards [B], terminal info arrays over B)``.
    """
    ex, last = world.executor, world.num_layers - 1
    cohort.flops = cohort.flops + policy_flops
    ex.drop_tokens(cohort, actions[:, -1])
    skip = actions[:, :-1].astype(bool)
    for k in range(last):
        ex.run_layer(cohort, skip[:, k], skip[:, last + k])
    everyone = np.ones(cohort.size, dtype=bool)
    logits = ex.answer(cohort, everyone)
    rewards, info = finish_rows(world, shape, cohort, everyone, logits, last)
    return observe(world, cohort, space, False), rewards, info


class SwitchableDecisionEnv(gym.Env[np.ndarray, np.ndarray]):
    """Switchable Decision (Zhang et al., ICML 2024) as a one-step (contextual bandit) episode.

    ## Description

    The agent sees the pooled state of an input after layer 1 and decides, all at once, which
    attention and feed-forward blocks of layers ``2..L`` to skip and which token strategy to apply
    after layer 1; the model then runs with those decisions (live: skipped blocks are really not
    computed, dropped tokens really removed) and the final head answers. This is the decision
    space and the inference path of the Switchable Decision paper, whose policy network reads the
    first layer's output and whose reward is ``quality + λ·computation``.

    ## Action Space

    ``MultiDiscrete([2]·(L−1) + [2]·(L−1) + [7])``: entries ``0..L−2`` skip (1) or keep (0) the
    attention block of layers ``2..L``, entries ``L−1..2L−3`` the feed-forward block of layers
    ``2..L``, the last entry the token strategy: ``0`` none, ``1/2/3`` drop the last 10/20/30 % of
    the non-first tokens (``k = (p·(n−1) + 50) // 100`` last real tokens), ``4/5/6`` drop every
    4th/3rd/2nd non-first token (positions ``j`` with ``j % period == 0``); the first token is
    always kept. All zeros runs the full model.

    ## Observation Space

    ``Box(float32, (H,))``: the pooled state after layer 1 (the backbone's pooling), clipped to
    ``[−pooled_clip, pooled_clip]`` (default 20; MiniLM-L6 stays within ±16). The terminal
    observation is the pooled state after layer ``L``.

    ## Rewards

    Any registered shape of :mod:`exitgym.envs.rewards`; ``reward="flops"`` is the paper's
    ``−CE − λ·c`` (set ``env.unwrapped.reward_shape.lam`` while training). Quality comes from the
    final head on the state actually computed; ``c`` = FLOPs actually spent (embeddings, layer 1,
    the blocks run at the real length left after the token strategy, the final head, plus
    ``policy_flops``) / FLOPs of the full model with its final head. All zeros costs exactly 1.

    ## Starting State

    ``reset`` picks an input uniformly with the seeded generator (or ``options={"sample_id":
    i}``), embeds it and runs layer 1.

    ## Episode End

    Always terminates after the one step. ``info`` at reset: ``layer`` (1), ``cost``,
    ``sample_id``; after the step also ``attention_skip_rate``, ``ffn_skip_rate`` (skipped over
    ``L − 1``), ``token_skip_rate`` (dropped / real tokens), ``token_strategy``, ``flops``,
    ``correct``, ``prediction``, ``label``, ``memorized_layer``, ``exit_layer`` (always ``L``).

    ## Arguments

    ```python
    gym.make("exitgym/SwitchableDecision-v0", task="rt-polarity", backbone="minilm-l6",
             split="train", heads="finetune", prepare_options=None, inputs=None, labels=None,
             text_pairs=None, max_length=None, reward="flops", alpha=None, policy_flops=0.0,
             pooled_clip=20.0, render_mode=None, **reward_kwargs)
    ```

    Same meaning as for ``exitgym/SkipBlock-v0`` (named, prepared on first use, with the
    skip-tolerant fine-tuned backbone by default; or injected objects; ``world=`` shares a
    prebuilt :class:`~exitgym.envs.skip_core.SkipWorld`). ``policy_flops`` is charged once (one
    policy evaluation per input).

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
        reward: str | RewardShape = "flops",
        alpha: float | None = None,
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
        self.policy_flops = check_policy_flops(policy_flops)
        self.observation_space = pooled_space(self.world.executor.backbone.hidden_size,
                                              pooled_clip, [])
        self.action_space = decision_space(self.num_layers)
        self._sampler = BlockSampler(1, self.world.num_samples)
        self._cohort: Cohort | None = None
        self._last = ""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options and set(options) - {"sample_id"}:
            raise ValueError(f"unknown reset options {sorted(set(options) - {'sample_id'})}; "
                             "allowed: {'sample_id': int}")
        if options and "sample_id" in options:
            sid = check_sample_id(options["sample_id"], self.world.num_samples)
        else:
            if self.np_random is not self._sampler.rngs[0]:
                self._sampler.set_rng(0, self.np_random)
            sid = self._sampler.draw_one()
        self._cohort = self.world.executor.start(np.array([sid]), np.zeros(1, dtype=np.int64))
        cost = float(self.world.executor.cost(self._cohort)[0])
        self._last = f"sample {sid}: after layer 1, cost={cost:.3f}"
        obs = observe(self.world, self._cohort, self.observation_space, False)[0]
        return obs, {"layer": 1, "cost": cost, "sample_id": sid}

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._cohort is None:
            raise RuntimeError("step() called before reset() or after the episode terminated; "
                               "call reset() to start an episode")
        a = np.asarray(action)
        if not self.action_space.contains(a):
            raise ValueError(
                f"invalid action {action!r}; allowed: an int array of shape "
                f"({2 * (self.num_layers - 1) + 1},): 0/1 skip flags for the attention then the "
                f"FFN of layers 2..{self.num_layers}, then a token strategy in 0..6 "
                f"({[s.name for s in TOKEN_STRATEGIES]})")
        cohort, self._cohort = self._cohort, None
        obs, rewards, terminal = run_decisions(self.world, self.reward_shape, self.policy_flops,
                                               self.observation_space, cohort,
                                               a.astype(np.int64)[None, :])
        info = {k: v[0].item() for k, v in terminal.items()}
        self._last = (f"sample {info['sample_id']}: prediction={info['prediction']} "
                      f"label={info['label']} cost={info['cost']:.3f}")
        return obs[0], float(rewards[0]), True, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return self._last or "SwitchableDecision: no episode yet (call reset())"
