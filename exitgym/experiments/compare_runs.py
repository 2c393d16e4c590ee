"""Resuming a comparison: the same ``compare`` / ``demo`` command on an unfinished ``--out``
continues it.

A comparison killed midway (Ctrl-C, SIGTERM, a crash, SIGKILL: ``interrupted``, ``failed`` or a
stale ``running``) keeps every training run it finished under ``runs/``. Running the same command
again (or with ``--resume``) skips those agents (their policy is loaded back and evaluated again
in this process, the same episodes), continues a half-trained one from its last checkpoint
(bit-identical to an uninterrupted run) and trains the rest; the rules, ConsistentEE and the
report are recomputed (they are deterministic). The stored ``config.json`` must equal the new
flags: a differing one is refused naming the fields, so results of two settings never mix. A
complete comparison is only replaced with ``--overwrite``; one whose process is still alive is
never touched. Both engines (local, Ray Tune) share this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exitgym.experiments.configs import CompareConfig, TrainConfig
from exitgym.experiments.runs import CONFIG_FILE, STATE_FILE, RunDir, RunError
from exitgym.experiments.training import TrainResult
from exitgym.utils.atomic import jsonable
from exitgym.utils.configs import flatten, from_dict


def open_comparison(config: CompareConfig, out: Path, *, overwrite: bool = False,
                    resume: bool = False) -> tuple[RunDir, str | None]:
    """The comparison's run directory, and (when it continues an unfinished one) that run's
    status before this process took it over.

    Raises:
        RunError: ``out`` holds a complete comparison (without ``overwrite``), a run still being
            written, a training run, or a comparison of other flags (the fields are named);
            ``resume`` with nothing to resume.
    """
    existing = RunDir(out)
    if overwrite or not existing.state_path.is_file():
        return RunDir.create(out, overwrite=overwrite, resume=resume, resumable=False), None
    existing.refuse_if_live()
    previous = existing.describe()
    if existing.status == "complete":
        if resume:
            raise RunError(f"--resume: {out} is already complete; nothing to resume")
        raise RunError(f"{out} already holds a run ({previous}); choose another --out or "
                       f"--overwrite to replace it")
    if existing.file(CONFIG_FILE).is_file():  # else killed before it: nothing done yet
        recorded = existing.config
        if recorded.get("command") != "compare":
            raise RunError(f"{out} holds a {recorded.get('command') or 'non-comparison'} run "
                           f"({previous}), not a comparison; choose another --out or "
                           f"--overwrite to replace it")
        changed = differing_fields(recorded.get("config", {}), config)
        if changed:
            raise RunError(f"{out} holds an unfinished comparison ({previous}) of other flags: "
                           f"{changed}; rerun it with its own flags to resume it, or choose "
                           f"another --out or --overwrite to replace it")
    return RunDir.create(out, resume=True), previous


def differing_fields(stored: dict[str, Any], config: CompareConfig) -> str:
    """``--flag stored (now new)`` for every field where a stored config differs ("" when
    none); a config recorded before a field existed compares with that field's default."""
    now = jsonable(flatten(config))
    try:
        then = jsonable(flatten(from_dict(CompareConfig, stored)))
    except (TypeError, ValueError):  # unknown or invalid keys: compared as they are
        then = stored
    names = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
    return ", ".join(f"--{k.replace('_', '-')} {_flag(then.get(k))} (now {_flag(now.get(k))})"
                     for k in names)


def _flag(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def run_complete(path: Path) -> bool:
    """A training run of the comparison that finished (skipped when it is resumed)."""
    return (path / STATE_FILE).is_file() and RunDir(path).status == "complete"


def resume_note(out: Path, previous: str, names: list[str]) -> str:
    """What resuming ``out`` will do with each trained agent (printed before it starts)."""
    runs = {name: RunDir(out / "runs" / name) for name in names}
    done = [n for n, r in runs.items() if r.status == "complete"]
    begun = [n for n, r in runs.items() if r.state_path.is_file() and r.status != "complete"]
    lines = [f"resuming {out} ({previous}): {len(done)} of {len(names)} trained agents are "
             f"complete and skipped" + (f" ({', '.join(done)})" if done else "")]
    if begun:
        lines.append(f"  continued from their last checkpoint: {', '.join(begun)}")
    lines.append(f"  trained from the start: {len(names) - len(done) - len(begun)}; the rules, "
                 f"ConsistentEE and the report are recomputed")
    return "\n".join(lines)


def read_back(path: Path, cfg: TrainConfig, caches: dict[str, Any]) -> TrainResult:
    """A finished training run's policy, env spec and evaluation, as ``train`` returns them.

    The evaluation is the run's greedy evaluation repeated here (same policy weights, env, seed
    and cache: the same episodes), since ``compare`` needs the per-episode outcomes.
    """
    from exitgym.agents.rollout import evaluate
    from exitgym.experiments.policies import load_policy, run_env_spec

    run = RunDir.open(path).require_complete()
    policy, spec = load_policy(run), run_env_spec(run)
    env = spec.with_split(cfg.eval_split).make(cfg.num_envs, caches[cfg.eval_split])
    try:
        result = evaluate(policy, env, seed=cfg.seed)
    finally:
        env.close()
    return TrainResult(run, result, [], policy, spec)


__all__ = ["differing_fields", "open_comparison", "read_back", "resume_note", "run_complete"]
