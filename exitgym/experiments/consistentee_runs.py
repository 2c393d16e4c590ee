"""ConsistentEE in ``compare``: the full schedule per (target cost, seed), saved self-contained.

ConsistentEE retrains the exit heads (:mod:`exitgym.agents.consistentee`), so its policy is only
meaningful on its own heads. Each agent's directory ``runs/consistentee-b<target>-s<seed>/`` holds
``heads.safetensors`` (the returned heads, never a pickle) and ``policy.safetensors``; its
:class:`~exitgym.experiments.env_spec.EnvSpec` names the heads file (``heads_file``, relative to
the comparison directory), so validation, test, the recorded trajectories and ``replay --verify``
all run the same :func:`~exitgym.agents.rollout.evaluate` / env code on the prepared cache whose
per-layer logits are recomputed by those heads from the cached pooled states. The policy is the
official code's, one ``Linear(H, 32)``-GELU-``Linear(32, 1)``-sigmoid net per layer on the hidden
state (:mod:`exitgym.agents.consistentee_policy`; observation ``hidden+depth``, the depth only
picking the layer's net), charged the FLOPs of one net per decision (``mlp_flops``, like every
other policy) and trained with the official mean-of-K baseline (K = 8, or the largest power of
two dividing a smaller batch); the policy phases are budget-targeted
(``ReinforceConfig.target_cost``: the knob is the target cost), with the hardness reward.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from exitgym.experiments.env_spec import EnvSpec

CONSISTENTEE = "consistentee"
"""Registry name and row label."""
HEADS_FILE = "heads.safetensors"
"""The returned heads inside an agent's directory."""
OBSERVATION = "hidden+depth"
"""ConsistentEE's policy input: the pooled hidden state of the current layer (every per-layer
net's input) and the depth view, whose layer fraction picks that layer's net
(``agents.consistentee_policy.PER_LAYER_OBSERVATION``)."""

HEADS_SPLIT = "train"
"""ConsistentEE fits its heads on the rows the prepared heads were fit on; its policy phases
train on the comparison's ``train_split`` (the held-out ``policy`` rows by default)."""
REWARD = "hardness"
"""ConsistentEE's reward (memorized-layer-weighted cost)."""


@dataclass(frozen=True)
class ConsistentEEJob:
    """One ConsistentEE agent of a comparison."""

    name: str
    """Directory name under ``runs/``."""
    target: float
    """Target cost of its policy phases (the row's knob)."""
    seed: int
    """Seed of heads, policy and sampling."""


def consistentee_jobs(targets: tuple[float, ...], seeds: tuple[int, ...]) -> list[ConsistentEEJob]:
    """Every (target, seed) ConsistentEE agent, in row order."""
    return [ConsistentEEJob(f"{CONSISTENTEE}-b{t:g}-s{s}", t, s) for t in targets for s in seeds]


def train_consistentee(job: ConsistentEEJob, base: EnvSpec, cache: Any, policy_cache: Any,
                       out: Path, *,
                       steps: int, batch_size: int, num_envs: int, lr: float | None,
                       rounds: int = 2) -> tuple[Any, EnvSpec]:
    """Run the schedule on the training ``cache``; save heads and policy under ``out/runs``.

    Args:
        job: which agent.
        base: the training env's spec (task, data, split); the observation, reward and policy
            FLOPs are set here.
        cache: the heads' training split's prepared cache (its pooled states are what the
            heads read).
        policy_cache: the split the policy phases train on (the held-out ``policy`` split;
            ``cache`` itself to train both on the same rows).
        out: the comparison directory.
        steps: REINFORCE updates in all, split evenly over the ``rounds + 1`` policy phases.
        batch_size: episodes per update (``batch_size / K`` samples, K rollouts each).
        num_envs: vector-env slots.
        lr: the policy's learning rate (None: REINFORCE's default).
        rounds: head/policy rounds of the schedule (ConsistentEEConfig.rounds).

    Returns:
        ``(policy, spec)``: the returned policy and the spec of its env, ``heads_file`` set
        (relative to ``out``), ``with_split`` re-targets it.
    """
    from exitgym.agents.consistentee import ConsistentEE, ConsistentEEConfig, save_heads
    from exitgym.agents.consistentee_policy import PerLayerReinforce, official_reinforce

    knobs: dict[str, Any] = {"batch_size": batch_size, "seed": job.seed,
                             "target_cost": job.target}
    if lr is not None:
        knobs["lr"] = lr
    reinforce = official_reinforce(**knobs)
    spec = base.with_kwargs(observation=OBSERVATION, reward=REWARD, alpha=0.0)
    probe = spec.make(None, policy_cache)
    try:
        flops = PerLayerReinforce.policy_config(probe.observation_space, probe.action_space,
                                                reinforce, OBSERVATION).flops
    finally:
        probe.close()
    spec = spec.with_kwargs(policy_flops=float(flops))
    config = ConsistentEEConfig(rounds=rounds, policy_updates=max(1, steps // (rounds + 1)),
                                reinforce=reinforce, seed=job.seed)
    schedule = ConsistentEE(cache, lambda c: spec.make(num_envs, c), config,
                            policy_cache=None if policy_cache is cache else policy_cache).run()
    assert schedule.agent is not None
    policy = schedule.agent.policy
    if policy.policy_flops != flops:
        raise RuntimeError(f"consistentee: the env charges {flops} policy FLOPs but the policy "
                           f"costs {policy.policy_flops}")
    directory = out / "runs" / job.name
    save_heads(schedule.heads, directory / HEADS_FILE)
    policy.save(directory, {"trainer": "ConsistentEE", "target_cost": job.target,
                            "seed": job.seed, "reinforce": asdict(reinforce),
                            "schedule": schedule.log})
    return policy, replace(spec, heads_file=f"runs/{job.name}/{HEADS_FILE}")


__all__ = ["CONSISTENTEE", "HEADS_FILE", "HEADS_SPLIT", "ConsistentEEJob", "consistentee_jobs",
           "train_consistentee"]
