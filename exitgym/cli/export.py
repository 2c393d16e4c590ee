"""``exitgym export``: a run's recorded episodes in another dataset format (Minari)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from exitgym.cli.common import add_command, user_errors
from exitgym.utils.configs import option


@dataclass(frozen=True)
class ExportArgs:
    """Export a run's recorded episodes as Farama Minari datasets.

    One dataset per trajectory file (Minari holds one environment spec per dataset), named
    exitgym-<run>/<file>-v0, under $MINARI_DATASETS_PATH (default ~/.minari/datasets). Every
    episode is re-executed in its environment to collect the observations, and refused if its
    rewards differ from the recorded ones. Needs pip install 'exitgym[minari]'.
    """

    run: str
    """Run or compare directory, or one .parquet trajectory file."""
    format: str = option("minari", choices=("minari",))
    """Dataset format."""
    select: str | None = None
    """Only trajectory files whose path contains this text."""
    overwrite: bool = False
    """Replace datasets of the same ids (after the new episodes replayed)."""
    author: str | None = None
    """Minari metadata: the dataset's author."""
    author_email: str | None = None
    """Minari metadata: the author's e-mail or other contact."""
    code_permalink: str | None = None
    """Minari metadata: a link to the code version that made the run."""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return add_command(sub, "export", run, ExportArgs)


def run(args: ExportArgs) -> int:
    with user_errors():
        from exitgym.experiments.minari_export import export_minari

        provenance = {k: v for k, v in (("author", args.author),
                                        ("author_email", args.author_email),
                                        ("code_permalink", args.code_permalink)) if v}
        ids = export_minari(args.run, select=args.select, overwrite=args.overwrite,
                            **provenance)
    for dataset_id in ids:
        print(f"wrote Minari dataset {dataset_id}")
    print("load with: minari.load_dataset(ID); dataset.recover_environment() rebuilds the env")
    return 0
