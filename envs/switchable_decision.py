"""``exitgym/SwitchableDecision-v0``: choose every skip decision and a token strategy in one step.

The decision logic (:func:`~exitgym.envs.skip_core.run_decisions`) works on a cohort of
episodes; :class:`SwitchableFamily` applies it for both this single env (a cohort of one) and the
native vector env, so they run exactly the same code.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from exitgym.envs.settings import SwitchableSettings
from exitgym.envs.skip_core import pooled_space, run_decisions
from exitgym.envs.skip_env import CohortStep, SkipEnv, SkipFamily
from exitgym.envs.skip_live import TOKEN_STRATEGIES, Cohort

__all__ = ["SwitchableDecisionEnv", "SwitchableFamily", "decision_space", "run_decisions"]


def decision_space(num_layers: int, token_strategies: bool = True) -> spaces.MultiDiscrete:
    """``MultiDiscrete([2]·(L−1) + [2]·(L−1) + [7])``: attention, FFN (1 = skip), token strategy;
    without ``token_strategies`` (decoder backbones) the last entry is left out."""
    tokens = [len(TOKEN_STRATEGIES)] if token_strategies else []
    return spaces.MultiDiscrete([2] * (2 * (num_layers - 1)) + tokens)


class SwitchableFamily(SkipFamily):
    """SwitchableDecision-v0's spaces and step, shared by the single and the vector env."""

    settings_class = SwitchableSettings
    extras = False

    def _spaces(self) -> tuple[spaces.Box, spaces.Space]:
        self._obs_box = pooled_space(self.world.executor.backbone.hidden_size,
                                     self.settings.pooled_clip, [])
        return self._obs_box, decision_space(self.num_layers, self.world.token_strategies)

    def _step_cohort(self, cohort: Cohort, actions: np.ndarray) -> CohortStep:
        obs, rewards, terminal = run_decisions(self.world, self.reward_shape, self.policy_flops,
                                               self._obs_box, cohort, actions)
        return CohortStep(obs, rewards, np.ones(cohort.size, dtype=bool), terminal, None)


