"""Trajectories in Minari's format: a run exports as datasets that ``minari.load_dataset`` reads,
whose environment ``recover_environment`` rebuilds from JSON kwargs and whose episodes replay in
it step for step; ``minari.DataCollector`` records an exitgym env directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from tests.tiny_project import make_tiny_project, train_config

minari = pytest.importorskip("minari", reason="exitgym[minari] (in the dev extra) not installed")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def minari_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from exitgym.experiments.training import train

    root = tmp_path_factory.mktemp("minari-project")
    names = make_tiny_project(root / "project")
    train(train_config(names, steps=2), root / "run", progress=False)
    return root / "run"


def _replay(env: Any, episode: Any) -> None:
    """Step ``env`` with the episode's actions: every observation and reward as stored."""
    sample_id = int(episode.infos["sample_id"][0])
    obs, _ = env.reset(options={"sample_id": sample_id})
    np.testing.assert_allclose(obs, episode.observations[0], rtol=1e-6)
    for k, action in enumerate(episode.actions):
        obs, reward, term, trunc, _ = env.step(int(action))
        np.testing.assert_allclose(obs, episode.observations[k + 1], rtol=1e-6)
        assert reward == pytest.approx(float(episode.rewards[k]), rel=1e-6, abs=1e-9)
        assert bool(term) == bool(episode.terminations[k])
    assert term


def test_a_run_exports_loads_and_replays_in_the_recovered_env(run: Path) -> None:
    from exitgym.experiments.minari_export import export_minari
    from exitgym.experiments.trajectories import load_trajectories, trajectory_files

    ids = export_minari(run)
    files = trajectory_files(run)
    assert len(ids) == len(files) >= 1 and all(i.startswith("exitgym-run/") for i in ids)
    dataset = minari.load_dataset(ids[0])
    ts = load_trajectories(files[0])
    assert dataset.total_episodes == len(ts.records)
    assert dataset.total_steps == sum(len(r.actions) for r in ts.records)
    # the env spec holds JSON kwargs only, and gym.make rebuilds the environment from it
    spec = dataset.spec.env_spec
    assert spec.id == "exitgym/EarlyExit-v0" and "cache" not in spec.kwargs
    assert spec.kwargs["prepare_options"]["max_length"] == 16
    env = dataset.recover_environment()
    for episode, rec in zip(dataset.iterate_episodes(), ts.records, strict=True):
        assert list(episode.actions) == list(rec.actions)
        np.testing.assert_allclose(episode.rewards, rec.rewards, rtol=1e-6)
        _replay(env, episode)
    # reference scores: random policy below the hindsight-best exit
    ref_min = dataset.storage.metadata["ref_min_score"]
    ref_max = dataset.storage.metadata["ref_max_score"]
    returns = [float(np.sum(e.rewards)) for e in dataset.iterate_episodes()]
    assert ref_min < ref_max and np.mean(returns) <= ref_max + 1e-9
    np.testing.assert_allclose(minari.get_normalized_score(dataset, np.array([ref_min, ref_max])),
                               [0.0, 1.0])


def test_export_refuses_to_replace_a_dataset_unless_asked(run: Path) -> None:
    from exitgym.experiments.minari_export import export_minari

    ids = export_minari(run)
    with pytest.raises(ValueError, match="exist already; pass --overwrite"):
        export_minari(run)
    assert export_minari(run, overwrite=True) == ids
    assert minari.load_dataset(ids[0]).total_episodes > 0


def test_export_refuses_episodes_that_no_longer_replay(run: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from exitgym.experiments.minari_export import export_file
    from exitgym.experiments.replay import ReplayMismatch
    from exitgym.experiments.trajectories import trajectory_files

    src = trajectory_files(run)[0]
    table = pq.read_table(src)
    rewards = table.column("rewards").to_pylist()
    rewards[0] = [r + 1.0 for r in rewards[0]]
    i = table.schema.get_field_index("rewards")
    tampered = run / "trajectories" / "tampered.parquet"
    pq.write_table(table.set_column(i, "rewards", [rewards]).replace_schema_metadata(
        table.schema.metadata), tampered)
    try:
        with pytest.raises(ReplayMismatch, match="rewards"):
            export_file(tampered, "exitgym-test/tampered-v0")
        assert "exitgym-test/tampered-v0" not in minari.list_local_datasets()
    finally:
        tampered.unlink()


def test_data_collector_records_an_exitgym_env(run: Path) -> None:
    from exitgym.experiments.env_spec import EnvSpec
    from exitgym.experiments.minari_export import gym_spec
    from exitgym.experiments.trajectories import load_trajectories, trajectory_files

    spec = EnvSpec.from_json(load_trajectories(trajectory_files(run)[0]).meta["env_spec"])
    env = minari.DataCollector(gym.make(gym_spec(spec)), data_format="arrow")
    for episode in range(4):
        obs, info = env.reset(seed=episode)
        done = False
        while not done:
            obs, reward, term, trunc, info = env.step(int(obs[1] > 0.6))
            done = term or trunc
    dataset = env.create_dataset("exitgym-test/collected-v0", algorithm_name="maxprob-0.6")
    assert dataset.total_episodes == 4
    recovered = minari.load_dataset("exitgym-test/collected-v0").recover_environment()
    assert recovered.spec.kwargs == gym_spec(spec).kwargs
    for seed, episode in enumerate(dataset.iterate_episodes()):
        obs, _ = recovered.reset(seed=seed)  # the seed picks the same input again
        np.testing.assert_allclose(obs, episode.observations[0])
        assert list(episode.actions) == [int(o[1] > 0.6) for o in episode.observations[:-1]]


def test_only_the_exit_env_exports_with_a_clear_reason() -> None:
    from exitgym.experiments.env_spec import EnvSpec
    from exitgym.experiments.minari_export import gym_spec

    with pytest.raises(ValueError, match="Minari export supports exitgym/EarlyExit-v0"):
        gym_spec(EnvSpec(env_id="exitgym/SkipBlock-v0"))


def test_export_command(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from exitgym.cli import main

    assert main(["export", str(run), "--format", "minari", "--author", "me"]) == 0
    out = capsys.readouterr().out
    dataset_id = out.split("wrote Minari dataset ")[1].split()[0]
    assert minari.load_dataset(dataset_id).storage.metadata["author"] == {"me"}
    assert main(["export", str(run)]) == 2  # exists already: refused, nothing replaced
    assert "pass --overwrite" in capsys.readouterr().err
