"""The ``trained`` exit-head recipe of decoder LMs: per-layer low-rank adapters trained for the
frozen decoder (``TokenExit-v0(heads="trained")``), prepared once and reused.

Data: the decoder's own greedy continuations of the task's ``train`` prompts (no corpus needed;
the states are those generation visits). Every position of prompt + continuation is a training
example whose target is the last layer's next-token distribution
(:func:`~exitgym.backbones.decoder_adapters.train_adapters`).

An exit predictor (:mod:`exitgym.backbones.exit_predictor`) is fitted on the same states, its
labels whether the trained head of each layer picks the last layer's token.

Layout: ``cache_dir()/prepared/<task>__<decoder>__trained-<hash>/`` with
``adapters.safetensors``, ``predictor.safetensors`` and ``meta.json``: the key (decoder
fingerprint, texts fingerprint, settings, recipe version; checked on load), the training KL per
layer before / after, the predictor's calibration on validation, and the per-layer agreement
with the last layer's token on validation prompts + continuations of the plain LM head, of ridge
maps fitted on the same training states (the ``distilled`` recipe's fit) and of the trained
adapters (:func:`agreement_rows` reads it back).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exitgym.backbones.decoder_adapters import (
    ADAPTERS_FILE,
    AdapterTraining,
    LowRankMaps,
    adapter_kl,
    init_adapters,
    train_adapters,
)
from exitgym.backbones.decoder_heads import fit_layer_maps, head_agreement
from exitgym.backbones.exit_predictor import (
    PREDICTOR_FILE,
    ExitPredictor,
    fit_predictor,
    head_agrees,
)
from exitgym.data.decoder_heads import _texts, collect_states
from exitgym.utils.atomic import write_json
from exitgym.utils.paths import cache_dir

RECIPE_VERSION = 1
"""Bumped when the training changes what a configuration produces."""


@dataclass(frozen=True)
class TrainedHeadsConfig:
    """What the trained heads are trained on, and how."""

    train_texts: int = 64
    """First training prompts whose continuations are the training data."""
    validation_texts: int = 16
    """First validation prompts the agreement is measured on (with their continuations)."""
    max_tokens: int = 32
    """Prompts are cut to this many tokens."""
    new_tokens: int = 16
    """Greedy full-depth tokens generated after each prompt."""
    training: AdapterTraining = field(default_factory=AdapterTraining)
    """The adapters' rank and optimizer settings."""
    predictor_l2: float = 1e-2
    """Ridge weight of the exit predictor's logistic fits (standardised inputs)."""


def continuation_states(backbone: Any, prompts: list[list[int]], new_tokens: int,
                        desc: str | None = None) -> Any:
    """``[positions, L, H]`` of every prompt followed by its greedy full-depth continuation
    (the last generated token is not fed back: its state predicts nothing generated)."""
    import torch

    seqs = [list(p) for p in prompts]
    if new_tokens > 1:
        with torch.no_grad():
            cont = backbone.greedy(prompts, new_tokens - 1).tolist()
        seqs = [p + c for p, c in zip(seqs, cont, strict=True)]
    return collect_states(backbone, seqs, desc=desc)


