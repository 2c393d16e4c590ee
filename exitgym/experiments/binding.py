"""Runs bound to their data: a recorded number is only ever recomputed on what produced it.

A run's ``config.json`` records, per split it read, the fingerprints of the data rows, the
backbone weights and the exit heads (``fingerprints``), and where the data came from
(``data_source``: a local file's sha256); live skip runs record the prepared cache their env is
built from. ``evaluate``, ``replay --verify``, ``exitgym.infer`` and
``--resume`` check them before they compute anything: the data first (cheap: the task is loaded
and hashed, so a changed file is refused before heads are re-prepared for it), then the prepared
cache or models they load. A mismatch is a :class:`~exitgym.experiments.runs.RunError` that says
what changed and how to get the run's data back; nothing of the run is overwritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exitgym.experiments.env_spec import TOKEN_ENVS, EnvSpec
from exitgym.experiments.runs import CONFIG_FILE, RunError, read_json

BOUND_FINGERPRINTS = {"data_fingerprint": "the data rows of split {split!r}",
                      "backbone_fingerprint": "the backbone weights",
                      "heads_fingerprint": "the exit heads"}
"""Fingerprint key of ``config.json`` -> what it names, for the refusal message."""


def recorded(root: str | Path) -> dict[str, Any]:
    """``config.json`` of a run or comparison directory (empty when there is none)."""
    path = Path(root) / CONFIG_FILE
    return read_json(path) if path.is_file() else {}


def check_data(root: str | Path, spec: EnvSpec) -> None:
    """Refuse when a split's rows differ from those the run recorded (before preparing any).

    Raises:
        RunError: the data of a recorded split changed; the message says how to restore it.
    """
    config = recorded(root)
    splits = {s: fp["data_fingerprint"] for s, fp in config.get("fingerprints", {}).items()
              if fp.get("data_fingerprint")}
    if not splits or not spec.reads_prepared:
        return
    from exitgym.data.config import task_options
    from exitgym.data.prepare import data_fingerprint
    from exitgym.data.tasks import load_task

    task = load_task(spec.task, **task_options(spec.prepare))
    for split, want in sorted(splits.items()):
        got = data_fingerprint(task, split)
        if got != want:
            raise RunError(_refusal(root, config, "data_fingerprint", split, want, got))


def check_cache(root: str | Path, split: str, cache: Any) -> Any:
    """``cache`` when its data, backbone and heads are the ones the run recorded.

    Backbone and heads are compared with any recorded split (they are shared); the data rows
    only with the same split.

    Raises:
        RunError: naming what changed.
    """
    meta = dict(getattr(cache, "meta", {}) or {})
    check_fingerprints(root, split, {k: meta.get(k) for k in BOUND_FINGERPRINTS})
    return cache


def check_fingerprints(root: str | Path, split: str | None, now: dict[str, Any]) -> None:
    """Compare fingerprints ``now`` with the run's record (absent entries are not compared)."""
    config = recorded(root)
    prints = config.get("fingerprints", {})
    for key, got in now.items():
        if key == "data_fingerprint":
            sources = [prints[split]] if split in prints else []
        else:
            sources = list(prints.values())
        for entry in sources:
            want = entry.get(key)
            if want and got and want != got:
                raise RunError(_refusal(root, config, key, entry.get("split") or split, want, got))


def prepared_cache(root: str | Path, spec: EnvSpec, progress: bool = True) -> Any:
    """``spec.prepared_cache()``, refused before anything is rebuilt from a backbone or heads
    other than the ones the run in ``root`` recorded (a changed backbone used to rebuild the
    caches first).

    Raises:
        RunError: the backbone or heads changed; nothing was prepared from them.
    """
    from exitgym.data.prepare import PreparedMismatch

    prints = recorded(root).get("fingerprints", {}).values()
    require = {key: entry[key] for entry in prints for key in ("backbone_fingerprint",
                                                              "heads_fingerprint")
               if entry.get(key)}
    try:
        cache = spec.prepared_cache(progress=progress, require=require)
    except PreparedMismatch as err:
        raise RunError(_refusal(root, recorded(root), err.key, None, err.want, err.got)) from err
    return check_cache(root, spec.split, cache)


def bound_cache(root: str | Path, spec: EnvSpec) -> Any:
    """The cache of ``spec``, checked against the run in ``root`` (data first): the prepared
    one, with the spec's own heads file (relative to ``root``) applied after the check.

    Live skip envs are checked the same way (they are built from the prepared cache and its
    backbone and heads) but get None: they load their own world. TokenExit runs get None after
    their decoder and heads are checked (:func:`~exitgym.experiments.token_runs.bound_decoder`).
    """
    if spec.env_id in TOKEN_ENVS:
        from exitgym.experiments.token_runs import bound_decoder

        bound_decoder(root, spec)
        return None
    if not spec.reads_prepared:
        return None
    check_data(root, spec)
    cache = spec.own_heads(prepared_cache(root, spec), root)
    return cache if spec.uses_cache else None


def _refusal(root: str | Path, config: dict[str, Any], key: str, split: str | None, want: str,
             got: str) -> str:
    what = BOUND_FINGERPRINTS[key].format(split=split)
    source = config.get("data_source", {})
    if key != "data_fingerprint":
        restore = ("restore the backbone and the prepared heads the run used (or delete the "
                   "re-prepared ones from the exitgym cache so `exitgym prepare` rebuilds them)")
    elif source.get("sha256"):
        restore = (f"restore {source['path']} as it was when the run was trained (sha256 "
                   f"{source['sha256']}, {source['bytes']} bytes)")
    else:
        restore = f"restore the data the run was trained on ({source or 'see config.json'})"
    return (f"{root} was computed on other data: {what} changed since the run was recorded "
            f"({key} {want[:12]}… recorded, {got[:12]}… now). Its results cannot be recomputed "
            f"on this data and are left as they are; {restore}, or train a new run on the new "
            f"data.")
