"""Skip-policy deployment: texts in, the live backbone run with a trained skip policy's decisions.

A policy trained on ``exitgym/SkipBlock-v0`` (per layer: run, skip the attention block, skip the
feed-forward block, skip the layer, or exit) or ``exitgym/SwitchableDecision-v0`` (every skip and
a token strategy decided after layer 1) is deployed by running the *environment's own* cohort
step (:meth:`~exitgym.envs.skip_env.SkipFamily.step_cohort`) on the user's texts: the same
executor (:class:`~exitgym.envs.skip_live.SkipExecutor`, which leaves the rows that skip a block
out of that block's call, so skipping saves real time), the same observations and the same FLOPs
accounting. So an answer here is exactly the episode outcome the environment gives for the same
input (tested), and the wall-clock time of :meth:`SkipInference.__call__` against
:meth:`SkipInference.full_depth` measures what the FLOPs speed-up buys on a real device.

Batches are cut longest first (less padding); ``batch_size=1`` runs each text alone. Rows that
exit (``allow_exit``) leave the cohort at once, so later layers run on fewer rows.

Decoder backbones are not deployed here: a skip policy on a decoder holds its skips for a greedy
continuation, which ``gym.make(..., backbone=decoder, prompts=texts)`` already generates (the
terminal ``info["generated_text"]``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exitgym.backbones.base import check_texts
from exitgym.envs.skip_core import DEFAULT_MAX_LENGTH, SkipWorld, default_options, observe
from exitgym.envs.skip_live import SampleBank, SkipExecutor
from exitgym.inference.early_exit import AnswerStats, check_batch_size
from exitgym.utils.devices import resolve_device

__all__ = ["SKIP_ENVS", "SkipInference", "SkipInferenceResult"]

SKIP_ENVS = ("exitgym/SkipBlock-v0", "exitgym/SwitchableDecision-v0")
"""The environments whose policies :class:`SkipInference` deploys."""
_OUTCOME_KEYS = ("exit_layer", "prediction", "cost", "flops", "attention_skip_rate",
                 "ffn_skip_rate", "token_skip_rate", "token_strategy")


@dataclass(frozen=True)
class SkipInferenceResult(AnswerStats):
    """Per-text outcome of one skip-policy call, in the order the texts were given."""

    predictions: np.ndarray
    """int64 ``[N]`` predicted label ids (the answering head's argmax)."""
    exit_layers: np.ndarray
    """int64 ``[N]`` 1-based layer whose head answered (``L`` unless the policy exits)."""
    cost: np.ndarray
    """float64 ``[N]`` cost fraction (FLOPs spent / FLOPs of the full model + final head)."""
    flops: np.ndarray
    """float64 ``[N]`` FLOPs spent (embeddings, blocks run, answering head, policy)."""
    full_flops: np.ndarray
    """float64 ``[N]`` FLOPs of the full model with its final head on the same text."""
    lengths: np.ndarray
    """int64 ``[N]`` real token counts before any token drop."""
    attention_skip_rate: np.ndarray
    """float64 ``[N]`` attention blocks skipped over the layers decided."""
    ffn_skip_rate: np.ndarray
    """float64 ``[N]`` feed-forward blocks skipped over the layers decided."""
    token_skip_rate: np.ndarray
    """float64 ``[N]`` share of real tokens dropped after layer 1."""
    token_strategy: np.ndarray
    """int64 ``[N]`` token strategy applied (index into ``TOKEN_STRATEGIES``; 0 = none)."""
    num_layers: int
    """``L``, the backbone's depth."""
    seconds: float
    """Wall-clock seconds of the call (tokenization, layers, heads and policy)."""
    env_id: str
    """The environment the policy was trained on."""
    label_names: tuple[str, ...] = field(default=())
    """Label vocabulary of the heads (empty when the heads carry none)."""


def _family(env_id: str) -> type:
    """The single-env class of a skip family (its cohort step is what deployment runs)."""
    from exitgym.envs.skip_block import SkipBlockEnv
    from exitgym.envs.switchable_decision import SwitchableDecisionEnv

    families = dict(zip(SKIP_ENVS, (SkipBlockEnv, SwitchableDecisionEnv), strict=True))
    if env_id not in families:
        raise ValueError(f"skip inference deploys policies of {list(SKIP_ENVS)}; got {env_id!r}")
    return families[env_id]


class SkipInference:
    """A backbone, its exit heads and a skip policy, ready to answer texts (load once, call often).

    Args:
        policy: A :class:`~exitgym.agents.base.Policy` trained on ``env_id``
            (``act(obs [B, d], infos) -> actions``).
        backbone: The encoder :class:`~exitgym.backbones.base.Backbone` the heads were trained
            on; it needs a tokenizer.
        heads: Its :class:`~exitgym.backbones.heads.ExitHeads` (one per layer).
        env_id: ``exitgym/SkipBlock-v0`` or ``exitgym/SwitchableDecision-v0``.
        env_kwargs: The environment's ``gym.make`` settings the policy was trained with
            (``allow_exit``, ``token_strategy``, ``policy_flops``, ``pooled_clip``, reward ...):
            they fix the spaces and the FLOPs charged per decision.
        max_length: Tokenizer truncation; use the training world's so tokens match.
        device: Where backbone and heads run; None: where the backbone already is.
    """

    def __init__(self, policy: Any, backbone: Any, heads: Any, *, env_id: str,
                 env_kwargs: dict[str, Any] | None = None, max_length: int = DEFAULT_MAX_LENGTH,
                 device: str | None = None) -> None:
        if not callable(getattr(policy, "act", None)):
            raise TypeError(f"policy must have act(obs, infos) (the Policy protocol), got "
                            f"{type(policy).__name__}")
        if hasattr(backbone, "greedy"):
            raise ValueError("skip inference deploys encoder backbones; on a decoder a skip "
                             "policy holds its skips for a continuation: run gym.make(env_id, "
                             "backbone=decoder, prompts=texts) and read info['generated_text']")
        if getattr(backbone, "tokenizer", None) is None:
            raise ValueError(f"backbone {getattr(backbone, 'name', backbone)!r} has no "
                             "tokenizer; inference needs one")
        self.env_cls = _family(env_id)
        self.env_id = env_id
        self.policy, self.backbone, self.heads = policy, backbone, heads
        self.env_kwargs = {k: v for k, v in (env_kwargs or {}).items() if k != "render_mode"}
        self.max_length = int(max_length)
        if device is not None:
            backbone.model.to(resolve_device(device))
        heads.eval().to(backbone.device)

    def _env(self, bank: SampleBank) -> Any:
        """The policy's environment over ``bank`` (its spaces, rules and cohort step)."""
        executor = SkipExecutor(self.backbone, self.heads, bank)
        # Memorized layers only weight the hardness reward, never a decision: the full depth.
        memorized = np.full(bank.num_samples, executor.num_layers, dtype=np.int64)
        env = self.env_cls(world=SkipWorld(executor, memorized), **self.env_kwargs)
        want = getattr(getattr(self.policy, "config", None), "obs_dim", None)
        if want is not None and int(want) != env.observation_space.shape[0]:
            raise ValueError(f"policy expects observations of size {want} but {self.env_id} "
                             f"has {env.observation_space.shape[0]} for this backbone")
        return env

    def _inputs(self, texts: Sequence[str], text_pairs: Sequence[str] | None,
                batch_size: Any) -> tuple[list[str], SampleBank, int]:
        """Checked texts, tokenized as the policy's data was (one bank), and the batch size."""
        texts = check_texts(texts)
        pairs = None if text_pairs is None else check_texts(text_pairs, "text_pairs")
        batch_size = check_batch_size(batch_size)
        bank = SampleBank.from_texts(self.backbone, texts, np.zeros(len(texts), np.int64), pairs,
                                     self.max_length)
        return list(texts), bank, batch_size

    def __call__(self, texts: Sequence[str], *, text_pairs: Sequence[str] | None = None,
                 batch_size: int = 1) -> SkipInferenceResult:
        """Answer ``texts`` with the policy's skips; ``batch_size > 1`` runs cohorts."""
        start = time.perf_counter()
        texts, bank, batch_size = self._inputs(texts, text_pairs, batch_size)
        env = self._env(bank)
        n = len(texts)
        out = {"exit_layer": np.zeros(n, np.int64), "prediction": np.zeros(n, np.int64),
               "token_strategy": np.zeros(n, np.int64),
               **{k: np.zeros(n) for k in _OUTCOME_KEYS if k not in
                  ("exit_layer", "prediction", "token_strategy")}}
        order = np.argsort(-bank.lengths, kind="stable")
        with torch.inference_mode():
            for lo in range(0, n, batch_size):
                self._run_batch(env, order[lo:lo + batch_size], out)
        seconds = time.perf_counter() - start
        return SkipInferenceResult(
            predictions=out["prediction"], exit_layers=out["exit_layer"], cost=out["cost"],
            flops=out["flops"], full_flops=env.world.executor.denominator.copy(),
            lengths=bank.lengths, attention_skip_rate=out["attention_skip_rate"],
            ffn_skip_rate=out["ffn_skip_rate"], token_skip_rate=out["token_skip_rate"],
            token_strategy=out["token_strategy"], num_layers=env.num_layers, seconds=seconds,
            env_id=self.env_id, label_names=tuple(self.heads.config.label_names))

    def _run_batch(self, env: Any, idx: np.ndarray, out: dict[str, np.ndarray]) -> None:
        """One cohort: observe, ask the policy, step the environment's cohort until all end."""
        world = env.world
        cohort = world.executor.start(idx, np.arange(len(idx)))
        obs = observe(world, cohort, env.observation_space, env.extras)
        shape = env.action_space.shape
        self.policy.reset(len(idx))
        while cohort is not None:
            actions = np.asarray(self.policy.act(obs, {}, deterministic=True), dtype=np.int64)
            step = env.step_cohort(cohort, actions.reshape(cohort.size, *shape))
            done = step.done
            if done.any():
                for key in _OUTCOME_KEYS:
                    out[key][cohort.sample_ids[done]] = step.terminal[key][done]
            cohort, obs = step.survivors, step.obs[~done]

    def full_depth(self, texts: Sequence[str], *, text_pairs: Sequence[str] | None = None,
                   batch_size: int = 1) -> SkipInferenceResult:
        """The baseline a user would otherwise deploy: the plain forward + the final head.

        Same tokenization and batching (longest first) as :meth:`__call__`, so the wall-clock
        ratio of the two measures what skipping saves.
        """
        start = time.perf_counter()
        texts, bank, batch_size = self._inputs(texts, text_pairs, batch_size)
        n, last = len(texts), self.backbone.num_layers - 1
        prediction = np.zeros(n, dtype=np.int64)
        order = np.argsort(-bank.lengths, kind="stable")
        with torch.inference_mode():
            for lo in range(0, n, batch_size):
                idx = order[lo:lo + batch_size]
                pooled = self.backbone.plain_pooled(bank.batch(idx))
                prediction[idx] = self.heads.head(last, pooled).argmax(dim=-1).cpu().numpy()
        seconds = time.perf_counter() - start
        full = np.asarray(self.backbone.flops.full(bank.lengths.astype(np.float64)),
                          dtype=np.float64) + float(self.heads.flops(self.backbone.flops))
        zeros = np.zeros(n)
        return SkipInferenceResult(
            predictions=prediction, exit_layers=np.full(n, last + 1, dtype=np.int64),
            cost=np.ones(n), flops=full.copy(), full_flops=full, lengths=bank.lengths,
            attention_skip_rate=zeros, ffn_skip_rate=zeros.copy(), token_skip_rate=zeros.copy(),
            token_strategy=np.zeros(n, np.int64), num_layers=last + 1, seconds=seconds,
            env_id=self.env_id, label_names=tuple(self.heads.config.label_names))

    @classmethod
    def from_run(cls, run_dir: str | Path, *, device: str | None = None) -> SkipInference:
        """Load a complete ``exitgym train --env exitgym/SkipBlock-v0`` (or Switchable) run.

        The backbone and heads are the prepared ones the run trained with (skip-tolerant
        fine-tuned weights included), checked against the run's recorded data, backbone and
        heads fingerprints before use; the policy is read from safetensors (no pickle).
        """
        from exitgym.experiments.binding import check_data, check_fingerprints, prepared_cache
        from exitgym.experiments.policies import load_policy, open_training_run, run_env_spec

        run = open_training_run(run_dir)
        spec = run_env_spec(run)
        _family(spec.env_id)
        check_data(run.path, spec)
        prepared_cache(run.path, spec, progress=False)  # refuses changed backbone / heads first
        env = spec.make()
        world, settings = env.unwrapped.world, env.unwrapped.settings
        executor = world.executor
        check_fingerprints(run.path, None, {
            "backbone_fingerprint": executor.backbone.fingerprint(),
            "heads_fingerprint": executor.heads.fingerprint()})
        policy = load_policy(run)
        if hasattr(policy, "eval"):
            policy.eval()
        options = default_options(settings.heads, settings.prepare_options)
        max_length = settings.max_length or options.get("max_length", DEFAULT_MAX_LENGTH)
        env.close()
        return cls(policy, executor.backbone, executor.heads, env_id=spec.env_id,
                   env_kwargs=dict(spec.kwargs), max_length=int(max_length), device=device)
