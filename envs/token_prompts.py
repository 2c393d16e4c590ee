"""Decoders and prompts of the environments that generate: loaded once, placed on a device.

``TokenExit-v0``, the skip environments given a decoder and ``exitgym.generate`` all load a
decoder by name (once per name, device and dtype per process), put it (and distilled maps) where
the settings say, and tokenize their prompts the same way. Split from
:mod:`exitgym.envs.token_core`, which re-exports these names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["decoder_by_name", "load_prompts", "maps_on"]


_DECODERS: dict[tuple[str, str, str], Any] = {}
"""Loaded decoders by (name, resolved device, resolved dtype); at most :data:`_KEEP` of them."""
_KEEP = 4


def decoder_by_name(name: str, device: str = "auto", dtype: str = "float32") -> Any:
    """One loaded decoder per name, device and dtype per process (every env of a vector env
    shares it, and so do a run's training env, its evaluation env and ``exitgym.generate`` from
    the run). ``device="auto"`` is resolved first, so it shares the copy of what it resolves to.

    A shared copy that is no longer on its device and dtype (a caller gave it as an object with
    other ones, which moves it in place) is loaded anew, not moved back: a cast down to bfloat16
    and up again would not give the float32 weights back.
    """
    from exitgym.utils.devices import place, resolve_device, resolve_dtype

    where = resolve_device(device)
    kind = resolve_dtype(dtype, where)
    key = (name, str(where), str(kind))
    bb = _DECODERS.get(key)
    if bb is None or bb.device != where or next(bb.model.parameters()).dtype != kind:
        from exitgym.backbones.decoder_registry import load_decoder

        bb = load_decoder(name)
        place(bb.model, str(where), dtype)
        _DECODERS.pop(key, None)
        while len(_DECODERS) >= _KEEP:
            _DECODERS.pop(next(iter(_DECODERS)))
        _DECODERS[key] = bb
    return bb


def _forget_decoders() -> None:
    """Forget every loaded decoder (tests: a new process would load the files afresh)."""
    _DECODERS.clear()


decoder_by_name.cache_clear = _forget_decoders  # type: ignore[attr-defined]


def _prompt_texts(settings: Any) -> list[Any]:
    prompts = settings.prompts
    if prompts is None:
        from exitgym.data.tasks import load_task

        texts = list(load_task(settings.task, **settings.column_options())
                     .split(settings.split)["text"])
    elif isinstance(prompts, (str, Path)):
        path = Path(prompts).expanduser()
        if not path.is_file():
            raise ValueError(f"prompts={str(prompts)!r} is not a file; give a text file with one "
                             "prompt per line, or a list of texts or token-id lists")
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        texts = list(prompts)
    if settings.max_prompts is not None:
        texts = texts[: settings.max_prompts]
    if not texts:
        raise ValueError(f"{settings.env_id} needs at least one prompt")
    return texts


def check_fits(per_layer: Any, bb: Any, what: str) -> Any:
    """``per_layer`` (exit maps, an exit predictor: anything with ``num_layers`` and
    ``hidden_size``), refused with a ``ValueError`` when made for another depth or width
    (``what``: its name and verb, e.g. ``"exit predictor is"``)."""
    if (per_layer.num_layers, per_layer.hidden_size) != (bb.num_layers, bb.hidden_size):
        raise ValueError(f"the {what} for {per_layer.num_layers} layers of width "
                         f"{per_layer.hidden_size}; the decoder has {bb.num_layers} of width "
                         f"{bb.hidden_size}")
    return per_layer


def maps_on(maps: Any, bb: Any) -> Any:
    """``maps`` (``LayerMaps``, ``LowRankMaps`` or None) with its tensors where the decoder runs,
    in its dtype."""
    if maps is None:
        return maps
    return maps.to(bb.device, next(bb.model.parameters()).dtype)


def load_prompts(settings: Any, backbone: Any) -> tuple[Any, list[list[int]], list[str | None]]:
    """The decoder and the tokenized prompts of ``settings`` (a :class:`PromptFields` subclass).

    ``backbone`` is a decoder short name / directory (loaded once per process) or a
    ``DecoderBackbone``. Prompts are the task split's texts or ``settings.prompts`` (texts,
    token-id lists or a file), the first ``max_prompts`` of them, each cut to
    ``max_prompt_tokens`` tokens.

    Returns:
        ``(decoder, token ids per prompt, text per prompt or None for prompts given as ids)``.
    """
    for name in ("max_prompt_tokens", "max_new_tokens"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    device, dtype = getattr(settings, "device", "auto"), getattr(settings, "dtype", "float32")
    if isinstance(backbone, str):
        bb = decoder_by_name(backbone, device, dtype)
    else:
        from exitgym.utils.devices import place

        bb = backbone
        place(bb.model, device, dtype)  # a given decoder is moved there in place
    texts = _prompt_texts(settings)
    ids: list[list[int]] = []
    for k, prompt in enumerate(texts):
        if isinstance(prompt, str):
            ids.append(bb.encode([prompt])[0])
        elif all(isinstance(t, (int, np.integer)) for t in prompt) and len(prompt):
            ids.append([int(t) for t in prompt])
        else:
            raise ValueError(f"prompts[{k}] must be a text or a non-empty list of token ids")
    ids = [p[: settings.max_prompt_tokens] for p in ids]
    if any(len(p) == 0 for p in ids):
        raise ValueError("a prompt tokenized to no tokens; remove empty prompts")
    return bb, ids, [t if isinstance(t, str) else None for t in texts]
