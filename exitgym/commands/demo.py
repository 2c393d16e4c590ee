"""``exitgym demo``: the main job on the embedded default.

Until the full pipeline lands this runs the smallest real end-to-end path: load the embedded
all-MiniLM-L6-v2, step one sentence through its layers and print per-layer FLOPs.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="run the main job on the embedded default")
    parser.add_argument("--out", default=None, help="output directory (default: runs/<time>-demo)")
    parser.add_argument(
        "--text", default="A gripping, beautifully acted film.", help="sentence to step"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from exitgym.backbones.registry import load_backbone

    bb = load_backbone("minilm-l6")
    with torch.inference_mode():
        state = bb.embed([args.text])
        n = int(state.lengths[0])
        total = bb.flops.embeddings(n)
        print(f"{bb!r}; {n} tokens")
        print(f"{'layer':>5} {'layer MFLOPs':>13} {'cumulative MFLOPs':>18} {'fraction':>9}")
        full = bb.flops.full(n)
        for i in range(bb.num_layers):
            state = bb.layer(i, state)
            total += bb.flops.layer(n)
            print(
                f"{i + 1:>5} {bb.flops.layer(n) / 1e6:>13.2f} {total / 1e6:>18.2f} "
                f"{total / full:>9.3f}"
            )
    return 0
