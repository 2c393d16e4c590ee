"""Replay recorded episodes: verify them against their environment, and analyse them.

``verify`` re-executes every recorded episode through a freshly made environment with the same
sample id, seed and actions, and raises :class:`ReplayMismatch` naming the file, episode, step and
field at the first difference (reward, early or late termination, exit layer, prediction, label,
correctness, memorized / oracle layer, cost, FLOPs), and checks the columns no step produces
against their source: the episode number, the evaluation seed and the input text (the replaying
env's cache, what the text was copied from). Floats are compared with a relative tolerance of
1e-6 (an exact cache replay matches bit for bit; live backbones differ by float noise). The CLI
checks the run's ``manifest.json`` first (:mod:`exitgym.experiments.manifests`).

``analyze`` turns a :class:`~exitgym.experiments.trajectories.TrajectorySet` into pandas
DataFrames: exit-layer histograms by label and by memorized layer, accuracy per exit layer, the
cost distribution, and the easiest and hardest inputs with their text (hardness = memorized
layer, ConsistentEE Eq. 7).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exitgym.experiments.trajectories import TrajectorySet, load_trajectories, trajectories_frame

EnvFactory = Callable[[TrajectorySet], Any]
"""Makes the (single, non-vector) env a trajectory set ran in."""
TERMINAL_FIELDS = ("exit_layer", "prediction", "label", "correct", "memorized_layer",
                   "oracle_layer", "cost", "flops")
"""Terminal ``info`` entries compared with the record (floats with tolerance)."""
FLOAT_FIELDS = ("cost", "flops")


class ReplayMismatch(AssertionError):
    """A replayed episode differs from its record."""

    def __init__(self, source: str, episode: int, sample_id: int, step: int, field: str,
                 recorded: Any, replayed: Any) -> None:
        self.source, self.episode, self.sample_id = source, episode, sample_id
        self.step, self.field, self.recorded, self.replayed = step, field, recorded, replayed
        super().__init__(
            f"replay mismatch in {source}: episode {episode} (sample_id {sample_id}), step {step}, "
            f"field {field!r}: recorded {recorded!r}, replayed {replayed!r}"
        )


@dataclass(frozen=True)
class VerifyReport:
    """What a successful verification covered."""

    files: tuple[str, ...]
    """Trajectory files verified."""
    episodes: int
    """Episodes re-executed."""
    steps: int
    """Environment steps re-executed."""
    policy_files: tuple[str, ...] = ()
    """Files whose run's saved policy was re-run and took every recorded action (``policy``)."""


def default_env_factory(ts: TrajectorySet) -> Any:
    """Re-make the env from the file: its prepared cache (by name) + the recorded kwargs."""
    from exitgym.experiments.env_spec import EnvSpec

    return EnvSpec.from_json(ts.meta["env_spec"]).make()


def replay_env(path: str | Path, ts: TrajectorySet) -> Any:
    """:func:`default_env_factory`, with the cache checked against the run or comparison that
    recorded ``path`` (``<dir>/trajectories/<file>``): changed data is refused, not replayed."""
    from exitgym.experiments.binding import bound_cache
    from exitgym.experiments.env_spec import EnvSpec
    from exitgym.experiments.plugins import load_run_plugins

    load_run_plugins(Path(path).parent.parent)
    spec = EnvSpec.from_json(ts.meta["env_spec"])
    cache = bound_cache(Path(path).parent.parent, spec)
    return spec.make(cache=cache)


def _same(a: Any, b: Any, rtol: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-9)
    return a == b


def source_texts(env: Any) -> Any:
    """The input texts of the cache ``env`` reads, or of the prepared cache a named skip env's
    world was built from (None when it has none: decoder and injected envs, or a cache without
    texts)."""
    env = getattr(env, "unwrapped", env)
    cache = getattr(env, "cache", None)
    if cache is None:
        return getattr(getattr(env, "world", None), "texts", None)
    return getattr(cache, "texts", None)


