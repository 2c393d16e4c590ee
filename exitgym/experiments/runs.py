"""Run directories: where ``train``, ``evaluate``, ``compare`` and ``demo`` put what they produce.

A run directory (``runs/<time>-<env>-<agent>-<seed>/`` or ``--out``) holds::

    config.json          resolved config, package versions, fingerprints, git commit
    run_state.json       {"status": "running" | "interrupted" | "failed" | "complete", "pid",
                         "host", ...}
    manifest.json        sha256 of every other file, written when the run completes
    metrics.csv          one row per logged training step (rewritten atomically)
    tb/                  TensorBoard events of the same metrics
    checkpoint-*/        the latest training checkpoint (``--resume`` continues from it)
    policy.safetensors   the trained policy (+ policy.json)
    trajectories/*.parquet  every evaluation episode (see :mod:`exitgym.experiments.trajectories`)
    eval-<split>.json    evaluation summary; report.md, plots

Every file is written to a temporary name and moved into place with ``os.replace``, so a reader
never sees half a file; ``run_state.json`` says ``complete`` only after everything else is written,
so an interrupted run never looks finished (``require_complete`` refuses it with a clear message).
A ``running`` run whose process (``pid`` on ``host``) is gone is *stale*: it may be resumed; one
whose process is alive is refused. ``--overwrite`` writes the new run in a hidden sibling
(``.<name>.new-<pid>``) and swaps it in only when it completes, so the old run survives any
failure, Ctrl-C or kill of the new one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from exitgym.utils.atomic import atomic_write_text, sha256_file, write_json
from exitgym.utils.manifest import MANIFEST_FILE, build_manifest
from exitgym.utils.plugins import plugin_record
from exitgym.utils.processes import process_alive, this_process
from exitgym.utils.staging import (
    clear_abandoned,
    new_staging_dir,
    replace_directory,
    staged_target,
)

STATE_FILE = "run_state.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
TRAJECTORY_DIR = "trajectories"
STATUSES = ("running", "interrupted", "failed", "complete")
"""Values of ``run_state.json["status"]``; only ``complete`` means every output is final."""
TRACKED_PACKAGES = (
    "exitgym", "torch", "transformers", "gymnasium", "stable-baselines3", "sb3-contrib", "numpy",
    "datasets", "pandas", "pyarrow", "safetensors",
)
"""Packages whose versions go into ``config.json`` (what a number depends on)."""


UNTRACKED = (STATE_FILE, MANIFEST_FILE)
"""Files a run's manifest leaves out: they change after it (status, added files)."""


class RunError(RuntimeError):
    """A run directory is missing, incomplete or inconsistent (the message says which)."""


# ---- JSON ---------------------------------------------------------------------------------
def read_json(path: str | os.PathLike[str]) -> Any:
    """Read JSON with an error naming the file when it is missing or damaged."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise RunError(f"{path} does not exist") from err
    except json.JSONDecodeError as err:
        raise RunError(f"{path} is not valid JSON ({err}); the file is damaged") from err


# ---- provenance -----------------------------------------------------------------------------
def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when absent)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(root: str | os.PathLike[str] | None = None) -> str | None:
    """Commit of the source tree exitgym runs from (None outside a git checkout).

    Read-only (``git rev-parse``); a dirty tree is marked with a ``+dirty`` suffix so a number is
    never attributed to a commit that did not produce it.
    """
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    # GIT_OPTIONAL_LOCKS=0: `git status` must not refresh (write) the index of the user's repo.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True, env=env).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=True, env=env).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head or None


def cache_fingerprints(cache: Any) -> dict[str, Any]:
    """Backbone / heads / data fingerprints of a LayerCache plus a fingerprint of its arrays."""
    import hashlib

    meta = dict(getattr(cache, "meta", {}) or {})
    out = {k: meta.get(k) for k in ("task", "split", "backbone", "heads_mode",
                                     "backbone_fingerprint", "heads_fingerprint",
                                     "data_fingerprint")}
    stored = meta
    meta_file = Path(str(meta.get("path", ""))) / "meta.json"  # backbones.cache.META_FILE
    if "arrays" not in stored and meta.get("path") and meta_file.is_file():
        stored = json.loads(meta_file.read_text())  # loaded caches drop the checksums from meta
    arrays = stored.get("arrays")
    if arrays:
        sums = {k: v.get("sha256") for k, v in arrays.items()}
        blob = json.dumps({**sums, "texts": stored.get("texts_sha256")}, sort_keys=True)
        out["cache_fingerprint"] = hashlib.sha256(blob.encode()).hexdigest()
        out["cache_path"] = meta.get("path")
    else:
        out["cache_fingerprint"] = meta.get("fingerprint")
    out["num_samples"] = int(cache.num_samples)
    out["num_layers"] = int(cache.num_layers)
    return out


# ---- run directory --------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", str(text)).strip("_") or "x"


def default_run_dir(env: str, agent: str, seed: int, root: str | os.PathLike[str] = "runs") -> Path:
    """``runs/<time>-<env>-<agent>-<seed>`` (time to the second, env id without namespace)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    env_name = env.split("/")[-1]
    return Path(root) / f"{stamp}-{_slug(env_name)}-{_slug(agent)}-{seed}"


