"""What the skip environments share: the live world, observations, rewards, terminal infos.

:class:`SkipWorld` is what a skip environment runs on. :meth:`SkipWorld.from_settings` resolves the
environment's :class:`~exitgym.envs.settings.SkipSettings` into one, either by name — the
prepared, skip-tolerant heads of ``exitgym.data.prepare`` built on first use — or from objects a
caller injects (tests: a tiny random backbone, its heads and a few token ids; nothing downloaded
or prepared). :func:`finish_rows` turns the answering head's logits into rewards and terminal
infos with any registered reward shape, and :func:`run_decisions` runs Switchable Decision
decisions on a cohort, so the single and the vector environments compute them with the same code.

The world is also the public entry point of the skip benchmark (``exitgym.bench.skip``): a
world with random heads for timing (:meth:`SkipWorld.with_random_heads`) and the outcomes of fixed
decisions without an environment (:meth:`SkipWorld.decide`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from exitgym.data.config import task_options
from exitgym.envs.rewards import RewardShape, cross_entropy, make_reward
from exitgym.envs.settings import SkipSettings
from exitgym.envs.skip_live import TOKEN_STRATEGIES, Cohort, SampleBank, SkipExecutor
from exitgym.utils.devices import resolve_device

__all__ = [
    "DEFAULT_PREPARE_OPTIONS",
    "SkipWorld",
    "build_world",
    "default_options",
    "finish_rows",
    "pooled_space",
    "run_decisions",
    "synthetic_world",
]

DEFAULT_PREPARE_OPTIONS: dict[str, Any] = {"skip_prob": 0.15, "max_length": 64}
"""``exitgym.data.prepare`` options of the default: the ``joint`` recipe's trainer on the full
training split, with every attention / FFN block skipped with p = 0.15 per sample, so the backbone
tolerates the skips an agent makes; 64 tokens cover rt-polarity's snippets."""
DEFAULT_MAX_LENGTH: int = 128
"""Tokenizer truncation for injected texts (named worlds use the prepared ``max_length``)."""

TERMINAL_KEYS = ("exit_layer", "prediction", "label", "correct", "loss", "flops", "memorized_layer",
                 "attention_skip_rate", "ffn_skip_rate", "token_skip_rate", "token_strategy")
"""Keys added to ``info`` when an episode ends (besides ``layer``, ``cost``, ``sample_id``)."""