def verify_set(ts: TrajectorySet, env: Any, source: str = "<memory>", rtol: float = 1e-6) -> int:
    """Re-execute every episode of ``ts`` in ``env``; returns the number of steps run."""
    steps = 0
    texts = source_texts(env) if ts.texts is not None else None
    for i, rec in enumerate(ts.records):
        def fail(step: int, field: str, recorded: Any, replayed: Any, i: int = i,
                 sid: int = rec.sample_id) -> None:
            raise ReplayMismatch(source, i, sid, step, field, recorded, replayed)

        if ts.episodes is not None and ts.episodes[i] != i:
            fail(0, "episode", ts.episodes[i], i)
        if "seed" in ts.meta and rec.seed != ts.meta["seed"]:
            fail(0, "seed", rec.seed, ts.meta["seed"])
        _, info = env.reset(seed=rec.seed, options={"sample_id": rec.sample_id})
        if int(info.get("sample_id", rec.sample_id)) != rec.sample_id:
            fail(0, "sample_id", rec.sample_id, int(info["sample_id"]))
        if ts.texts is not None:  # the input the episode ran on, as the source data has it
            want = texts[rec.sample_id] if texts is not None else None
            if ts.texts[i] != want:
                fail(0, "text", ts.texts[i], want)
        if len(rec.rewards) != len(rec.actions):
            fail(len(rec.rewards), "rewards", f"{len(rec.actions)} entries",
                 f"{len(rec.rewards)} recorded")
        done = False
        for k, action in enumerate(rec.actions):
            if done:
                fail(k, "terminated", "episode still running (more recorded actions)",
                     "terminated at the previous step")
            act = np.asarray(action, dtype=np.int64) if isinstance(action, tuple) else action
            _, reward, term, trunc, info = env.step(act)
            steps += 1
            done = bool(term or trunc)
            if not _same(float(rec.rewards[k]), float(reward), rtol):
                fail(k, "reward", rec.rewards[k], float(reward))
        last = len(rec.actions) - 1
        if not done:
            fail(last, "terminated", True, False)
        recorded = {f: getattr(rec, f) for f in TERMINAL_FIELDS}
        for field_name, value in recorded.items():
            if field_name not in info or (isinstance(value, int) and value == -1):
                continue  # the env does not report it (e.g. memorized layer of a live env)
            got = info[field_name]
            got = float(got) if field_name in FLOAT_FIELDS else type(value)(got)
            if not _same(value, got, rtol):
                fail(last, field_name, value, got)
        if rec.decisions and "decisions" in info:
            got = tuple(int(d) for d in np.asarray(info["decisions"]).ravel())
            if tuple(int(d) for d in rec.decisions) != got:
                fail(last, "decisions", rec.decisions, got)
    return steps


def verify(paths: list[Path], env_factory: EnvFactory | None = None, rtol: float = 1e-6,
           progress: bool = False, policy: bool = False) -> VerifyReport:
    """Verify every trajectory file; raises :class:`ReplayMismatch` at the first difference.

    Args:
        paths: trajectory files.
        env_factory: makes each file's env; default: the recorded spec, its prepared cache
            checked against the run that recorded it (:mod:`exitgym.experiments.binding`).
        rtol: relative tolerance of float fields.
        progress: a bar over files.
        policy: also re-run the saved policy of each file's training run on the recorded
            episodes and check it takes the recorded actions (files of rules and fitted
            baselines have no saved policy and are checked by their recorded actions only).
    """
    if not paths:
        raise FileNotFoundError("no trajectory files to verify")
    episodes = steps = 0
    policy_files: list[str] = []
    iterator: Any = paths
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(paths, desc="replay --verify", unit="file")
    for path in iterator:
        ts = load_trajectories(path)
        env = env_factory(ts) if env_factory is not None else replay_env(path, ts)
        try:
            steps += verify_set(ts, env, str(path), rtol)
            acting = saved_policy(path, ts.meta) if policy else None
            if acting is not None:
                verify_actions(ts, acting, env, str(path))
                policy_files.append(str(path))
        finally:
            close = getattr(env, "close", None)
            if callable(close):
                close()
        episodes += len(ts.records)
    return VerifyReport(tuple(str(p) for p in paths), episodes, steps, tuple(policy_files))


def verify_actions(ts: TrajectorySet, policy: Any, env: Any, source: str = "<memory>") -> None:
    """Re-run ``policy`` greedily on the recorded episodes: it must take the recorded actions.

    Why: replaying recorded actions checks the environment, not the policy; this checks that
    the saved weights still produce what was recorded.
    """
    from exitgym.agents.rollout import evaluate

    ids = [r.sample_id for r in ts.records]
    result = evaluate(policy, env, sample_ids=ids, seed=ts.records[0].seed if ids else 0)
    for i, (rec, new) in enumerate(zip(ts.records, result.records, strict=True)):
        want, got = _actions(rec.actions), _actions(new.actions)
        if want != got:
            k = next((j for j, (a, b) in enumerate(zip(want, got, strict=False)) if a != b),
                     min(len(want), len(got)))
            raise ReplayMismatch(source, i, rec.sample_id, k, "action (policy re-run)",
                                 want[k] if k < len(want) else "episode over",
                                 got[k] if k < len(got) else "episode over")


def _actions(actions: Any) -> list[Any]:
    return [tuple(int(x) for x in a) if isinstance(a, (tuple, list, np.ndarray)) else int(a)
            for a in actions]


def saved_policy(path: str | Path, meta: dict[str, Any] | None = None) -> Any | None:
    """The trained policy that recorded trajectory file ``path``, read as it was recorded: the
    run's own policy (``exitgym evaluate``), at its operating point (``--budget`` / ``--tau``),
    or a comparison's calibrated reading of one of its training runs (``meta["run"]`` and
    ``meta["tau"]``). None for files of rules and baselines, which have no saved policy.
    """
    from exitgym.experiments.binding import recorded
    from exitgym.experiments.policies import load_policy
    from exitgym.experiments.runs import RunDir

    meta = meta or {}
    root = Path(path).parent.parent
    reading = meta.get("operating_point") or {}
    if recorded(root).get("command") != "train":
        run = meta.get("run")
        if not run or meta.get("tau") is None or recorded(root / run).get("command") != "train":
            return None
        root, reading = root / run, {"tau": meta["tau"], "alpha": meta.get("alpha")}
    policy = load_policy(RunDir.open(root).require_complete())
    if reading.get("tau") is None:
        return policy
    from exitgym.experiments.readings import reading as read_at

    return read_at(policy, reading["tau"], reading.get("alpha")).policy


