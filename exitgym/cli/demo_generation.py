"""``exitgym demo --generation``: the generation comparison on the embedded decoder, end to end.

Token-level early exit on ``smollm2-135m`` (REINFORCE hardness / vanilla, trained on the policy
split, against CALM's rules, the classic rules, static truncation, random exit and the token
oracle) under the comparison protocol; see :mod:`exitgym.experiments.generation_compare`.
Budget: 10 minutes on a 2-core CPU, the first conversion of the embedded GGUF included.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def run_generation(args: Any) -> int:
    """Run the comparison with the demo's seeds into ``--out``; print the ranking."""
    from dataclasses import replace

    from exitgym.cli.common import user_errors
    from exitgym.cli.compare import print_ranking
    from exitgym.experiments.generation_compare import (
        GenerationCompareConfig,
        generation_compare,
    )
    from exitgym.reports.comparison import report_markdown
    from exitgym.utils.atomic import atomic_write_text
    from exitgym.utils.staging import staged

    start = time.perf_counter()
    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-demo-generation")
    if (out / "summary.json").exists() and not args.overwrite:
        print(f"error: {out} already holds a comparison; pass --overwrite to replace it")
        return 2
    # --overwrite: written beside the old comparison, which it replaces only once complete
    with user_errors(), staged(out, (out / "summary.json").exists()) as into:
        config = replace(GenerationCompareConfig(), seeds=tuple(args.seeds),
                         heads=args.generation_heads)
        print(f"[1/2] {config.backbone} ({config.heads} heads): decoder passes over "
              f"{list(config.prompts)} policy/validation/test prompts x "
              f"{config.max_new_tokens} tokens, REINFORCE x "
              f"{len(config.rewards)} rewards x {len(config.targets)} targets x "
              f"{len(config.seeds)} seeds, rules, report")
        summary = generation_compare(config, into)
        total = time.perf_counter() - start
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in summary["timings"].items())
        section = (f"## Wall time\n\n{phases}; total {total:.1f} s on this machine (the first "
                   "run also converts the embedded GGUF once, ~21 s).")
        title = (f"exitgym demo --generation: {config.backbone}, token-level early exit, "
                 "REINFORCE (hardness / vanilla) vs exit rules")
        atomic_write_text(into / "report.md", report_markdown(summary, title, "pareto.png",
                                                           [section]))
    print("[2/2] done")
    print_ranking(summary)
    print(f"total wall time {total:.1f} s")
    print(f"report: {out / 'report.md'}  (plot: {out / 'pareto.png'})")
    return 0