@dataclass(frozen=True, eq=False)
class SkipWorld:
    """Everything a skip environment runs on (shared read-only by its episodes)."""

    executor: SkipExecutor
    """Batched live execution over the backbone, heads and tokenized inputs."""
    memorized: np.ndarray
    """int64 ``[N]``: memorized layer of each input under the full model (hardness reward)."""
    texts: Sequence[str] | None = None
    """Input texts as the prepared cache keeps them (named worlds; None when injected): what
    trajectories record and ``replay --verify`` compares."""

    @property
    def num_samples(self) -> int:
        return self.executor.bank.num_samples

    @property
    def num_layers(self) -> int:
        return self.executor.num_layers

    @property
    def labels(self) -> np.ndarray:
        return self.executor.bank.labels

    @property
    def token_strategies(self) -> bool:
        """The Switchable Decision token strategies apply (encoders: tokens dropped after layer
        1; decoder worlds refuse them, see :mod:`exitgym.envs.skip_decoder`)."""
        return True

    def check_reward(self, shape: RewardShape) -> None:
        """Refuse a reward shape this world cannot evaluate (every shape works on encoders)."""

    def finish(self, shape: RewardShape, cohort: Cohort, rows: np.ndarray, decided_layers: int
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Answer the ``rows`` of ``cohort`` with the current layer's head (charged), then
        :func:`finish_rows`: terminal rewards and info arrays over those rows."""
        logits = self.executor.answer(cohort, rows)
        return finish_rows(self, shape, cohort, rows, logits, decided_layers)

    @classmethod
    def from_settings(cls, settings: SkipSettings) -> SkipWorld:
        """The world an environment with ``settings`` runs on: ``settings.world`` or a new one
        (a :class:`~exitgym.envs.skip_decoder.DecoderSkipWorld` for a decoder backbone), its
        models on ``settings.device`` in ``settings.dtype`` (a given ``world`` stays where it
        is: it may be shared)."""
        if settings.world is not None:
            return settings.world
        resolve_device(settings.device)  # refuse a missing CUDA before anything is prepared
        from exitgym.envs.skip_decoder import build_decoder_world, is_decoder

        if is_decoder(settings.backbone):
            return build_decoder_world(settings)  # placed by load_prompts
        if settings.prompts is not None:
            raise ValueError("prompts= is for decoder backbones (e.g. backbone='smollm2-135m' "
                             "or a DecoderBackbone); an encoder reads inputs= or the task split")
        world = build_world(settings.task, settings.backbone, settings.split, settings.heads,
                            settings.inputs, settings.labels, settings.text_pairs,
                            settings.max_length,
                            {**default_options(settings.heads, settings.prepare_options),
                             **settings.column_options()})
        world.executor.place(settings.device, settings.dtype)
        return world

    @property
    def device(self) -> Any:
        """The ``torch.device`` the world's backbone runs on."""
        return self.executor.backbone.device

    @classmethod
    def with_random_heads(cls, backbone: str = "minilm-l6", task: str = "rt-polarity",
                          split: str = "validation", num_labels: int = 2) -> SkipWorld:
        """A named backbone with random-init heads on a task split, to time the environments.

        Throughput does not depend on head weights, so nothing is prepared; memorized layers are
        set to ``L`` instead of computed (no full forward pass over the split).
        """
        from exitgym.backbones.heads import ExitHeads, HeadsConfig
        from exitgym.backbones.registry import load_backbone
        from exitgym.data.tasks import load_task

        bb = load_backbone(backbone)
        data = load_task(task).split(split)
        bank = SampleBank.from_texts(bb, list(data["text"]), list(data["label"]))
        heads = ExitHeads(HeadsConfig(bb.num_layers, bb.hidden_size, num_labels))
        executor = SkipExecutor(bb, heads, bank)
        return cls(executor, np.full(bank.num_samples, bb.num_layers, dtype=np.int64))

    def decide(self, sample_ids: np.ndarray, actions: np.ndarray, reward: str = "accuracy",
               alpha: float = 0.0) -> dict[str, np.ndarray]:
        """Terminal infos of Switchable Decision ``actions`` run on ``sample_ids``, without an env.

        Args:
            sample_ids: int ``[B]`` inputs, run as one batch.
            actions: int ``[B, 2(L−1) + 1]`` rows of the decision space.
            reward: Reward shape of the returned ``info`` (``correct`` and ``cost`` do not
                depend on it).
            alpha: Its cost weight.
        """
        space = pooled_space(self.executor.backbone.hidden_size, 1e6, [])
        cohort = self.executor.start(sample_ids, np.arange(len(sample_ids)))
        _, _, info = run_decisions(self, make_reward(reward, alpha=alpha), 0.0, space, cohort,
                                   actions)
        return info


def build_world(
    task: str,
    backbone: Any,
    split: str,
    heads: Any,
    inputs: Sequence[str] | Mapping[str, Any] | None,
    labels: Sequence[int] | np.ndarray | None,
    text_pairs: Sequence[str] | None,
    max_length: int | None,
    prepare_options: Mapping[str, Any] | None,
) -> SkipWorld:
    """Resolve environment arguments (named or injected) into a :class:`SkipWorld`.

    ``max_length`` None means the prepared configuration's (named) or
    :data:`DEFAULT_MAX_LENGTH` (injected texts); named worlds pass it to ``exitgym.data.prepare``.
    """
    named = isinstance(backbone, str) and isinstance(heads, str)
    if named and inputs is None:
        options = dict(prepare_options or {})
        if max_length is not None:
            options["max_length"] = max_length
        return _named_world(task, backbone, split, heads, options)
    if isinstance(backbone, str) or isinstance(heads, str):
        raise ValueError("give backbone and heads both as names (prepared on first use) or both "
                         "as objects (a Backbone and its ExitHeads, with inputs= and labels=)")
    if inputs is None or labels is None:
        raise ValueError("with injected backbone and heads, pass inputs= (texts, or a dict with "
                         "'input_ids' and 'attention_mask') and labels=")
    if isinstance(inputs, Mapping):
        bank = SampleBank.from_ids(inputs, labels)
    else:
        bank = SampleBank.from_texts(backbone, inputs, labels, text_pairs,
                                     max_length or DEFAULT_MAX_LENGTH)
    executor = SkipExecutor(backbone, heads, bank)
    return SkipWorld(executor, full_depth_memorized(executor))


def default_options(heads: Any, prepare_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``prepare_options`` or, for the default ``joint`` heads, the skip-tolerant defaults."""
    if prepare_options is not None:
        return dict(prepare_options)
    return dict(DEFAULT_PREPARE_OPTIONS) if heads in ("joint", "finetune") else {}


def synthetic_world(num_samples: int = 8, num_layers: int = 3, hidden_size: int = 16,
                    num_labels: int = 2, num_tokens: int = 12, seed: int = 0) -> SkipWorld:
    """A tiny random-init BERT with random heads on random token ids, for examples and quick tests.

    The skip environments' counterpart of ``exitgym.data.synthetic.synthetic_cache``: nothing is
    downloaded or prepared and it builds in well under a second on a CPU. The answers are random
    (so are the heads); the mechanics (skips, token drops, FLOPs, rewards) are the real ones.
    Goes through the injection path of the environments (``backbone=``, ``heads=``, ``inputs=``,
    ``labels=``), so it is also an example of it.
    """
    import torch
    from transformers import BertConfig

    from exitgym.backbones.heads import ExitHeads, HeadsConfig
    from exitgym.backbones.registry import load_backbone

    config = BertConfig(vocab_size=100, hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=2, intermediate_size=2 * hidden_size,
                        max_position_embeddings=max(32, num_tokens))
    backbone = load_backbone(config, seed=seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        heads = ExitHeads(HeadsConfig(num_layers, hidden_size, num_labels))
    ids = np.random.default_rng(seed).integers(5, 100, size=(num_samples, num_tokens))
    labels = np.arange(num_samples) % num_labels
    return build_world("synthetic", backbone, "train", heads, {"input_ids": ids}, labels, None,
                       None, None)


def _named_world(task: str, backbone: str, split: str, heads: str,
                 options: dict[str, Any]) -> SkipWorld:
    """Prepare (first use) or verify the named heads and split cache once, then load them."""
    from exitgym.backbones.cache import load_cache
    from exitgym.backbones.heads import ExitHeads, load_backbone_weights
    from exitgym.backbones.registry import load_backbone
    from exitgym.data.prepare import prepare
    from exitgym.data.tasks import load_task

    options.setdefault("max_length", DEFAULT_MAX_LENGTH)
    prepared = prepare(task=task, backbone=backbone, heads=heads, splits=(split,),
                       verbose=False, **options)
    cache = load_cache(prepared.cache_paths[split], verify=False)
    exit_heads = ExitHeads.load(prepared.directory)
    bb = load_backbone(backbone)
    if prepared.backbone_weights is not None:
        load_backbone_weights(bb.model, prepared.backbone_weights)
        bb.invalidate_fingerprint()
    data = load_task(task, **task_options(options)).split(split)
    pairs = list(data["text_pair"]) if "text_pair" in data.column_names else None
    bank = SampleBank.from_texts(bb, list(data["text"]), list(data["label"]), pairs,
                                 options["max_length"])
    if bank.num_samples != cache.num_samples or not np.array_equal(bank.labels, cache.labels) \
            or not np.array_equal(bank.lengths, cache.lengths):
        raise RuntimeError(f"the prepared cache of {task}/{split} does not match the task data; "
                           "rebuild it with exitgym prepare --force")
    return SkipWorld(SkipExecutor(bb, exit_heads, bank), np.asarray(cache.memorized, np.int64),
                     cache.texts)


def full_depth_memorized(executor: SkipExecutor, batch_size: int = 64) -> np.ndarray:
    """Memorized layer of every input, from every head on the unskipped model (sorted batches)."""
    import torch

    from exitgym.backbones.layer_cache import correctness, memorized_layer

    bank, bb = executor.bank, executor.backbone
    order = np.argsort(-bank.lengths, kind="stable")
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            pooled = torch.stack(bb.forward_pooled(bank.batch(idx)), dim=1)
            chunks.append((idx, executor.heads(pooled).float().cpu().numpy()))
    logits = np.empty((bank.num_samples, executor.num_layers, chunks[0][1].shape[-1]), np.float32)
    for idx, values in chunks:
        logits[idx] = values
    return memorized_layer(correctness(logits, bank.labels))


def pooled_space(hidden_size: int, clip: float, extra_high: Sequence[float]) -> spaces.Box:
    """Box of ``[pooled clipped to ±clip, extras in [0, high]]`` (float32, finite bounds)."""
    clip = float(clip)
    if not np.isfinite(clip) or clip <= 0:
        raise ValueError(f"pooled_clip must be a finite number > 0, got {clip!r}")
    low = np.concatenate([np.full(hidden_size, -clip), np.zeros(len(extra_high))])
    high = np.concatenate([np.full(hidden_size, clip), np.asarray(extra_high, dtype=np.float64)])
    return spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)


def finish_rows(
    world: SkipWorld,
    shape: RewardShape,
    cohort: Cohort,
    rows: np.ndarray,
    logits: np.ndarray,
    decided_layers: int,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Terminal rewards and info arrays of the ``rows`` of ``cohort`` answered with ``logits``.

    The reward is ``shape.terminal`` on the answering head's cross-entropy and correctness and the
    cost actually spent, minus what dense rewards already paid (so dense and terminal returns
    agree). ``decided_layers`` is the number of layers the agent decided on (skip-rate
    denominator).
    """
    rows = np.asarray(rows, dtype=bool)
    sid = cohort.sample_ids[rows]
    labels = world.labels[sid]
    ce = cross_entropy(logits[:, None, :], labels)[:, 0]
    prediction = logits.argmax(axis=-1).astype(np.int64)
    correct = prediction == labels
    cost = world.executor.cost(cohort)[rows]
    memorized = world.memorized[sid]
    weight = shape.cost_weight(memorized, world.num_layers)
    reward = shape.quality(ce, correct) - weight * (cost - cohort.charged[rows])
    denom = max(decided_layers, 1)
    lengths0 = cohort.lengths0[rows]
    info = {
        "layer": np.full(len(sid), cohort.layer + 1, dtype=np.int64),
        "cost": cost,
        "sample_id": sid.copy(),
        "exit_layer": np.full(len(sid), cohort.layer + 1, dtype=np.int64),
        "prediction": prediction,
        "label": labels.copy(),
        "correct": correct,
        "loss": ce,
        "flops": cohort.flops[rows].copy(),
        "memorized_layer": memorized.copy(),
        "attention_skip_rate": cohort.attention_skipped[rows] / denom,
        "ffn_skip_rate": cohort.ffn_skipped[rows] / denom,
        "token_skip_rate": (lengths0 - cohort.lengths[rows]) / lengths0,
        "token_strategy": cohort.strategy[rows].copy(),
    }
    return np.asarray(reward, dtype=np.float64), info


def observe(world: SkipWorld, cohort: Cohort, space: spaces.Box, extras: bool) -> np.ndarray:
    """float32 ``[B, d]``: pooled state, then (if ``extras``) layer fraction and cost so far.

    Clipped to ``space``'s bounds: the pooled part to ``±pooled_clip``; the cost only binds when
    policy FLOPs push it past the bound computed from the shortest input.
    """
    pooled = world.executor.pooled(cohort)
    if extras:
        frac = np.full((cohort.size, 1), (cohort.layer + 1) / world.num_layers)
        cost = world.executor.cost(cohort)[:, None]
        pooled = np.concatenate([pooled, frac, cost], axis=1)
    return np.clip(pooled, space.low, space.high).astype(np.float32, copy=False)


def run_decisions(world: SkipWorld, shape: RewardShape, policy_flops: float, space: spaces.Box,
                  cohort: Cohort, actions: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Run layers 2..L of every row with its decisions, then answer with the final head.

    The Switchable Decision step: every row's token strategy is applied after layer 1, then each
    later layer runs once for the whole cohort with per-row attention / FFN skip masks.

    Args:
        actions: int ``[B, 2(L−1) + 1]`` rows of the decision space (``[B, 2(L−1)]`` in a world
            without token strategies).

    Returns:
        ``(obs [B, H], rewards [B], terminal info arrays over B)``.
    """
    ex, last = world.executor, world.num_layers - 1
    cohort.flops = cohort.flops + policy_flops
    if world.token_strategies:
        ex.drop_tokens(cohort, actions[:, -1])
    skip = actions[:, :2 * last].astype(bool)
    for k in range(last):
        ex.run_layer(cohort, skip[:, k], skip[:, last + k])
    everyone = np.ones(cohort.size, dtype=bool)
    rewards, info = world.finish(shape, cohort, everyone, last)
    return observe(world, cohort, space, False), rewards, info


def token_strategy_names() -> list[str]:
    """Names of the token strategies in action order."""
    return [s.name for s in TOKEN_STRATEGIES]