# ---- analysis -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Analysis:
    """Analysis of one trajectory set as DataFrames (see the module docstring)."""

    episodes: Any
    """One row per episode (``trajectories_frame``)."""
    exit_by_label: Any
    """Counts: rows = label name, columns = exit layer 1..L."""
    exit_by_memorized: Any
    """Counts: rows = memorized layer, columns = exit layer 1..L."""
    accuracy_by_exit: Any
    """Per exit layer: episodes, accuracy, mean cost."""
    cost_distribution: Any
    """Cost histogram: bin edges, count, fraction."""
    easiest: Any
    """The k easiest inputs (lowest memorized layer, then cheapest) with text and outcome."""
    hardest: Any
    """The k hardest inputs (highest memorized layer, wrong first, then most expensive)."""


def analyze(ts: TrajectorySet, k: int = 5, cost_bins: int = 10) -> Analysis:
    """Compute the :class:`Analysis` of a trajectory set."""
    import pandas as pd

    df = trajectories_frame(ts)
    if df.empty:
        raise ValueError("no episodes to analyse")
    num_layers = ts.num_layers or int(df["exit_layer"].max())
    layers = list(range(1, num_layers + 1))
    names = ts.meta.get("label_names") or []
    df["label_name"] = [names[i] if 0 <= i < len(names) else str(i) for i in df["label"]]

    def hist(by: str) -> Any:
        table = pd.crosstab(df[by], df["exit_layer"]).reindex(columns=layers, fill_value=0)
        table.columns.name = "exit layer"
        return table

    acc = df.groupby("exit_layer").agg(episodes=("correct", "size"),
                                       accuracy=("correct", "mean"), cost=("cost", "mean"))
    acc = acc.reindex(layers)
    acc["episodes"] = acc["episodes"].fillna(0).astype(int)
    edges = np.linspace(0.0, max(1.0, float(np.nanmax(df["cost"]))), cost_bins + 1)
    counts, _ = np.histogram(df["cost"].dropna(), bins=edges)
    cost = pd.DataFrame({"cost_from": edges[:-1], "cost_to": edges[1:], "count": counts,
                         "fraction": counts / max(1, counts.sum())})
    hardness = np.where(df["memorized_layer"] > 0, df["memorized_layer"], df["exit_layer"])
    df["hardness"] = hardness
    cols = ["sample_id", "label_name", "prediction", "correct", "memorized_layer", "exit_layer",
            "cost", "text"]
    ranked = df.assign(wrong=~df["correct"])
    easiest = ranked.sort_values(["hardness", "wrong", "cost", "sample_id"]).head(k)[cols]
    hardest = ranked.sort_values(["hardness", "wrong", "cost", "sample_id"],
                                 ascending=[False, False, False, True]).head(k)[cols]
    return Analysis(df, hist("label_name"), hist("memorized_layer"), acc, cost,
                    easiest.reset_index(drop=True), hardest.reset_index(drop=True))


def format_analysis(analysis: Analysis, title: str = "", text_width: int = 70) -> str:
    """Plain-text rendering of an :class:`Analysis` for the terminal."""
    import pandas as pd

    def clip(frame: Any) -> Any:
        frame = frame.copy()
        if "text" in frame:
            frame["text"] = [
                (t if len(t) <= text_width else t[: text_width - 1] + "…") if isinstance(t, str)
                else "" for t in frame["text"]]
        return frame

    df = analysis.episodes
    with pd.option_context("display.width", 160, "display.max_columns", 20,
                           "display.float_format", "{:.3f}".format):
        parts = [
            title,
            f"{len(df)} episodes: accuracy {df['correct'].mean():.4f}, mean cost "
            f"{df['cost'].mean():.4f}, mean exit layer {df['exit_layer'].mean():.2f}",
            "\nexit-layer histogram by label:", analysis.exit_by_label.to_string(),
            "\nexit-layer histogram by memorized layer:", analysis.exit_by_memorized.to_string(),
            "\naccuracy per exit layer:", analysis.accuracy_by_exit.to_string(),
            "\ncost distribution:", analysis.cost_distribution.to_string(index=False),
            "\neasiest inputs:", clip(analysis.easiest).to_string(index=False),
            "\nhardest inputs:", clip(analysis.hardest).to_string(index=False),
        ]
    return "\n".join(p for p in parts if p)


def analyze_file(path: str | Path, k: int = 5) -> Analysis:
    """:func:`analyze` of one trajectory file."""
    return analyze(load_trajectories(path), k=k)
