"""The ``distilled`` exit-head recipe of decoder LMs: per-layer maps fitted to the last layer on
the task's training texts, prepared once and reused (``TokenExit-v0(heads="distilled")``).

Layout: ``cache_dir()/prepared/<task>__<decoder>__distilled-<hash>/`` with
``layer_maps.safetensors`` and ``meta.json`` (the fingerprints it was built from, the settings,
and the per-layer agreement with the last layer's token of the plain LM head and of the distilled
heads on validation texts, before and after). The hash covers the decoder's fingerprint, the
training texts' fingerprint and the settings, so any change prepares afresh; ``meta.json`` is
checked on load.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from exitgym.backbones.decoder_heads import WEIGHTS_FILE, LayerMaps, fit_layer_maps, head_agreement
from exitgym.utils.atomic import write_json
from exitgym.utils.paths import cache_dir

RECIPE_VERSION = 1
"""Bumped when the fitting changes what a configuration produces."""


@dataclass(frozen=True)
class DistillConfig:
    """What the distilled heads are fitted on."""

    train_texts: int = 64
    """First training texts whose every position is a fitting example."""
    validation_texts: int = 16
    """First validation texts the agreement before / after is measured on."""
    max_tokens: int = 32
    """Texts are cut to this many tokens."""
    ridge: float = 1e-3
    """Tikhonov weight of the least-squares fit (relative to the mean squared input)."""


def collect_states(backbone: Any, prompts: list[list[int]], batch: int = 16,
                   desc: str | None = None) -> Any:
    """``[positions, L, H]``: every layer's state at every position of the prompts.

    ``desc``: show a progress bar over the prompts with this title (a decoder pass over dozens
    of prompts takes minutes on a CPU, which a user should see moving).
    """
    import torch
    from tqdm.auto import tqdm

    out = []
    bar = tqdm(total=len(prompts), desc=desc, unit="prompt", disable=desc is None, leave=False)
    with torch.no_grad(), bar:
        for first in range(0, len(prompts), batch):
            chunk = prompts[first: first + batch]
            lengths = torch.tensor([len(p) for p in chunk])
            ids = torch.zeros(len(chunk), int(lengths.max()), dtype=torch.long)
            for b, p in enumerate(chunk):
                ids[b, : len(p)] = torch.tensor(p)
            valid = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
            cache = backbone.new_cache(len(chunk), ids.shape[1])
            hidden = backbone.embed(ids, cache)
            layers = []
            for i in range(backbone.num_layers):
                hidden = backbone.layer(i, hidden, cache, valid=valid)
                layers.append(hidden)
            # [positions, L, H], on the host in float32 whatever the decoder's device and dtype:
            # the maps are fitted there (a small ridge solve), then placed with the decoder.
            out.append(torch.stack(layers, dim=2)[valid].float().cpu())
            bar.update(len(chunk))
    return torch.cat(out)


def _texts(task: str, split: str, count: int, column_options: dict[str, Any]) -> list[str]:
    from exitgym.data.tasks import load_task

    texts = list(load_task(task, **column_options).split(split)["text"])[:count]
    if not texts:
        raise ValueError(f"task {task!r} has no {split} texts to distil the heads on")
    return texts


def distilled_heads(backbone: Any, task: str, config: DistillConfig | None = None,
                    progress: bool = True, **column_options: Any) -> LayerMaps:
    """The distilled heads of ``backbone`` on ``task``'s training texts (prepared on first use).

    Raises:
        ValueError: see :func:`prepare_distilled`.
    """
    return prepare_distilled(backbone, task, config, progress, **column_options)[0]


def prepare_distilled(backbone: Any, task: str, config: DistillConfig | None = None,
                      progress: bool = True, **column_options: Any
                      ) -> tuple[LayerMaps, dict[str, Any]]:
    """The distilled heads and their ``meta.json`` (prepared on first use, then loaded).

    Raises:
        ValueError: the decoder has no tokenizer (pass a ``LayerMaps`` to the env instead), or
            the task has no texts.
    """
    config = config or DistillConfig()
    if backbone.tokenizer is None:
        raise ValueError(f"heads='distilled' needs a decoder with a tokenizer ({backbone.name!r} "
                         "has none); fit LayerMaps with exitgym.backbones.decoder_heads and pass "
                         "them as heads=")
    train = _texts(task, "train", config.train_texts, column_options)
    data = hashlib.sha256(json.dumps(train).encode()).hexdigest()
    key = {"decoder": backbone.fingerprint(), "data": data, "config": asdict(config),
           "version": RECIPE_VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    name = f"{Path(str(task)).name}__{Path(str(backbone.name)).name}__distilled-{digest}"
    directory = cache_dir() / "prepared" / name
    meta_path = directory / "meta.json"
    if meta_path.is_file() and (directory / WEIGHTS_FILE).is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            return LayerMaps.load(directory / WEIGHTS_FILE), meta
    tic = time.perf_counter()
    cut = [ids[: config.max_tokens] for ids in backbone.encode(train)]
    if progress:
        print(f"exitgym: first use: fitting distilled exit heads of {backbone.name} on {task} "
              f"({len(cut)} train texts, then {config.validation_texts} validation texts); "
              "saved for every later use", file=sys.stderr)
    desc = f"distilled heads: decoder pass over {task} train" if progress else None
    maps = fit_layer_maps(collect_states(backbone, cut, desc=desc), config.ridge)
    fit_s = time.perf_counter() - tic
    val = [ids[: config.max_tokens] for ids in backbone.encode(
        _texts(task, "validation", config.validation_texts, column_options))]
    states = collect_states(backbone, val, desc=desc and desc.replace("train", "validation"))
    before, after = head_agreement(backbone, states), head_agreement(backbone, states, maps)
    directory.mkdir(parents=True, exist_ok=True)
    maps.save(directory / WEIGHTS_FILE)
    meta = {"key": key, "task": str(task), "decoder": backbone.name,
            "positions": {"train": int(sum(map(len, cut))), "validation": int(states.shape[0])},
            "agreement_validation": {"lm-head": before, "distilled": after},
            "head_flops_extra": maps.flops(0), "fit_s": fit_s}
    write_json(meta_path, meta)
    if progress:
        print(f"distilled heads of {backbone.name} on {task} in {directory} ({fit_s:.1f} s)")
    return maps, meta


__all__ = ["DistillConfig", "collect_states", "distilled_heads", "prepare_distilled"]