class SwitchableDecisionEnv(SwitchableFamily, SkipEnv):
    """Switchable Decision (Zhang et al., ICML 2024) as a one-step (contextual bandit) episode.

    ## Description

    The agent sees the pooled state of an input after layer 1 and decides, all at once, which
    attention and feed-forward blocks of layers ``2..L`` to skip and which token strategy to apply
    after layer 1; the model then runs with those decisions (live: skipped blocks are really not
    computed, dropped tokens really removed) and the final head answers. This is the decision
    space and the inference path of the Switchable Decision paper, whose policy network reads the
    first layer's output and whose reward is ``quality + λ·computation``.

    **Decoder backbones** (``backbone="smollm2-135m"``, a local decoder directory, a
    ``DecoderBackbone`` or a Llama / GPT-2 config): the input is a prompt (the task split's texts
    or ``prompts=``), the observation the final norm of its last position after layer 1, and the
    decisions are held for the prefill and the whole greedy continuation of ``max_new_tokens``
    tokens, which is compared with the full-depth greedy continuation (see ``SkipBlock-v0`` and
    :mod:`exitgym.envs.skip_decoder`). The token-strategy entry is left out of the action:
    dropping prompt tokens would leave holes that shift every later position of exitgym's KV
    cache, and generated tokens cannot be dropped before they exist (Switchable Decision drops
    the *encoder's* input tokens of its encoder-decoder models).

    ## Action Space

    ``MultiDiscrete([2]·(L−1) + [2]·(L−1) + [7])``: entries ``0..L−2`` skip (1) or keep (0) the
    attention block of layers ``2..L``, entries ``L−1..2L−3`` the feed-forward block of layers
    ``2..L``, the last entry the token strategy: ``0`` none, ``1/2/3`` drop the last 10/20/30 % of
    the non-first tokens (``k = (p·(n−1) + 50) // 100`` last real tokens), ``4/5/6`` drop every
    4th/3rd/2nd non-first token (positions ``j`` with ``j % period == 0``); the first token is
    always kept. All zeros runs the full model. Decoder backbones:
    ``MultiDiscrete([2]·(L−1) + [2]·(L−1))`` (no token strategy).

    ## Observation Space

    ``Box(float32, (H,))``:

    | Index      | Name                   | Min           | Max          |
    |------------|------------------------|---------------|--------------|
    | 0 .. H − 1 | pooled state after l=1 | −pooled_clip  | pooled_clip  |

    The pooled state is the backbone's pooling of the hidden states after layer 1, clipped to
    ``pooled_clip`` (default 20; MiniLM-L6 stays within ±16). The terminal observation is the
    pooled state after layer ``L``.

    ## Rewards

    Any registered shape of :mod:`exitgym.envs.rewards`; ``reward="flops"`` is the paper's
    ``−CE − λ·c`` (set ``env.unwrapped.reward_shape.lam`` while training). Quality comes from the
    final head on the state actually computed; ``c`` = FLOPs actually spent (embeddings, layer 1,
    the blocks run at the real length left after the token strategy, the final head, plus
    ``policy_flops``) / FLOPs of the full model with its final head. All zeros costs exactly 1.
    Decoders: ``−CE`` of the full-depth continuation under the skips (teacher-forced), agreement
    with it as correctness, and the FLOPs of the prefill and every generated token (as for
    ``SkipBlock-v0``); ``hardness`` is refused.

    ## Starting State

    ``reset`` picks an input uniformly with the seeded generator (or ``options={"sample_id":
    i}``), embeds it and runs layer 1.

    ## Episode End

    Always terminates after the one step. ``info`` at reset: ``layer`` (1), ``cost``,
    ``sample_id``; after the step also ``attention_skip_rate``, ``ffn_skip_rate`` (skipped over
    ``L − 1``), ``token_skip_rate`` (dropped / real tokens), ``token_strategy``, ``flops``,
    ``correct``, ``prediction``, ``label``, ``memorized_layer``, ``exit_layer`` (always ``L``).
    Decoders add the generation keys of ``SkipBlock-v0`` (``generated_ids``, ``agreement``,
    ``ce``, ``skipped_attention``, ...).

    ## Arguments

    ```python
    gym.make("exitgym/SwitchableDecision-v0", task="rt-polarity", backbone="minilm-l6",
             split="policy", heads="joint", text_column="text", label_column="label",
             text_pair_column=None, prepare_options=None, inputs=None, labels=None,
             text_pairs=None, max_length=None, reward="flops", alpha=None, policy_flops=0.0,
             pooled_clip=20.0, render_mode=None, world=None, prompts=None, max_prompts=64,
             max_prompt_tokens=32, max_new_tokens=16, device="auto", dtype="float32",
             **reward_kwargs)
    ```

    The keyword arguments are the fields of :class:`~exitgym.envs.settings.SwitchableSettings`
    (each documented there); ``SwitchableDecisionEnv(settings)`` takes such an object instead.
    Same meaning as for ``exitgym/SkipBlock-v0`` (named, prepared on first use, with the
    skip-tolerant fine-tuned backbone by default; or injected objects; ``world=`` shares a
    prebuilt :class:`~exitgym.envs.skip_core.SkipWorld`). ``policy_flops`` is charged once (one
    policy evaluation per input). ``prompts``, ``max_prompts``, ``max_prompt_tokens`` and
    ``max_new_tokens`` are for decoder backbones (as for ``SkipBlock-v0``).

    ## Version History

    - v0: initial version. Since 2026-11-29 the default ``split`` is ``policy`` (training rows
      the exit heads were not fitted on) instead of ``train``; rewards and observations unchanged.
      Since 2026-11-30 a decoder ``backbone`` (new arguments ``prompts``, ``max_prompts``,
      ``max_prompt_tokens``, ``max_new_tokens``) runs the decisions held for a greedy
      continuation, without the token-strategy entry; encoder episodes are unchanged.

    ## Examples

    >>> import gymnasium as gym
    >>> import numpy as np
    >>> import exitgym

    By name, the skip-tolerant fine-tuned MiniLM is prepared on first use (minutes):

    >>> env = gym.make("exitgym/SwitchableDecision-v0", reward="flops", lam=0.1)  # doctest: +SKIP

    :func:`~exitgym.envs.skip_core.synthetic_world` (a tiny random-init backbone with random heads
    on random token ids, injected as ``backbone=``, ``heads=``, ``inputs=``, ``labels=``) runs
    offline in a second:

    >>> from exitgym.envs.skip_core import synthetic_world
    >>> world = synthetic_world(num_samples=6, num_layers=3, hidden_size=16)
    >>> env = gym.make("exitgym/SwitchableDecision-v0", world=world, lam=0.1)
    >>> env.observation_space.shape, env.action_space
    ((16,), MultiDiscrete([2 2 2 2 7]))
    >>> obs, info = env.reset(seed=0)
    >>> keep_all = np.zeros(5, dtype=np.int64)  # run the full model, drop no token
    >>> obs, reward, terminated, truncated, info = env.step(keep_all)
    >>> terminated, info["exit_layer"], round(info["cost"], 9)
    (True, 3, 1.0)
    >>> skip = np.array([1, 0, 0, 1, 6])  # no attention in layer 2, no FFN in 3, drop 1/2 tokens
    >>> _ = env.reset()
    >>> info = env.step(skip)[-1]
    >>> info["attention_skip_rate"], info["ffn_skip_rate"], info["token_strategy"]
    (0.5, 0.5, 6)
    """

    title = "SwitchableDecision"
    reset_text = "sample {sample_id}: after layer 1, cost={cost:.3f}"
    end_text = "sample {sample_id}: prediction={prediction} label={label} cost={cost:.3f}"

    def _describe_actions(self) -> str:
        flags = (f"0/1 skip flags for the attention then the FFN of layers "
                 f"2..{self.num_layers}")
        if not self.world.token_strategies:
            return f"an int array of shape ({2 * (self.num_layers - 1)},): {flags}"
        return (f"an int array of shape ({2 * (self.num_layers - 1) + 1},): {flags}, then a token "
                f"strategy in 0..6 ({[s.name for s in TOKEN_STRATEGIES]})")
