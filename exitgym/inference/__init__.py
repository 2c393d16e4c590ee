"""Deployment: a trained run's policy on the live backbone, texts in, answers and costs out.

One entry point, :func:`infer` (re-exported as ``exitgym.infer``), reads the run's environment
and deploys its policy with the engine of that environment:

- ``exitgym/EarlyExit-v0``: :class:`~exitgym.inference.early_exit.ExitInference` (layers run
  until the policy exits; exited rows leave the batch);
- ``exitgym/SkipBlock-v0`` and ``exitgym/SwitchableDecision-v0``:
  :class:`~exitgym.inference.skip.SkipInference` (the environment's own cohort step on the
  user's texts; skipped blocks are not computed);
- ``exitgym/TokenExit-v0`` is refused: a decoder's per-token exits are deployed by
  ``exitgym.generate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from exitgym.inference.early_exit import ExitInference, InferenceResult
from exitgym.inference.skip import SKIP_ENVS, SkipInference, SkipInferenceResult

__all__ = ["ExitInference", "InferenceResult", "SkipInference", "SkipInferenceResult", "infer"]


def run_env_id(run_dir: str | Path) -> str:
    """The environment id a complete training run trained on (its checked env spec)."""
    from exitgym.experiments.policies import open_training_run, run_env_spec

    return run_env_spec(open_training_run(run_dir)).env_id


def infer(
    run_or_policy: str | Path | Any,
    texts: Sequence[str],
    *,
    backbone: Any | None = None,
    heads: Any | None = None,
    batch_size: int = 1,
    text_pairs: Sequence[str] | None = None,
    observation: str | None = None,
    policy_flops: float = 0.0,
    max_length: int = 128,
    budget: float | None = None,
    tau: float | None = None,
    device: str = "auto",
) -> InferenceResult | SkipInferenceResult:
    """Predict ``texts`` with a trained policy: one call from a run (or a policy) to answers.

    Args:
        run_or_policy: A trained run directory (early-exit or skip env), or an early-exit policy
            object (then ``backbone`` and ``heads`` are required; a skip policy object goes to
            :class:`~exitgym.inference.skip.SkipInference`).
        texts: The inputs (a list of strings).
        backbone, heads: Model objects; for an early-exit run they default to the run's
            prepared ones (a skip run always uses its own).
        batch_size: 1 runs each text alone; larger batches drop exited rows after every layer.
        text_pairs: Second segments for pair tasks.
        observation, policy_flops, max_length: For a policy object: the env settings it was
            trained with (a run directory records them).
        budget, tau: For an early-exit run: deploy its policy's reading chosen on validation for
            this FLOPs budget, or at this threshold on ``P(exit)``
            (:mod:`exitgym.experiments.operating`; recorded in the run). Neither: greedy.
        device: ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        :class:`InferenceResult` (early exit: predictions, exit layers and cost per text, and
        the operating point deployed) or :class:`SkipInferenceResult` (a skip run: predictions,
        cost and skip rates per text).

    Raises:
        ValueError: the run trained on ``exitgym/TokenExit-v0`` (use ``exitgym.generate``), or
            a skip run was given budget / tau / backbone / heads.
    """
    if isinstance(run_or_policy, (str, Path)):
        env_id = run_env_id(run_or_policy)
        if env_id == "exitgym/TokenExit-v0":
            raise ValueError(f"{run_or_policy} trained a TokenExit-v0 policy (per-token exits of "
                             "a decoder): deploy it with exitgym.generate(run_dir, prompts); "
                             "infer answers texts with EarlyExit-v0, SkipBlock-v0 and "
                             "SwitchableDecision-v0 runs")
        if env_id in SKIP_ENVS:
            given = [n for n, v in (("budget", budget), ("tau", tau), ("backbone", backbone),
                                    ("heads", heads)) if v is not None]
            if given:
                raise ValueError(f"{given} apply to early-exit runs; a {env_id} run deploys "
                                 "its greedy policy on its own prepared backbone and heads")
            engine = SkipInference.from_run(run_or_policy, device=device)
            return engine(texts, text_pairs=text_pairs, batch_size=batch_size)
        chosen, reading = {}, None
        if budget is not None or tau is not None:
            from exitgym.experiments.operating import operating_point

            point = operating_point(run_or_policy, budget=budget, tau=tau)
            reading, chosen = point.policy, point.record
        exit_engine = ExitInference.from_run(run_or_policy, backbone=backbone, heads=heads,
                                             policy=reading, device=device)
        result = exit_engine(texts, text_pairs=text_pairs, batch_size=batch_size)
        return replace(result, operating_point=chosen) if chosen else result
    if budget is not None or tau is not None:
        raise ValueError("budget= and tau= read a run's policy: pass the run directory")
    if backbone is None or heads is None:
        raise ValueError("infer(policy, texts) needs backbone= and heads= (or pass a run "
                         "directory instead of a policy)")
    engine_ = ExitInference(run_or_policy, backbone, heads, observation=observation,
                            policy_flops=policy_flops, max_length=max_length, device=device)
    return engine_(texts, text_pairs=text_pairs, batch_size=batch_size)
