"""``--overwrite`` never leaves less than it found: the old run stays until the new one is whole.

Issue 23 (round two): ``train ... --task bad_nolabel.csv --label-column verdict --out X
--overwrite`` printed a good error and left X holding only a failed ``run_state.json``;
``compare --task bad_empty.csv --out Y --overwrite`` removed a whole comparison. The new run is
now written beside the old one and swapped in when complete; a failure, Ctrl-C or kill at any
point leaves the old run byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exitgym.cli import main
from exitgym.data.synthetic import synthetic_cache
from exitgym.experiments.compare import compare
from exitgym.experiments.configs import TrainConfig
from exitgym.experiments.manifests import verify_manifest
from exitgym.experiments.runs import RunDir, RunError
from exitgym.experiments.training import train
from tests.test_compare_resume import CONFIG, make_caches, snapshot
from tests.tiny_project import dead_pid

CACHES = {"train": synthetic_cache(120, hidden_size=8, seed=1),
          "test": synthetic_cache(60, hidden_size=8, seed=2)}
CFG = TrainConfig(steps=4, batch_size=12, num_envs=12, checkpoint_every=2, alpha=0.5,
                  reward="hardness", train_split="train")
"""A tiny run on the synthetic caches (its own train split: no prepared data is needed)."""
OTHER = TrainConfig(steps=4, batch_size=12, num_envs=12, checkpoint_every=2, alpha=0.9,
                    reward="vanilla", train_split="train")


def hidden_siblings(out: Path) -> list[str]:
    """Staging or set-aside copies of ``out`` left in its folder."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.fixture()
def old_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    train(CFG, out, caches=CACHES, progress=False, plots=False)
    return out


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_an_overwrite_that_fails_midway_leaves_the_old_run_byte_identical(old_run: Path,
                                                                         error: type) -> None:
    before = snapshot(old_run)

    def fail(update: int) -> None:
        if update == 3:  # after a checkpoint of the new run was written
            raise error("midway")

    with pytest.raises(error):
        train(OTHER, old_run, overwrite=True, caches=CACHES, progress=False, plots=False,
              after_update=fail)
    assert snapshot(old_run) == before
    assert hidden_siblings(old_run) == []  # the partial new run is gone too


def test_a_good_overwrite_replaces_the_run(old_run: Path) -> None:
    result = train(OTHER, old_run, overwrite=True, caches=CACHES, progress=False, plots=False)
    assert result.run.path == old_run
    run = RunDir.open(old_run)
    assert run.status == "complete" and run.config["config"]["alpha"] == 0.9
    assert hidden_siblings(old_run) == []
    assert verify_manifest(old_run) == f"every file of {old_run} matches its manifest"
    report = (old_run / "report.md").read_text()  # names where the run is, not where it was built
    assert f"`exitgym replay {old_run} --verify`" in report


def test_bad_input_with_overwrite_leaves_the_old_run_and_comparison(old_run: Path,
                                                                   tmp_path: Path,
                                                                   capsys) -> None:
    """The two commands of the issue, on a complete run and a complete comparison."""
    nolabel = tmp_path / "bad_nolabel.csv"
    nolabel.write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(40)))
    before = snapshot(old_run)
    assert main(["train", "--task", str(nolabel), "--label-column", "verdict", "--out",
                 str(old_run), "--overwrite"]) == 2
    assert "verdict" in capsys.readouterr().err
    assert snapshot(old_run) == before and hidden_siblings(old_run) == []

    cmp = tmp_path / "cmp"
    compare(CONFIG, cmp, caches=make_caches(), progress=False)
    before = snapshot(cmp)
    empty = tmp_path / "bad_empty.csv"
    empty.write_text("")
    assert main(["compare", "--task", str(empty), "--out", str(cmp), "--overwrite"]) == 2
    assert f"{empty}: cannot read it" in capsys.readouterr().err
    assert snapshot(cmp) == before and hidden_siblings(cmp) == []


def test_copies_left_by_a_killed_overwrite_are_cleared(old_run: Path) -> None:
    """SIGKILL cannot be caught: the next run on the same --out tidies up after it."""
    pid = dead_pid()
    stage = old_run.with_name(f".run.new-{pid}")
    stage.mkdir()
    (stage / "run_state.json").write_text(json.dumps({"status": "running", "pid": pid}))
    # a swap killed between its two renames: the old run set aside, nothing in its place
    old_run.rename(old_run.with_name(f".run.old-{pid}"))
    before = snapshot(old_run.with_name(f".run.old-{pid}"))
    with pytest.raises(RunError, match=r"already holds a run \(status 'complete'\)"):
        train(CFG, old_run, caches=CACHES, progress=False, plots=False)
    assert snapshot(old_run) == before  # put back
    assert hidden_siblings(old_run) == []


def test_an_interrupted_overwrite_says_the_old_run_is_kept(old_run: Path, monkeypatch,
                                                          capsys) -> None:
    """Not "resume with ...": the partial new run is gone, the old one is what --out holds."""
    from exitgym.experiments import training

    def interrupted(cfg, out, *, overwrite, **kwargs):
        run = RunDir.create(out, overwrite=overwrite)
        with run.status_on_error():
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    before = snapshot(old_run)
    assert main(["train", "--out", str(old_run), "--overwrite"]) == 130
    assert capsys.readouterr().err.endswith(
        f"interrupted: {old_run} still holds the run it was to replace (status 'complete'); "
        f"--overwrite replaces it only once the new one is complete\n")
    assert snapshot(old_run) == before and hidden_siblings(old_run) == []