def prepare_trained(backbone: Any, task: str, config: TrainedHeadsConfig | None = None,
                    progress: bool = True, prompts: dict[str, list[list[int]]] | None = None,
                    **column_options: Any) -> tuple[LowRankMaps, ExitPredictor, dict[str, Any]]:
    """The trained heads of ``backbone`` on ``task``, the exit predictor fitted for them and
    their ``meta.json`` (prepared on first use, then loaded).

    Args:
        prompts: token-id prompts ``{"train": ..., "validation": ...}`` instead of the task's
            texts (decoders without a tokenizer; tests). ``task`` still names the cache.

    Raises:
        ValueError: the decoder has no tokenizer and no ``prompts`` are given, or the task has
            no texts.
    """
    config = config or TrainedHeadsConfig()
    if prompts is None:
        if backbone.tokenizer is None:
            raise ValueError(f"heads='trained' needs a decoder with a tokenizer "
                             f"({backbone.name!r} has none) or token-id prompts")
        prompts = {split: [ids[: config.max_tokens] for ids in backbone.encode(
            _texts(task, split, count, column_options))]
            for split, count in (("train", config.train_texts),
                                 ("validation", config.validation_texts))}
    else:
        prompts = {s: [list(p)[: config.max_tokens] for p in prompts[s]]
                   for s in ("train", "validation")}
    data = hashlib.sha256(json.dumps(prompts, sort_keys=True).encode()).hexdigest()
    key = {"decoder": backbone.fingerprint(), "data": data, "config": asdict(config),
           "version": RECIPE_VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    directory = (cache_dir() / "prepared"
                 / f"{Path(str(task)).name}__{Path(str(backbone.name)).name}__trained-{digest}")
    meta_path = directory / "meta.json"
    files = (directory / ADAPTERS_FILE, directory / PREDICTOR_FILE)
    if meta_path.is_file() and all(f.is_file() for f in files):
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            return LowRankMaps.load(files[0]), ExitPredictor.load(files[1]), meta
    if progress:
        print(f"exitgym: first use: training exit heads of {backbone.name} on {task} "
              f"({len(prompts['train'])} train prompts + {config.new_tokens} greedy tokens "
              "each); saved for every later use", file=sys.stderr)
    tic = time.perf_counter()
    def desc(split: str) -> str | None:
        return f"trained heads: decoder pass over {task} {split}" if progress else None

    states = continuation_states(backbone, prompts["train"], config.new_tokens, desc("train"))
    collect_s = time.perf_counter() - tic
    tr = config.training
    ridge = fit_layer_maps(states)
    warm = ridge if tr.warm_start else None
    maps = train_adapters(backbone, states, tr, warm)
    predictor = fit_predictor(states, head_agrees(backbone, states, maps),
                              l2=config.predictor_l2)
    train_s = time.perf_counter() - tic - collect_s
    init = init_adapters(backbone.num_layers, backbone.hidden_size, tr.rank, tr.seed, warm)
    kl = {"init": adapter_kl(backbone, init, states, tr.top_k),
          "trained": adapter_kl(backbone, maps, states, tr.top_k)}
    val = continuation_states(backbone, prompts["validation"], config.new_tokens,
                              desc("validation"))
    agreement = {"lm-head": head_agreement(backbone, val),
                 "distilled": head_agreement(backbone, val, ridge),
                 "trained": head_agreement(backbone, val, maps)}
    directory.mkdir(parents=True, exist_ok=True)
    maps.save(files[0])
    predictor.save(files[1])
    meta = {"key": key, "task": str(task), "decoder": backbone.name,
            "positions": {"train": int(states.shape[0]), "validation": int(val.shape[0])},
            "kl_train": kl, "agreement_validation": agreement,
            "predictor_validation": predictor_report(predictor, val,
                                                     head_agrees(backbone, val, maps)),
            "head_flops_extra": {"trained": maps.flops(0), "distilled": ridge.flops(0)},
            "predictor_flops": predictor.flops(), "collect_s": collect_s, "train_s": train_s}
    write_json(meta_path, meta)
    if progress:
        print(f"trained heads of {backbone.name} on {task} in {directory} "
              f"({collect_s + train_s:.1f} s)", file=sys.stderr)
    return maps, predictor, meta


def predictor_report(predictor: ExitPredictor, states: Any, agree: Any) -> dict[str, list[float]]:
    """Per layer: the mean predicted P(agree), the observed agreement and the accuracy of
    ``P >= 0.5`` on ``states`` (``[N, L, H]``) with labels ``agree`` (``[N, L]``)."""
    out: dict[str, list[float]] = {"mean_p": [], "agreement": [], "accuracy": []}
    for i in range(states.shape[1]):
        p, y = predictor.probability(i, states[:, i]), agree[:, i]
        out["mean_p"].append(float(p.mean()))
        out["agreement"].append(float(y.double().mean()))
        out["accuracy"].append(float(((p >= 0.5) == y).double().mean()))
    return out


def trained_heads(backbone: Any, task: str, config: TrainedHeadsConfig | None = None,
                  progress: bool = True, **column_options: Any) -> LowRankMaps:
    """The trained heads of ``backbone`` on ``task`` (prepared on first use)."""
    return prepare_trained(backbone, task, config, progress, **column_options)[0]


def trained_predictor(backbone: Any, task: str, config: TrainedHeadsConfig | None = None,
                      progress: bool = True, **column_options: Any) -> ExitPredictor:
    """The exit predictor fitted for the trained heads of ``backbone`` on ``task``."""
    return prepare_trained(backbone, task, config, progress, **column_options)[1]


def agreement_rows(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per layer (1-based ``layer``) of ``meta.json``'s validation agreement: the plain
    LM head, ridge maps on the same states and the trained adapters, for a results file or a
    docs table."""
    agree = meta["agreement_validation"]
    names = list(agree)
    return [{"layer": i + 1, **{n: agree[n][i] for n in names}}
            for i in range(len(agree[names[0]]))]


__all__ = ["TrainedHeadsConfig", "agreement_rows", "continuation_states", "predictor_report",
           "prepare_trained", "trained_heads", "trained_predictor"]
