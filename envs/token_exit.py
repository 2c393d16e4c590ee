"""``exitgym/TokenExit-v0``: generate with a decoder LM, deciding at every layer of every token.

Importing this module does not import torch; making an environment loads the decoder.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from exitgym.envs.sampling import BlockSampler, reset_sample_id
from exitgym.envs.settings import TokenExitSettings, check_render_mode
from exitgym.envs.token_core import TokenCore

__all__ = ["TokenExitEnv"]

CONTINUE, EXIT = 0, 1


class TokenExitEnv(TokenCore, gym.Env[np.ndarray, np.int64]):
    """Token-level early exit in greedy generation: one step per layer of the current token.

    ## Description

    An episode generates up to ``max_new_tokens`` tokens greedily from one prompt (a text of the
    task's split, or one of ``prompts=``) with a decoder LM. Each token climbs the layers; after
    each layer the agent *continues* or *exits*, and the exiting layer's head (the model's final
    norm + LM head, applied at any layer) picks the token, which is appended; the next token starts
    at layer 1. This is the setting of CALM and ConsistentEE's LLaMA experiments. The layers an
    exited token skipped still owe later tokens their keys and values; ``kv=`` says how they get
    them: ``copy`` (the exit state is passed up, CALM / ConsistentEE), ``recompute`` (caught up in
    one chunk with the next token that reaches them, EE-LLM / FREE) or ``full`` (every layer runs,
    only the output exits: CALM's oracle setting). With ``kv="full"`` and ``teacher_forcing=True``
    nothing depends on the decisions, and ``cached=True`` precomputes every step.

    ## Action Space

    ``Discrete(2)``: ``0`` continue to the next layer, ``1`` exit with the current layer's head.

    ## Observation Space

    ``Box(float32)``, chosen by ``observation=`` like ``EarlyExit-v0``'s views over the current
    token's layers (``V`` = vocabulary size). The default ``features`` view, after layer ``l``:

    | Index | Name             | Min | Max                                            |
    |-------|------------------|-----|------------------------------------------------|
    | 0     | layer fraction   | 0   | 1 (``l/L``)                                    |
    | 1     | max probability  | 0   | 1 (over the ``V`` tokens)                      |
    | 2     | entropy / log V  | 0   | 1                                              |
    | 3     | top-2 margin     | 0   | 1 (CALM's softmax difference)                  |
    | 4     | patience / L     | 0   | 1 (run of identical head tokens ending at l)   |
    | 5     | token cost so far| 0   | a bound on this token's cost fraction          |

    ``logits`` (V), ``hidden`` (H, the token's state after layer ``l``), ``prev`` (after
    ``l − 1``) and ``depth`` (columns 0 and 5 of the table) combine with ``+``;
    ``depth+hidden+prev`` gives CALM's state saturation. ``predictor`` (1) is a learned exit
    predictor's P(the layer's head agrees with the last layer) from the state alone (the one
    fitted beside ``heads="trained"``, or ``predictor=``; its ``2·H + 2`` FLOPs a layer are
    charged as the policy's). With only ``depth`` / ``hidden`` / ``prev`` / ``predictor`` no
    head runs before the exit, and none is charged.

    ## Rewards

    Each exit pays the token's reward; continue steps pay 0. The label is the full-depth model's
    token on the same prefix ``y*``: the registered shapes apply unchanged with ``CE_t = −log
    p_t(y*)`` and "correct" = agreement ``1[ŷ_t = y*]`` (CALM's consistency), e.g. ``vanilla``
    ``−CE_t − α·c_t``, ``accuracy`` ``1[ŷ_t = y*] − α·c_t``, ``hardness`` with the token's
    memorized layer (computed from the full-depth heads only for that shape). ``c_t`` is the
    token's FLOPs divided by a full-depth token's FLOPs at the same position: embedding, layers run
    (attention over the real cache; ``recompute`` chunks at their size), heads evaluated, policy
    FLOPs per decision, and ``copy``'s key/value projections above the exit. ``full`` charges the
    exit path only (what a free cache would cost); ``info["flops_computed"]`` has everything run.

    ## Starting State

    ``reset`` draws a prompt with the env's seeded generator (or ``options={"sample_id": i}``),
    runs all but its last token at full depth (not charged), and returns the observation after
    layer 1 of token 0, whose input is the prompt's last token.

    ## Episode End

    Terminates at the exit of token ``max_new_tokens`` (the last layer always exits). Never
    truncated. ``info`` every step: ``layer``, ``token`` (0-based index), ``cost`` (this token's so
    far), ``sample_id``; at each exit also ``exit_layer``, ``token_id``, ``reference_id``,
    ``agree``, ``token_cost``. At the end also ``prompt``, ``prompt_ids``, ``generated_ids``,
    ``generated_text``, ``reference_ids``, ``exit_layers``, ``agreement``, ``flops``,
    ``flops_computed``, ``full_flops`` and ``episode_cost``; for the shared evaluation
    (``exitgym.agents.evaluate``) ``cost`` is then the episode's, ``prediction`` / ``label`` the
    last token and its reference, ``correct`` whether the whole continuation agrees.

    ## Arguments

    ```python
    gym.make("exitgym/TokenExit-v0", task="rt-polarity", backbone="smollm2-135m", split="policy",
             heads="lm-head", predictor=None, text_column="text", label_column="label",
             text_pair_column=None,
             reward="vanilla", alpha=None, policy_flops=0.0, render_mode=None,
             prompts=None, max_prompts=64, max_prompt_tokens=32, max_new_tokens=16, kv="copy",
             teacher_forcing=False, cached=False, table_batch=1, observation="features",
             hidden_clip=1000.0, device="auto", dtype="float32", **reward_kwargs)
    ```

    The keyword arguments are the fields of :class:`~exitgym.envs.settings.TokenExitSettings`
    (each documented there). ``backbone`` may be a ``DecoderBackbone``; ``prompts`` texts,
    token-id lists or a text file (one prompt per line); without ``prompts`` the texts of
    ``task`` (a local file's ``text_column``) are the prompts. ``heads="distilled"`` puts a
    per-layer map fitted to the last layer in front of the LM head (prepared once on ``task``'s
    train texts, :mod:`exitgym.data.decoder_heads`; a ``LayerMaps`` object works too), charged
    with every head; ``heads="trained"`` per-layer adapters trained for the frozen decoder
    (:mod:`exitgym.data.trained_heads`), whose exit predictor the ``predictor`` view reads.
    ``device`` / ``dtype``: where and in which precision the decoder runs
    (``auto``: CUDA when present; a ``DecoderBackbone`` given is moved there, a named one is
    loaded once per name, device and dtype); ``env.unwrapped.world.backbone.device`` says where.

    ## Version History

    - v0: initial version. The ``predictor`` view and ``predictor=`` were added later without a
      version bump: no existing view, reward or cost changed.

    ## Examples

    A tiny random decoder and token-id prompts (nothing downloaded):

    >>> import gymnasium as gym
    >>> import exitgym
    >>> from transformers import LlamaConfig
    >>> from exitgym.backbones.decoder_registry import load_decoder
    >>> bb = load_decoder(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
    ...                               num_hidden_layers=3, num_attention_heads=2))
    >>> env = gym.make("exitgym/TokenExit-v0", backbone=bb, prompts=[[5, 6, 7], [9, 3]],
    ...                max_new_tokens=2, kv="copy", reward="accuracy", alpha=0.5)
    >>> env.observation_space.shape, env.action_space
    ((6,), Discrete(2))
    >>> obs, info = env.reset(seed=0, options={"sample_id": 1})
    >>> info["layer"], info["token"]
    (1, 0)
    >>> obs, reward, terminated, truncated, info = env.step(1)  # token 0 exits at layer 1
    >>> info["exit_layer"], terminated
    (1, False)
    >>> for _ in range(3):  # token 1 runs to the last layer, which always exits
    ...     obs, reward, terminated, truncated, info = env.step(0)
    >>> terminated, info["exit_layers"], info["agreement"] >= 0.5, len(info["generated_ids"])
    (True, [1, 3], True, 2)
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, settings: TokenExitSettings | None = None, **kwargs: Any) -> None:
        """Make the environment from a :class:`TokenExitSettings` or its fields as keywords.

        Raises:
            ValueError: a keyword is neither a settings field nor an argument of the reward, or a
                value is not allowed (the message lists what is).
        """
        settings = self.settings_class.resolve(settings, kwargs)
        self.render_mode = check_render_mode(settings.render_mode, self.metadata["render_modes"])
        self.observation_space = self._build(settings)
        self.action_space = spaces.Discrete(2)
        self._sampler = BlockSampler(1, len(self.world.prompt_ids))
        self._init_rows(1)
        self._finished, self._started = False, False

    # ---- gymnasium API ------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        sid = reset_sample_id(self, self._sampler, options)
        self._finished, self._started = False, True
        info = self._begin([0], [sid])[0]
        return self._last_obs[0].copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        if action.__class__ is not int or action not in (CONTINUE, EXIT):
            if not self.action_space.contains(action):
                raise ValueError(f"invalid action {action!r}; allowed: 0 (continue) or 1 (exit)")
            action = int(action)
        if not self._started or self._finished:
            raise RuntimeError("step() called after the episode terminated; call reset()"
                               if self._finished else "step() called before reset(); call reset()")
        if action == CONTINUE and self._layer[0] < self.num_layers - 1:
            info = self._advance([0])[0]
            return self._last_obs[0].copy(), 0.0, False, False, info
        rewards, done, infos = self._exit([0])
        self._finished = done[0]
        return self._last_obs[0].copy(), rewards[0], done[0], False, infos[0]

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        ep = self._episodes[0]
        if ep is None:
            return "TokenExit: no episode yet (call reset())"
        return (f"prompt {ep.sample_id} token {int(self._token[0])}/"
                f"{self.settings.max_new_tokens} layer {int(self._layer[0]) + 1}/"
                f"{self.num_layers} exits={ep.exit_layers} generated={ep.generated}")
