"""``report.md`` and ``training.png`` of a single training run.

The comparison report of many methods lives in :mod:`exitgym.reports.comparison`; this one
describes one run: its configuration, the training curves (return, sampled accuracy and cost per
update) and the evaluation on the held-out split with its exit-layer histogram.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exitgym.utils.atomic import atomic_write, atomic_write_text
from exitgym.utils.configs import flatten

CURVES = ("return", "accuracy", "cost", "exit_layer")
"""Metrics drawn in ``training.png`` (those the trainer logged)."""


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` points (fewer at the start; NaNs skipped).

    Why: per-update REINFORCE metrics come from 64 sampled episodes and are noisy; the trend is
    what a reader looks for, so the plot draws this over the faint raw curve.
    """
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - window + 1):i + 1] if v == v]
        out.append(sum(part) / len(part) if part else float("nan"))
    return out


def plot_training(rows: list[dict[str, float]], path: Path, title: str) -> Path | None:
    """One panel per logged curve against the update number, raw (faint) and smoothed over
    about a twentieth of the run; None when nothing was logged."""
    curves = [c for c in CURVES if rows and c in rows[0]]
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r.get("update", i + 1) for i, r in enumerate(rows)]
    window = max(1, len(rows) // 20)
    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3), dpi=110)
    for ax, name in zip(list(getattr(axes, "flat", [axes])), curves, strict=False):
        values = [r.get(name, float("nan")) for r in rows]
        ax.plot(steps, values, lw=0.8, alpha=0.3, color="C0")
        ax.plot(steps, smooth(values, window), lw=1.5, color="C0",
                label=f"mean of {window}" if window > 1 else None)
        ax.set_title(name)
        ax.set_xlabel("update")
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.2, top=0.8, wspace=0.35)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def write_run_report(run_dir: Path, cfg: Any, result: Any, rows: list[dict[str, float]],
                     plot: bool = True, settings: dict[str, Any] | None = None,
                     shown: Path | None = None) -> Path:
    """Write ``report.md`` (+ ``training.png`` unless ``plot`` is False) into the run directory.

    ``settings``: the configuration table (default: every field of ``cfg``); a run passes only
    the settings its agent used, with the values it used. ``shown``: the directory the report
    names (an ``--overwrite`` run is written beside the one it replaces; default ``run_dir``).
    """
    title = (f"{cfg.agent} on {cfg.env} ({cfg.data.task}, {cfg.data.backbone}), reward "
             f"{cfg.reward}, α={cfg.alpha}, seed {cfg.seed}")
    plot = plot_training(rows, run_dir / "training.png", title) if plot else None
    hist = result.exit_histogram
    lines = [f"# {title}", "", "## Evaluation", "",
             f"Split **{cfg.eval_split}**, {len(result.records)} episodes (every one recorded in "
             f"`trajectories/eval-{cfg.eval_split}.parquet`; `exitgym replay "
             f"{shown or run_dir} --verify` re-executes them).", "",
             "| accuracy | cost (FLOPs fraction) | speed-up | mean exit layer | mean return |",
             "|---:|---:|---:|---:|---:|",
             f"| {result.accuracy:.4f} | {result.cost:.4f} | {result.speedup:.2f}x | "
             f"{result.mean_exit_layer:.2f} | {result.mean_return:.4f} |", "",
             "| exit layer | " + " | ".join(str(i + 1) for i in range(len(hist))) + " |",
             "|---|" + "---:|" * len(hist),
             "| episodes | " + " | ".join(str(h) for h in hist) + " |", ""]
    if plot is not None:
        lines += ["## Training", "", "![training curves](training.png)", ""]
    lines += ["## Configuration", "", "| option | value |", "|---|---|"]
    settings = flatten(cfg) if settings is None else settings
    lines += [f"| {k} | {v} |" for k, v in settings.items()]
    return atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
