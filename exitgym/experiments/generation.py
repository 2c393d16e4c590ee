"""Early-exit generation with a policy: prompts in, texts out, batched with continuous refill.

:func:`generate` drives the same machinery as ``exitgym/TokenExit-v0`` (its
:class:`~exitgym.envs.token_core.TokenCore` observations and the
:class:`~exitgym.envs.token_runner.TokenRunner`), so a policy sees exactly the observations it
was trained or tuned on. ``batch_size`` rows run side by side, one batched layer call per layer
index; when a row's prompt is finished the next prompt starts in that row at once (continuous
batching, so no row idles while prompts remain). Without a policy no token exits: the output is
greedy ``generate`` (tests check it token for token), which is the bench's speed baseline. The
full-depth reference (the agreement) is optional, since it costs a second pass.

The policy is an object, or the directory of a ``exitgym train --env exitgym/TokenExit-v0`` run:
then the run's policy, decoder, exit heads (distilled maps included), observation view and policy
FLOPs are loaded, and a decoder or heads whose fingerprint differs from the run's is refused
(:mod:`exitgym.experiments.token_runs`).

``mode="speculative"`` is the lossless mode (:mod:`exitgym.experiments.speculative`): drafts from
the first ``draft_layer`` layers verified by the rest in one chunk, output identical to greedy
``generate``, every FLOP charged and the draft acceptance reported.

It lives in ``experiments`` (not ``inference``) because the layers contract gives ``inference``
one module; it only uses layers below.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exitgym.envs.settings import TokenExitSettings
from exitgym.envs.token_core import TokenCore

__all__ = ["DEFAULT_DECODER", "MODES", "GenerationResult", "generate"]


@dataclass(frozen=True)
class GenerationResult:
    """Per-prompt outcome of one :func:`generate` call, in the order the prompts were given."""

    generated_ids: list[list[int]]
    """The generated token ids of each prompt."""
    texts: list[str | None]
    """Their decoded texts (None without a tokenizer)."""
    exit_layers: list[list[int]]
    """The 1-based exit layer of every generated token (``L`` for every token of
    ``mode="speculative"``: each is the full model's)."""
    agreement: np.ndarray
    """float64 ``[N]`` share of tokens equal to the full-depth model's (NaN without reference)."""
    cost: np.ndarray
    """float64 ``[N]`` FLOPs charged / full-depth FLOPs of the same tokens."""
    num_layers: int
    """``L``."""
    seconds: float
    """Wall-clock seconds of the generation loop (prompt prefill included; the reference pass
    of ``mode="speculative"`` excluded)."""
    acceptance: np.ndarray = field(default_factory=lambda: np.array([]))
    """float64 ``[N]`` accepted draft tokens / drafted tokens of ``mode="speculative"`` (NaN in
    exit mode)."""

    @property
    def tokens_per_s(self) -> float:
        return sum(len(g) for g in self.generated_ids) / self.seconds


class _Generator(TokenCore):
    """The TokenExit core over ``batch_size`` rows, without the Gymnasium wrapper."""

    def __init__(self, settings: TokenExitSettings, batch_size: int, reference: bool) -> None:
        from gymnasium import spaces

        self.observation_space = self._build(settings)
        self.action_space = spaces.Discrete(2)
        self._init_rows(batch_size, reference)


DEFAULT_DECODER = "smollm2-135m"
"""The decoder :func:`generate` uses for a policy object when ``backbone`` is not given."""
MODES = ("exit", "speculative")
"""``exit``: the policy's exits decide each token; ``speculative``: lossless self-speculation."""


def generate(
    policy: Any | None,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 16,
    batch_size: int = 8,
    backbone: Any = None,
    heads: Any = None,
    kv: str = "copy",
    observation: str | None = None,
    reference: bool = False,
    max_prompt_tokens: int = 512,
    progress: bool = True,
    mode: str = "exit",
    draft_layer: int | None = None,
    draft_tokens: int = 4,
    device: str = "auto",
    dtype: str = "float32",
) -> GenerationResult:
    """Generate from every prompt, exiting where ``policy`` says.

    Args:
        policy: an exit policy (``act(obs, infos)``, e.g. a rule or a trained MLP policy); the
            directory (str or Path) of a TokenExit-v0 training run; or None: never exit (plain
            greedy generation).
        prompts: texts, or token-id lists.
        max_new_tokens: tokens per prompt.
        batch_size: rows generated side by side.
        backbone: decoder name or ``DecoderBackbone`` (default ``smollm2-135m``; for a run, the
            run's decoder, and one given here must have the run's fingerprint).
        heads: exit heads of a policy object: ``"lm-head"`` (default) or a ``LayerMaps``; a run
            brings its own.
        kv: ``copy``, ``recompute`` or ``full`` (see ``TokenExit-v0``).
        observation: the view the policy reads (default: its ``required_observation``, else
            ``hidden``, which runs no head before an exit; a run's: the one it was trained on).
        reference: also run the full-depth model to report agreement (a second pass).
        max_prompt_tokens: prompts are cut to this many tokens.
        progress: show a bar over the generated tokens (the first call also converts the
            embedded decoder once and says so).
        mode: ``exit`` (the policy exits) or ``speculative`` (lossless: ``policy`` must be None;
            ``heads`` are the draft's; ``kv`` and ``observation`` do not apply).
        draft_layer: speculative mode's draft layer ``k`` in ``[1, L]`` (required there).
        draft_tokens: speculative mode's longest draft ``n`` (>= 1).
        device: where the decoder runs (``auto``: CUDA when present; ``cpu``, ``cuda``,
            ``cuda:N``); a ``DecoderBackbone`` given is moved there in place. On CUDA a token's
            exit decision reads the layer's outputs back once.
        dtype: the decoder's floating dtype (``float32`` by default, so tokens equal the CPU's;
            ``bfloat16`` is what GPUs serve decoders in; ``auto``: bfloat16 on CUDA).

    Raises:
        ValueError: bad arguments (the message says what is allowed).
        RunError: a run that is not a complete TokenExit run, or whose decoder or heads differ.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; allowed: {list(MODES)}")
    if mode == "speculative":
        return _speculative(policy, prompts, max_new_tokens, batch_size, backbone, heads, kv,
                            observation, reference, max_prompt_tokens, progress, draft_layer,
                            draft_tokens, (device, dtype))
    if draft_layer is not None or draft_tokens != 4:
        raise ValueError("draft_layer and draft_tokens are options of mode='speculative'")
    policy_flops = 0.0
    if isinstance(policy, (str, Path)):
        from exitgym.experiments.token_runs import load_generation_run

        if heads is not None:
            raise ValueError("heads= is for policy objects; a run is deployed with the heads it "
                             "was trained with (leave heads out)")
        run = load_generation_run(policy, backbone=None if isinstance(backbone, str)
                                  or backbone is None else backbone)
        if isinstance(backbone, str) and backbone != run.spec.backbone:
            raise ValueError(f"run {str(policy)!r} was trained on decoder "
                             f"{run.spec.backbone!r}, not {backbone!r}; leave backbone out")
        if observation is not None and observation != run.observation:
            raise ValueError(f"the run's policy reads observation {run.observation!r}, not "
                             f"{observation!r}; leave observation out")
        policy, backbone, heads = run.policy, run.backbone, run.heads
        observation, policy_flops = run.observation, run.policy_flops
    elif policy is not None:
        policy_flops = float(getattr(policy, "policy_flops", 0.0) or 0.0)
    if observation is None:
        observation = getattr(policy, "required_observation", None) or "hidden"
    import torch

    with torch.inference_mode():  # no autograd bookkeeping on any tensor of the loop
        return _generate(policy, prompts, max_new_tokens, batch_size,
                         DEFAULT_DECODER if backbone is None else backbone,
                         "lm-head" if heads is None else heads, kv, observation, reference,
                         max_prompt_tokens, policy_flops, progress, (device, dtype))


def _generate(policy: Any, prompts: Sequence[Any], max_new_tokens: int, batch_size: int,
              backbone: Any, heads: Any, kv: str, observation: str, reference: bool,
              max_prompt_tokens: int, policy_flops: float,
              progress: bool = False,
              placed: tuple[str, str] = ("auto", "float32")) -> GenerationResult:
    from tqdm.auto import tqdm

    settings = TokenExitSettings(backbone=backbone, heads=heads, prompts=list(prompts),
                                 max_prompts=None,
                                 max_prompt_tokens=max_prompt_tokens,
                                 max_new_tokens=max_new_tokens, kv=kv, observation=observation,
                                 policy_flops=policy_flops, device=placed[0], dtype=placed[1])
    t0 = time.perf_counter()
    core = _Generator(settings, min(batch_size, len(prompts)), reference)
    core.observing = policy is not None
    rows = list(range(min(batch_size, len(prompts))))
    order = iter(range(len(prompts)))
    prompt_of = {row: next(order) for row in rows}
    core._begin(rows, [prompt_of[r] for r in rows])
    if policy is not None:
        policy.reset(len(rows))
    results: dict[int, dict[str, Any]] = {}
    active = list(rows)
    climbing = list(rows)  # rows whose token of this step has not exited yet
    refill: list[int] = []  # rows whose prompt is done, given the next one at the step's end
    bar = tqdm(total=len(prompts) * max_new_tokens, unit="token", disable=not progress,
               desc=f"generate ({len(prompts)} prompts)", leave=False)
    while active:
        if policy is None:
            actions = np.zeros(len(rows), dtype=np.int64)
        else:
            infos = {"sample_id": np.array([prompt_of.get(r, -1) for r in rows]),
                     "token": core._token.copy(), "layer": core._layer + 1}
            actions = np.asarray(policy.act(core._last_obs.copy(), infos)).reshape(-1)
        exiting = [r for r in climbing
                   if actions[r] == 1 or core._layer[r] == core.num_layers - 1]
        climbing = [r for r in climbing if r not in exiting]
        core._advance(climbing)  # compacted: only the rows still climbing run the next layer
        if exiting:
            bar.update(len(exiting))
            _, done, infos_out = core._exit(exiting, defer=True)
            for row, info, finished in zip(exiting, infos_out, done, strict=True):
                if not finished:
                    continue
                results[prompt_of[row]] = info
                nxt = next(order, None)
                if nxt is None:
                    active.remove(row)
                    prompt_of.pop(row)
                else:
                    prompt_of[row] = nxt
                    refill.append(row)
        if not climbing:  # the token step is over: the waiting rows start their next tokens
            climbing = core._resume()
            if refill:  # and finished rows their next prompts
                core._begin(refill, [prompt_of[r] for r in refill])
                climbing, refill = climbing + refill, []
    bar.close()
    seconds = time.perf_counter() - t0
    ordered = [results[k] for k in range(len(prompts))]
    agreement = np.array([i["agreement"] if reference else np.nan for i in ordered])
    return GenerationResult(
        generated_ids=[i["generated_ids"] for i in ordered],
        texts=[i["generated_text"] for i in ordered],
        exit_layers=[i["exit_layers"] for i in ordered],
        agreement=agreement, cost=np.array([i["episode_cost"] for i in ordered]),
        num_layers=core.num_layers, seconds=seconds, acceptance=np.full(len(ordered), np.nan))


def _speculative(policy: Any, prompts: Sequence[Any], max_new_tokens: int, batch_size: int,
                 backbone: Any, heads: Any, kv: str, observation: str | None, reference: bool,
                 max_prompt_tokens: int, progress: bool, draft_layer: int | None,
                 draft_tokens: int, placed: tuple[str, str]) -> GenerationResult:
    """``mode="speculative"`` (:mod:`exitgym.experiments.speculative`)."""
    import torch
    from tqdm.auto import tqdm

    from exitgym.envs.token_core import TokenWorld
    from exitgym.experiments.speculative import speculative_rows

    if policy is not None:
        raise ValueError("mode='speculative' takes no policy (pass None): the draft layer and "
                         "length are the arguments draft_layer and draft_tokens")
    if kv != "copy" or observation is not None:
        raise ValueError("kv= and observation= are options of mode='exit'; leave them out")
    if draft_layer is None:
        raise ValueError("mode='speculative' needs draft_layer (the layer the drafts exit at)")
    world = TokenWorld.build(TokenExitSettings(
        backbone=DEFAULT_DECODER if backbone is None else backbone,
        heads="lm-head" if heads is None else heads, prompts=list(prompts), max_prompts=None,
        max_prompt_tokens=max_prompt_tokens, max_new_tokens=max_new_tokens, device=placed[0],
        dtype=placed[1]))
    bb = world.backbone
    bar = tqdm(total=len(world.prompt_ids) * max_new_tokens, unit="token", disable=not progress,
               desc=f"generate speculative ({len(world.prompt_ids)} prompts)", leave=False)
    with torch.inference_mode():
        t0 = time.perf_counter()
        rows = speculative_rows(bb, world.maps, world.prompt_ids, max_new_tokens, batch_size,
                                draft_layer, draft_tokens, on_tokens=bar.update)
        seconds = time.perf_counter() - t0
        bar.close()
        agreement = np.full(len(rows), np.nan)
        if reference:  # the full-depth greedy continuation, one prompt at a time
            for k, (row, ids) in enumerate(zip(rows, world.prompt_ids, strict=True)):
                expected = bb.greedy([ids], max_new_tokens)[0].tolist()
                agreement[k] = np.mean(np.array(row.generated) == np.array(expected))
    generated = [r.generated for r in rows]
    return GenerationResult(
        generated_ids=generated, texts=[world.decode(g) for g in generated],
        exit_layers=[[bb.num_layers] * len(g) for g in generated], agreement=agreement,
        cost=np.array([r.flops / r.full_flops for r in rows]), num_layers=bb.num_layers,
        seconds=seconds, acceptance=np.array([r.accepted / r.drafted for r in rows]))
