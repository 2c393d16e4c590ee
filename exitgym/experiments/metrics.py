"""Training metrics of a run: ``metrics.csv`` (rewritten atomically) and TensorBoard events."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exitgym.experiments.runs import METRICS_FILE
from exitgym.utils.atomic import atomic_write_text

INTEGER_COLUMNS = ("update",)
"""Columns of ``metrics.csv`` that count things, written as integers (``3``, not ``3.0``)."""


@dataclass
class MetricsLog:
    """Training metrics as CSV (rewritten atomically) and TensorBoard events.

    Rows are kept in memory (a few thousand at most) so the CSV can be rewritten whole on each
    :meth:`flush`; a resumed run reloads them (dropping rows past the checkpoint) so the final CSV
    equals an uninterrupted run's.
    """

    path: Path
    """The run directory."""
    tensorboard: bool = True
    """Also write TensorBoard events under ``tb/``."""
    rows: list[dict[str, float]] = field(default_factory=list)
    """Logged rows, in order."""

    def __post_init__(self) -> None:
        self._writer: Any = None
        self._purge_step: int | None = None

    @property
    def csv_path(self) -> Path:
        return self.path / METRICS_FILE

    def load(self, up_to_step: int | None = None, key: str = "update") -> None:
        """Reload rows from ``metrics.csv`` (only those with ``key <= up_to_step``)."""
        if not self.csv_path.is_file():
            self.rows = []
            return
        with self.csv_path.open(newline="") as fh:
            rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(fh)]
        if up_to_step is not None:
            rows = [r for r in rows if r.get(key, 0.0) <= up_to_step]
            # TensorBoard hides events logged after the checkpoint by the interrupted process, so
            # a resumed run shows each step once.
            self._purge_step = int(up_to_step) + 1
        self.rows = rows

    def log(self, row: dict[str, float], step: int | None = None) -> None:
        """Append a row; scalars also go to TensorBoard under ``train/<name>``."""
        row = {k: float(v) for k, v in row.items()}
        self.rows.append(row)
        if self.tensorboard:
            writer = self._tb()
            s = int(step if step is not None else row.get("update", len(self.rows)))
            for key, value in row.items():
                if key != "update":
                    writer.add_scalar(f"train/{key}", value, s)

    def flush(self) -> None:
        """Rewrite ``metrics.csv`` atomically and flush TensorBoard."""
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows([{k: int(v) if k in INTEGER_COLUMNS and float(v).is_integer() else v
                           for k, v in row.items()} for row in self.rows])
        atomic_write_text(self.csv_path, buf.getvalue())
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _tb(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            _after_older_event_files(self.path / "tb")
            self._writer = SummaryWriter(str(self.path / "tb"), purge_step=self._purge_step)
        return self._writer


def _after_older_event_files(tb: Path) -> None:
    """Wait (under a second) until the clock's second is past every event file's in ``tb``.

    Why: TensorBoard reads a directory's event files in name order, and a name is
    ``events.out.tfevents.<second>.<host>.<pid>.<counter>``; a resumed writer made in the same
    second as the interrupted one (in one process, as tests do) may sort before it (counter
    ``10`` < ``9``), and the purge of the interrupted steps then applies to the wrong file.
    """
    seconds = [int(p.name.split(".")[3]) for p in tb.glob("events.out.tfevents.*")
               if p.name.split(".")[3].isdigit()]
    if seconds and time.time() < max(seconds) + 1:
        time.sleep(max(seconds) + 1 - time.time())
