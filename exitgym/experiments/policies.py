"""A run's trained policy and the env it acts in, loaded back from the run directory.

What ``evaluate`` and deployment (:mod:`exitgym.inference`) read from a finished run,
apart from training itself: the policy weights (safetensors, checksummed when written, verified
when read; never a pickle) and ``env_spec.json``, the exact env the policy was trained in.
"""

from __future__ import annotations

from typing import Any

from exitgym.agents.registry import train_agent
from exitgym.experiments.configs import TrainConfig
from exitgym.experiments.env_spec import EnvSpec
from exitgym.experiments.runs import RunDir
from exitgym.utils.configs import from_dict

ENV_SPEC_FILE = "env_spec.json"
"""The training env of a run (with the policy's FLOPs), written by
:func:`~exitgym.experiments.training.train`."""


def record_policy_checksums(run: RunDir) -> None:
    """Checksum every policy file just written, so later loads detect edits on disk."""
    names = sorted(p.name for p in run.path.glob("*.safetensors") if p.is_file())
    run.record_checksums(*names)


def load_policy(run: RunDir, cache: Any | None = None) -> Any:
    """The trained policy of a run (safetensors; never a pickle).

    The weights' checksums recorded at training time are verified first: an edited file is
    refused with a :class:`RunError`. ``cache`` is only used by SB3 policies, whose model is
    rebuilt around an env with the training spaces (default: the run's prepared training cache).
    """
    run.verify_checksums(*[n for n in run.state.get("sha256", {}) if n.endswith(".safetensors")])
    kind = train_agent(run.config["config"]["agent"]).kind
    if kind == "sb3":
        from exitgym.agents.sb3 import load_sb3

        return load_sb3(run.path, env=run_env_spec(run).make(cache=cache))
    from exitgym.agents.mlp_policy import MLPPolicy

    return MLPPolicy.load(run.path)


def run_env_spec(run: RunDir) -> EnvSpec:
    """The env spec the run's policy was trained with (policy FLOPs included)."""
    if run.file(ENV_SPEC_FILE).is_file():
        return EnvSpec.from_json(run.read_json(ENV_SPEC_FILE))
    return from_dict(TrainConfig, run.config["config"]).env_spec()  # nested or legacy flat
