"""Runs on ``exitgym/TokenExit-v0``: bound to their decoder and exit heads, loaded back to generate.

``exitgym train --env exitgym/TokenExit-v0`` records in ``config.json`` (``fingerprints``, per
split trained on) the decoder's weight fingerprint and its exit heads' (the distilled maps'
weights; ``lm-head``: the decoder's own head, covered by the decoder's fingerprint). A policy
reads the states of one decoder through one set of heads: deployed on another it still acts, but
on observations it never saw, so :func:`load_generation_run` refuses a decoder or heads whose
fingerprint differs from the run's, with a message saying which and what to do.

:func:`load_generation_run` gives :func:`exitgym.generate` everything a run fixes: the policy, the
decoder, the heads, the observation view and the policy's FLOPs (charged per decision, as in
training).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exitgym.experiments.env_spec import TOKEN_ENVS, EnvSpec
from exitgym.experiments.policies import load_policy, open_training_run, run_env_spec
from exitgym.experiments.runs import RunError

LM_HEAD = "lm-head"
"""``heads_fingerprint`` of runs without distilled maps (the head is part of the decoder)."""


def heads_fingerprint(maps: Any) -> str:
    """The fingerprint of distilled ``LayerMaps`` (:data:`LM_HEAD` for the plain LM head)."""
    return LM_HEAD if maps is None else maps.fingerprint


def token_settings(spec: EnvSpec, **overrides: Any) -> Any:
    """The :class:`~exitgym.envs.settings.TokenExitSettings` of a TokenExit spec (``overrides``
    replace fields, e.g. a loaded ``backbone`` or ``heads``)."""
    from exitgym.envs.settings import TokenExitSettings

    kwargs = {**spec.kwargs, "task": spec.task, "backbone": spec.backbone, "split": spec.split,
              "heads": spec.heads, **spec.prepare, **overrides}
    return TokenExitSettings.from_kwargs(**kwargs)


def decoder_and_heads(spec: EnvSpec) -> tuple[Any, Any]:
    """The decoder a TokenExit spec names and its exit maps (None: LM head); the process's
    loaded ones when an env already loaded them."""
    from exitgym.envs.token_core import decoder_by_name, exit_maps

    bb = decoder_by_name(spec.backbone)
    return bb, exit_maps(token_settings(spec), bb)


def token_fingerprints(spec: EnvSpec) -> dict[str, dict[str, Any]]:
    """``config.json["fingerprints"]`` of a TokenExit run: its split's decoder and heads."""
    bb, maps = decoder_and_heads(spec)
    return {spec.split: {"split": spec.split, "task": spec.task, "backbone": spec.backbone,
                         "heads_mode": spec.heads, "backbone_fingerprint": bb.fingerprint(),
                         "heads_fingerprint": heads_fingerprint(maps)}}


@dataclass(frozen=True, eq=False)
class GenerationRun:
    """What a TokenExit run fixes for generation."""

    path: Path
    """The run directory."""
    policy: Any
    """The trained policy."""
    backbone: Any
    """The decoder (fingerprint checked)."""
    heads: Any
    """Its ``LayerMaps`` (fingerprint checked), or None: the LM head."""
    observation: str
    """The view the policy was trained on."""
    policy_flops: float
    """FLOPs of one decision of the policy, charged per layer as in training."""
    spec: EnvSpec
    """The run's training env."""


def load_generation_run(path: str | Path, backbone: Any | None = None) -> GenerationRun:
    """The policy, decoder and heads of the complete TokenExit run in ``path``.

    Args:
        path: a run directory of ``exitgym train --env exitgym/TokenExit-v0``.
        backbone: a loaded ``DecoderBackbone`` to use instead of loading the run's (checked).

    Raises:
        RunError: not a complete training run, not a TokenExit run, or a decoder or heads
            whose fingerprint differs from the one the run recorded.
    """
    run = open_training_run(path)
    spec = run_env_spec(run)
    if spec.env_id not in TOKEN_ENVS:
        raise RunError(f"{run.path} is a run of {spec.env_id}; exitgym.generate deploys runs of "
                       f"{list(TOKEN_ENVS)} (encoder runs: exitgym.infer / "
                       "ExitInference.from_run)")
    bb, maps = bound_decoder(run.path, spec, backbone)
    return GenerationRun(run.path, load_policy(run), bb, maps,
                         str(spec.kwargs.get("observation", "features")),
                         float(spec.kwargs.get("policy_flops") or 0.0), spec)


def bound_decoder(root: str | Path, spec: EnvSpec, backbone: Any | None = None
                  ) -> tuple[Any, Any]:
    """The decoder and heads of the TokenExit run in ``root``, each refused when its fingerprint
    is not the recorded one (the decoder before distilled heads are prepared for it). What
    ``evaluate``, ``replay --verify`` and :func:`load_generation_run` check first.

    Raises:
        RunError: no fingerprint recorded, or the decoder or the heads differ.
    """
    from exitgym.envs.token_core import decoder_by_name, exit_maps
    from exitgym.experiments.binding import recorded

    root = Path(root)
    entries = [e for e in recorded(root).get("fingerprints", {}).values()
               if e.get("backbone_fingerprint")]
    if not entries:
        raise RunError(f"{root}: config.json records no decoder fingerprint, so the decoder "
                       "cannot be checked; train the run again with this exitgym")
    want = entries[0]
    bb = decoder_by_name(spec.backbone) if backbone is None else backbone
    got = bb.fingerprint()
    if got != want["backbone_fingerprint"]:
        given = "the decoder passed as backbone=" if backbone is not None else \
            f"the decoder {spec.backbone!r} loaded now"
        raise RunError(
            f"{root} was trained on decoder {want.get('backbone')!r} with weights fingerprint "
            f"{want['backbone_fingerprint'][:12]}…, but {given} has {got[:12]}…: its weights "
            "differ, and the policy would read states it never saw. Restore the decoder the run "
            "was trained with, or train a new run on this one")
    maps = exit_maps(token_settings(spec), bb)
    heads = heads_fingerprint(maps)
    if heads != want.get("heads_fingerprint"):
        raise RunError(
            f"{root} was trained with {spec.heads!r} exit heads of fingerprint "
            f"{str(want.get('heads_fingerprint'))[:12]}…, but the heads prepared now have "
            f"{heads[:12]}… (re-fitted on other texts or settings). Restore the prepared heads "
            "the run used, or train a new run with these")
    return bb, maps


__all__ = ["GenerationRun", "bound_decoder", "decoder_and_heads", "heads_fingerprint",
           "load_generation_run", "token_fingerprints", "token_settings"]
