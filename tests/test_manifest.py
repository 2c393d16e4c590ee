"""``replay --verify`` catches every edit: a manifest of the run's files, then every column.

Issue 23 (round two): one byte flipped in the middle of a demo's trajectory file changed one
character of a ``text`` cell and ``replay --verify`` passed. A run now writes ``manifest.json``
(sha256 of each file) when it completes, which ``replay --verify`` checks first, naming the file;
and the replay compares the columns no step produces (text, episode, seed) with their source.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exitgym.cli import main
from exitgym.experiments.compare import compare, train_jobs
from exitgym.experiments.env_spec import EnvSpec
from exitgym.experiments.manifests import ManifestMismatch, verify_manifest
from exitgym.experiments.replay import ReplayMismatch, verify
from exitgym.experiments.runs import RunDir
from exitgym.experiments.training import train
from exitgym.experiments.trajectories import load_trajectories
from tests.test_compare_resume import CONFIG, make_caches
from tests.test_overwrite import CACHES, CFG

EVAL = "trajectories/eval-test.parquet"


def factory(ts):
    return EnvSpec.from_json(ts.meta["env_spec"]).make(cache=CACHES["test"])


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    train(CFG, out, caches=CACHES, progress=False, plots=False)
    return out


def rewrite(path: Path, column: str, episode: int, value) -> None:
    """Set one cell of a trajectory file, keeping its schema and metadata."""
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    values[episode] = value
    idx = table.schema.get_field_index(column)
    field = table.schema.field(idx)
    pq.write_table(table.set_column(idx, field, pa.array(values, field.type)), path)


def test_a_byte_flipped_in_a_text_cell_is_named(run: Path, capsys) -> None:
    assert verify_manifest(run) == f"every file of {run} matches its manifest"
    verify([run / EVAL], factory)  # the untouched run passes
    data = bytearray((run / EVAL).read_bytes())
    at = data.index(b"easy sample")  # inside the text column's values
    data[at + 1] ^= 0x01  # "easy" -> "e`sy": still a valid file, one character changed
    (run / EVAL).write_bytes(bytes(data))
    assert any(t.startswith("e`sy") for t in load_trajectories(run / EVAL).texts)

    with pytest.raises(ManifestMismatch) as err:
        verify_manifest(run)
    assert list(err.value.problems) == [EVAL]
    assert f"{run / EVAL} differs from what the run wrote (sha256 recorded" in str(err.value)
    with pytest.raises(ManifestMismatch):
        verify_manifest(run / EVAL)  # one file given: its own entry is checked
    assert main(["replay", str(run), "--verify"]) == 1
    assert f"FAILED: 1 file(s) differ from what the run wrote (manifest.json):\n  {run / EVAL}" \
        in capsys.readouterr().err
    # and without the manifest, the replay itself now sees the changed text
    with pytest.raises(ReplayMismatch) as err:
        verify([run / EVAL], factory)
    assert err.value.field == "text" and err.value.recorded.startswith("e`sy")


@pytest.mark.parametrize("column, value, field", [
    ("text", "a review nobody wrote", "text"),
    ("episode", 99, "episode"),
    ("seed", 12345, "seed"),
])
def test_a_consistent_edit_fails_the_column_comparison(run: Path, column: str, value,
                                                       field: str) -> None:
    """The file rewritten and its manifest entry re-hashed: only the replay can tell."""
    original = load_trajectories(run / EVAL)
    rewrite(run / EVAL, column, 5, value)
    RunDir.open(run).add_to_manifest(EVAL)
    verify_manifest(run)
    with pytest.raises(ReplayMismatch) as err:
        verify([run / EVAL], factory)
    assert (err.value.field, err.value.episode, err.value.recorded) == (field, 5, value)
    want = {"text": original.texts[5], "episode": 5, "seed": original.meta["seed"]}[field]
    assert err.value.replayed == want


def test_missing_and_extra_files_are_named_and_recorded_writes_are_not(run: Path) -> None:
    RunDir.open(run).write_json("operating_points.json", {})  # a command adds a file: recorded
    verify_manifest(run)
    (run / "report.md").unlink()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ManifestMismatch) as err:
        verify_manifest(run)
    assert err.value.problems == {
        "notes.txt": f"{run / 'notes.txt'} is extra (the run did not write it)",
        "report.md": f"{run / 'report.md'} is missing (the run wrote it)"}


def test_the_training_runs_of_a_comparison_are_checked_too(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    compare(CONFIG, out, caches=make_caches(), progress=False)
    verify_manifest(out)
    first, second = (job.name for job in train_jobs(CONFIG)[:2])
    (out / "runs" / first / "policy.json").write_text("{}")
    shutil.rmtree(out / "runs" / second)
    with pytest.raises(ManifestMismatch) as err:
        verify_manifest(out)
    assert sorted(err.value.problems) == [f"runs/{first}/policy.json", f"runs/{second}"]
    assert err.value.problems[f"runs/{second}"] == (f"{out / 'runs' / second} is missing (a run "
                                                    f"of this one)")
