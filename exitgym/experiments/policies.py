"""A run's trained policy and the env it acts in, loaded back from the run directory.

What ``evaluate`` and deployment (:mod:`exitgym.inference`) read from a finished run,
apart from training itself: the policy weights (safetensors, checksummed when written, verified
when read; never a pickle) and ``env_spec.json``, the exact env the policy was trained in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exitgym.agents.registry import train_agent
from exitgym.experiments.binding import bound_cache
from exitgym.experiments.configs import TrainConfig
from exitgym.experiments.env_spec import EnvSpec
from exitgym.experiments.plugins import load_run_plugins
from exitgym.experiments.runs import CONFIG_FILE, RunDir, RunError
from exitgym.utils.atomic import jsonable
from exitgym.utils.configs import from_dict

ENV_SPEC_FILE = "env_spec.json"
"""The training env of a run (with the policy's FLOPs), written by
:func:`~exitgym.experiments.training.train`."""


def open_training_run(path: str | Path) -> RunDir:
    """The complete training run in ``path``; a comparison directory is refused with the
    training runs it holds (what ``evaluate`` and ``infer`` take).

    Raises:
        RunError: not a run, not complete, or a comparison (the message lists its runs).
    """
    run = RunDir.open(path)
    if run.file(CONFIG_FILE).is_file() and run.config.get("command") == "compare":
        runs = sorted(str(p.parent) for p in run.path.glob(f"runs/*/{CONFIG_FILE}"))
        raise RunError(f"{run.path} is a comparison (exitgym compare / demo), not a training run; "
                       f"pass one of its training runs: {runs or 'it trained none'} (`exitgym "
                       f"replay {run.path}` analyses or verifies all of it)")
    return run.require_complete()


def record_policy_checksums(run: RunDir) -> None:
    """Checksum every policy file just written, so later loads detect edits on disk."""
    names = sorted(p.name for p in run.path.glob("*.safetensors") if p.is_file())
    run.record_checksums(*names)


def load_policy(run: RunDir | str | Path, cache: Any | None = None) -> Any:
    """The trained policy of a run (safetensors; never a pickle); ``run`` a :class:`RunDir` or
    the path of a complete run.

    The weights' checksums recorded at training time are verified first: an edited file is
    refused with a :class:`RunError`. ``cache`` is only used by SB3 policies, whose model is
    rebuilt around an env with the training spaces (default: the run's prepared training cache).
    """
    if not isinstance(run, RunDir):
        run = open_training_run(run)
    run.verify_checksums(*[n for n in run.state.get("sha256", {}) if n.endswith(".safetensors")])
    load_run_plugins(run.path)  # its agent may be a plug-in's (``register_agent``)
    # RLlib runs (``config.json`` ``engine: rllib``) export their actor as an MLPPolicy.
    engine = run.config.get("engine", "local")
    if engine == "local" and train_agent(run.config["config"]["agent"]).kind == "sb3":
        from exitgym.agents.sb3 import load_sb3

        spec = run_env_spec(run)
        if cache is None and spec.uses_cache:
            cache = bound_cache(run.path, spec)
        return load_sb3(run.path, env=spec.make(cache=cache))
    from exitgym.agents.conditioned import load_exit_policy

    return load_exit_policy(run.path)  # an MLPPolicy, or cost-conditioned (ConditionedPolicy)


def run_env_spec(run: RunDir) -> EnvSpec:
    """The env spec the run's policy was trained with (policy FLOPs included).

    ``config.json`` is the one source of truth: both files are checksummed when written and
    verified here, and ``env_spec.json`` (which adds the policy's FLOPs) must be the env the
    config describes, so an edit to either is refused instead of silently ignored.

    Raises:
        RunError: a file was edited, or the two disagree (the message names the fields).
    """
    recorded = run.state.get("sha256", {})
    run.verify_checksums(*[n for n in (CONFIG_FILE, ENV_SPEC_FILE) if n in recorded])
    load_run_plugins(run.path)  # its rewards, views and agents may come from plug-ins
    configured = from_dict(TrainConfig, run.config["config"])  # nested or legacy flat
    if not run.file(ENV_SPEC_FILE).is_file():
        return configured.env_spec()
    spec = EnvSpec.from_json(run.read_json(ENV_SPEC_FILE))
    expected = configured.env_spec(policy_flops=float(spec.kwargs.get("policy_flops") or 0.0))
    if jsonable(expected.to_json()) != jsonable(spec.to_json()):
        diff = {k: (v, spec.to_json().get(k)) for k, v in expected.to_json().items()
                if jsonable(v) != jsonable(spec.to_json().get(k))}
        raise RunError(f"{run.path}: {CONFIG_FILE} and {ENV_SPEC_FILE} disagree ({CONFIG_FILE} "
                       f"vs {ENV_SPEC_FILE}: {diff}); one of them was edited. Restore it, or "
                       f"train a new run with the settings you want")
    return spec


EXIT_ENV_ID = "exitgym/EarlyExit-v0"
"""The environment whose policies exit inference deploys and operating points read."""


def load_exit_run(run_dir: str | Path) -> tuple[Any, Any]:
    """The policy of a complete training run and the env spec it was trained with.

    Uses the run format of :mod:`exitgym.experiments.runs` / :mod:`exitgym.experiments.training`
    (``config.json``, ``run_state.json``, ``policy.safetensors`` + ``policy.json``); nothing is
    unpickled.

    Raises:
        RunError: the folder is not a run, or the run did not finish (the message says how to
            resume it).
        ValueError: the run trained on another environment than ``exitgym/EarlyExit-v0`` (what
            :mod:`exitgym.inference` deploys).
    """
    run = open_training_run(run_dir)
    spec = run_env_spec(run)
    if spec.env_id != EXIT_ENV_ID:
        raise ValueError(f"{run.path} trained a policy for {spec.env_id}; exit inference needs "
                         f"one trained on {EXIT_ENV_ID}")
    policy = load_policy(run)
    if hasattr(policy, "eval"):
        policy.eval()
    return policy, spec