@dataclass
class RunDir:
    """One run directory and its state file."""

    path: Path
    """The directory."""

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, resume: bool = False,
               overwrite: bool = False, resumable: bool = True) -> RunDir:
        """Open ``path`` for a new run (or, with ``resume``, an unfinished one); record this
        process (pid, host) as its writer.

        Refuses to overwrite a run, to touch one whose process is still alive, or to silently
        mix into a directory that holds another run: the caller must pick a new ``--out``, pass
        ``--resume`` (``resumable`` commands) or ``--overwrite``, which writes the new run in a
        hidden sibling that replaces the old one only when it completes (:meth:`mark_complete`).
        """
        run = cls(Path(path))
        if overwrite and resume:
            raise RunError("--overwrite replaces the run in --out; --resume continues it: pass one")
        if run.path.parent.is_dir():
            clear_abandoned(run.path)  # e.g. puts back a run set aside by a swap killed midway
        if run.state_path.is_file():
            run.refuse_if_live()
            if overwrite:
                return cls._staged(run.path)
            if not resume:
                resume_hint = ", --resume to continue an interrupted one" if resumable else ""
                raise RunError(f"{run.path} already holds a run ({run.describe()}); choose "
                               f"another --out{resume_hint} or --overwrite to replace it")
            if run.status == "complete":
                raise RunError(f"--resume: {run.path} is already complete; nothing to resume")
        elif resume:
            raise RunError(f"--resume: {run.path} holds no run to resume (no {STATE_FILE})")
        run.path.mkdir(parents=True, exist_ok=True)
        run.set_status("running", **this_process())
        return run

    @classmethod
    def _staged(cls, target: Path) -> RunDir:
        """A new run beside ``target``, to replace it when complete (``--overwrite``)."""
        run = cls(new_staging_dir(target))
        run.set_status("running", **this_process())
        return run

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        """An existing run directory (any status)."""
        run = cls(Path(path))
        if not run.state_path.is_file():
            raise RunError(f"{run.path} is not an exitgym run directory (no {STATE_FILE})")
        return run

    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE

    @property
    def state(self) -> dict[str, Any]:
        return read_json(self.state_path) if self.state_path.is_file() else {}

    @property
    def status(self) -> str | None:
        return self.state.get("status")

    @property
    def stale(self) -> bool:
        """``running``, but its process (on this host) is gone: killed, so safe to resume."""
        state = self.state
        return (state.get("status") == "running" and process_alive(
            state.get("pid"), state.get("host"), state.get("started")) is False)

    def describe(self) -> str:
        """``status 'failed'``, or for a stale run what makes it stale (for messages)."""
        state = self.state
        text = f"status {state.get('status')!r}"
        if self.stale:
            text += (f", stale: its process {state['pid']} on {state['host']} is gone, so it "
                     f"can be resumed")
        return text

    def refuse_if_live(self) -> None:
        """Raise :class:`RunError` when the process writing this run is still alive (resuming
        or replacing it would write under it)."""
        state = self.state
        pid, host = state.get("pid"), state.get("host")
        if state.get("status") == "running" and process_alive(pid, host, state.get("started")):
            raise RunError(f"{self.path} already holds a run that is still running (pid {pid} "
                           f"on {host}); wait for it to end or stop it (kill {pid}) first")

    def update_state(self, **entries: Any) -> dict[str, Any]:
        """Merge ``entries`` into ``run_state.json`` (atomically) and return the new state."""
        state = {**self.state, **entries, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if state.get("status") not in STATUSES:
            raise ValueError(f"run status must be one of {STATUSES}, got {state.get('status')!r}")
        write_json(self.state_path, state)
        return state

    def set_status(self, status: str, **entries: Any) -> dict[str, Any]:
        return self.update_state(status=status, **entries)

    @contextmanager
    def status_on_error(self) -> Iterator[RunDir]:
        """Record ``interrupted`` (Ctrl-C, SIGTERM) or ``failed`` with the error if the block
        raises; an ``--overwrite`` run is deleted instead (the run it was to replace stays)."""
        try:
            yield self
        except KeyboardInterrupt:
            self._ended("interrupted")
            raise
        except Exception as err:
            self._ended("failed", error=f"{type(err).__name__}: {err}")
            raise

    def _ended(self, status: str, **entries: Any) -> None:
        if staged_target(self.path) is not None:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            self.set_status(status, **entries)

    def mark_complete(self, **entries: Any) -> dict[str, Any]:
        """Declare every output final: call last, after all other files are written.

        Writes the manifest, then the status; an ``--overwrite`` run then takes the place of
        the run it replaces (and :attr:`path` follows it).
        """
        write_json(self.manifest_path, build_manifest(self.path, UNTRACKED, STATE_FILE))
        state = self.set_status("complete", **entries)
        target = staged_target(self.path)
        if target is not None:
            replace_directory(self.path, target)
            self.path = target
        return state

    def require_complete(self) -> RunDir:
        """Raise a clear :class:`RunError` unless the run finished."""
        status = self.status
        if status != "complete":
            raise RunError(
                f"run {self.path} is not complete ({self.describe()}); resume it with "
                f"`exitgym train --resume --out {self.path}` or start a new one"
            )
        return self

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``name`` (atomically); a complete run's manifest records its new content."""
        path = write_json(self.path / name, obj)
        self.add_to_manifest(name)
        return path

    def read_json(self, name: str) -> Any:
        return read_json(self.path / name)

    def write_text(self, name: str, text: str) -> Path:
        """Write ``name`` (atomically); a complete run's manifest records its new content."""
        path = atomic_write_text(self.path / name, text)
        self.add_to_manifest(name)
        return path

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_FILE

    def add_to_manifest(self, *names: str) -> None:
        """Record files a command adds to a complete run (``evaluate``, operating points), so
        ``replay --verify`` tells them from files edited by hand; no-op before completion."""
        if self.manifest_path.is_file():
            manifest = read_json(self.manifest_path)
            manifest["files"].update({n: sha256_file(self.path / n) for n in names})
            write_json(self.manifest_path, manifest)

    @property
    def config(self) -> dict[str, Any]:
        return self.read_json(CONFIG_FILE)

    def record_checksums(self, *names: str) -> dict[str, str]:
        """Store the sha256 of the named files (relative to the run) in ``run_state.json``.

        Why: weights are loaded back by ``evaluate``, ``replay``, ``infer`` and ``--resume``; a
        file edited on disk after it was written must be refused, not silently used.
        """
        sums = {**self.state.get("sha256", {})}
        sums.update({name: sha256_file(self.path / name) for name in names})
        self.update_state(sha256=sums)
        return sums

    def verify_checksums(self, *names: str) -> None:
        """Raise :class:`RunError` naming the first file whose content is not what was written.

        With no names, every recorded file whose name matches is checked; a recorded file that
        is missing is an error too.
        """
        recorded = self.state.get("sha256", {})
        for name in names or tuple(recorded):
            if name not in recorded:
                raise RunError(f"{self.path / name} has no recorded checksum in {STATE_FILE}")
            verify_file(self.path / name, recorded[name])


def write_config(run: RunDir, config: dict[str, Any], *, caches: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None) -> Path:
    """``config.json``: the resolved config plus everything the numbers depend on (the caches'
    fingerprints and the device each was prepared on, and where the data came from: a local file's
    sha256, to say how to restore it)."""
    from exitgym.data.sources import data_source

    tasks = {getattr(c, "meta", {}).get("task") for c in (caches or {}).values()} - {None}
    payload = {
        "config": config,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "fingerprints": {k: cache_fingerprints(c) for k, c in (caches or {}).items()},
        # where each cache was computed (None: built before devices were recorded)
        "prepared_on": {k: getattr(c, "meta", {}).get("prepared_on")
                        for k, c in (caches or {}).items()},
        **({"data_source": data_source(str(next(iter(tasks))))} if len(tasks) == 1 else {}),
        "plugins": plugin_record(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **(extra or {}),
    }
    return run.write_json(CONFIG_FILE, payload)


def verify_file(path: Path, expected: str) -> None:
    """Raise :class:`RunError` unless ``path`` exists with sha256 ``expected``."""
    if not path.is_file():
        raise RunError(f"{path} is missing (it was written by the run and recorded)")
    got = sha256_file(path)
    if got != expected:
        raise RunError(
            f"{path} was modified after the run wrote it (sha256 checksum mismatch: recorded "
            f"{expected[:12]}…, found {got[:12]}…); refusing to load it. Re-run or restore it."
        )
