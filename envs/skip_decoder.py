"""``SkipBlock-v0`` and ``SwitchableDecision-v0`` on a decoder LM: skips held for a continuation.

Given a decoder ``backbone`` (the short name ``smollm2-135m``, a local decoder directory, a
``DecoderBackbone``, or a Llama-family / GPT-2 config in tests), the skip environments build a
:class:`DecoderSkipWorld` instead of the encoder's :class:`~exitgym.envs.skip_core.SkipWorld`.
An episode is one prompt (the task split's texts or ``prompts=``, like ``TokenExit-v0``): the
per-layer decisions are made on the prompt, one layer at a time (``SkipBlock-v0``) or all at once
(``SwitchableDecision-v0``), and then held for the prompt's prefill and every one of the
``max_new_tokens`` greedy tokens (:mod:`exitgym.envs.skip_decoder_run`).

Quality is measured against the full-depth greedy continuation ``y*`` of the same prompt:

- ``agreement``: the share of positions ``j`` with ``ŷ_j = y*_j`` (CALM's sequence-level
  consistency, token share); the reward shapes read it as their correctness (``accuracy``: the
  share; ``info["correct"]``: the whole continuation agrees);
- ``ce``: the mean ``−log p(y*_j | prompt, y*_<j)`` under the skips (teacher-forced), the
  ``vanilla`` and ``flops`` shapes' quality.

Token strategies are refused: exitgym's KV cache addresses keys by fill count, so a prompt token
missing from the layers above 1 would shift every later position, and generated tokens cannot be
dropped before they exist. ``hardness`` is refused: its memorized layer is per input, and a
continuation has one per token (``TokenExit-v0`` computes those).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from exitgym.backbones.decoder_registry import is_decoder, load_decoder
from exitgym.envs.rewards import HardnessReward, RewardShape
from exitgym.envs.settings import SkipSettings
from exitgym.envs.skip_core import SkipWorld
from exitgym.envs.skip_decoder_run import DecoderSkipExecutor
from exitgym.envs.skip_live import Cohort
from exitgym.envs.token_core import load_prompts

__all__ = ["DECODER_HEADS", "DecoderSkipWorld", "build_decoder_world", "is_decoder"]

DECODER_HEADS = ("joint", "lm-head")
"""``heads`` values a decoder accepts: the default (``"joint"``, an encoder recipe name, ignored)
or ``"lm-head"``; a decoder always answers with its own final norm and LM head."""
_ENCODER_ONLY = ("inputs", "labels", "text_pairs", "max_length", "prepare_options")


@dataclass(frozen=True, eq=False)
class DecoderSkipWorld(SkipWorld):
    """A decoder and its tokenized prompts, stepped by the skip families' own code."""

    prompt_texts: list[str | None] = field(default_factory=list)
    """Each prompt's text (None for prompts given as token ids)."""

    @property
    def num_samples(self) -> int:
        return len(self.executor.prompts)

    @property
    def labels(self) -> np.ndarray:
        raise AttributeError("a decoder world has no labels; quality is agreement with the "
                             "full-depth continuation")

    @property
    def token_strategies(self) -> bool:
        return False

    def check_reward(self, shape: RewardShape) -> None:
        if isinstance(shape, HardnessReward):
            raise ValueError("reward 'hardness' is not supported with a decoder backbone: its "
                             "memorized layer is per input and a continuation has one per token "
                             "(use TokenExit-v0); allowed: vanilla, accuracy, flops")

    def finish(self, shape: RewardShape, cohort: Cohort, rows: np.ndarray, decided_layers: int
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Generate the ``rows``' continuations, charge them, and score them against ``y*``."""
        rows = np.asarray(rows, dtype=bool)
        ex = self.executor
        out = ex.continue_rows(cohort if rows.all() else cohort.select(rows))
        flops = cohort.flops.copy()
        flops[rows] += out.flops
        cohort.flops = flops
        sid = cohort.sample_ids[rows]
        refs = np.array([ex.reference(s) for s in sid], dtype=np.int64).reshape(out.generated.shape)
        agree = out.generated == refs
        agreement = agree.mean(axis=1)
        cost = ex.cost(cohort)[rows]
        memorized = self.memorized[sid]
        weight = shape.cost_weight(memorized, self.num_layers)
        reward = shape.quality(out.ce, agreement) - weight * (cost - cohort.charged[rows])
        exit_layer = np.full(len(sid), cohort.layer + 1, dtype=np.int64)
        decided = slice(1, cohort.layer + 1)  # layers 2..exit: the decisions the agent made
        denom = max(decided_layers, 1)
        info = {
            "layer": exit_layer.copy(), "cost": cost, "sample_id": sid.copy(),
            "exit_layer": exit_layer, "prediction": out.generated[:, -1].copy(),
            "label": refs[:, -1].copy(), "correct": agree.all(axis=1),
            "flops": cohort.flops[rows].copy(), "memorized_layer": memorized.copy(),
            "attention_skip_rate": cohort.attention_skipped[rows] / denom,
            "ffn_skip_rate": cohort.ffn_skipped[rows] / denom,
            "token_skip_rate": np.zeros(len(sid)), "token_strategy": np.zeros(len(sid), np.int64),
            "agreement": agreement, "prefix_agreement": np.cumprod(agree, axis=1).mean(axis=1),
            "ce": out.ce, "full_flops": ex.denominator[sid].copy(),
            "prompt": _objects([self.prompt_texts[s] for s in sid]),
            "prompt_ids": _objects([list(ex.prompts[s]) for s in sid]),
            "generated_ids": _objects([g.tolist() for g in out.generated]),
            "generated_text": _objects([ex.decode(g) for g in out.generated]),
            "reference_ids": _objects([r.tolist() for r in refs]),
            "skipped_attention": _objects([_layers(s[decided]) for s in out.skip_attention]),
            "skipped_ffn": _objects([_layers(s[decided]) for s in out.skip_ffn]),
        }
        return np.asarray(reward, dtype=np.float64), info


def _objects(values: list[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (lists stay whole entries, not a second axis)."""
    arr = np.empty(len(values), dtype=object)
    for k, value in enumerate(values):
        arr[k] = value
    return arr


def _layers(skipped: np.ndarray) -> list[int]:
    """1-based layer numbers of the skipped blocks among layers 2.. (``skipped[0]`` = layer 2)."""
    return [int(k) + 2 for k in np.flatnonzero(skipped)]


def build_decoder_world(settings: SkipSettings) -> DecoderSkipWorld:
    """The world of a skip environment whose ``backbone`` is a decoder (:func:`is_decoder`).

    Raises:
        ValueError: an encoder-only argument was given (``inputs``, ``labels``, ``text_pairs``,
            ``max_length``, ``prepare_options``, exit ``heads``), or bad prompts.
    """
    given = [name for name in _ENCODER_ONLY if getattr(settings, name) is not None]
    if given:
        raise ValueError(f"{settings.env_id}: {given} apply to encoder backbones; a decoder "
                         "backbone reads prompts= (or the task split's texts), max_prompts, "
                         "max_prompt_tokens and max_new_tokens")
    if not (isinstance(settings.heads, str) and settings.heads in DECODER_HEADS):
        raise ValueError(f"{settings.env_id}: heads={settings.heads!r} applies to encoder "
                         f"backbones; a decoder answers with its final norm and LM head "
                         f"(allowed: {list(DECODER_HEADS)})")
    backbone = settings.backbone
    if not isinstance(backbone, str) and not hasattr(backbone, "greedy"):
        backbone = load_decoder(backbone)  # a config (random-init, seeded) or a causal LM
    bb, ids, texts = load_prompts(settings, backbone)
    executor = DecoderSkipExecutor(bb, ids, settings.max_new_tokens)
    return DecoderSkipWorld(executor, np.full(len(ids), bb.num_layers, dtype=np.int64),
                            prompt_texts=texts)
