"""Synthetic caches whose right answers are known, for tests and examples (numpy only)."""

from __future__ import annotations

import numpy as np

from exitgym.backbones.layer_cache import LayerCache


def synthetic_cache(
    num_samples: int = 64,
    num_layers: int = 6,
    num_labels: int = 2,
    hidden_size: int = 8,
    easy_fraction: float = 0.5,
    seed: int = 0,
) -> LayerCache:
    """A cache where easy inputs are correct from layer 1 and hard ones only at the last layer.

    Easy samples (the first ``round(easy_fraction * N)``) get confident correct logits at every
    layer; hard samples get confident wrong logits at layers 1..L-1 and correct at L. The pooled
    state carries the difficulty in its first coordinate so a policy reading ``hidden`` can tell
    them apart; the features view can tell them apart through max probability.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_labels, size=num_samples).astype(np.int64)
    n_easy = int(round(easy_fraction * num_samples))
    easy = np.zeros(num_samples, dtype=bool)
    easy[:n_easy] = True
    logits = rng.normal(0.0, 0.1, size=(num_samples, num_layers, num_labels)).astype(np.float32)
    wrong = (labels + 1) % num_labels
    for i in range(num_samples):
        if easy[i]:
            logits[i, :, labels[i]] += 4.0
        else:
            logits[i, :-1, wrong[i]] += 0.3  # wrong but unsure
            logits[i, -1, labels[i]] += 4.0
    pooled = rng.normal(0.0, 1.0, size=(num_samples, num_layers, hidden_size)).astype(np.float32)
    pooled[:, :, 0] = np.where(easy, 2.0, -2.0)[:, None]
    lengths = rng.integers(5, 30, size=num_samples).astype(np.int64)
    per_token = 1000.0
    flops_layer = np.repeat((lengths * per_token)[:, None], num_layers, axis=1).astype(np.float64)
    return LayerCache(
        pooled=pooled,
        logits=logits,
        labels=labels,
        lengths=lengths,
        flops_embed=(lengths * 10.0).astype(np.float64),
        flops_layer=flops_layer,
        flops_head=2.0 * hidden_size * num_labels,
        label_names=tuple(f"label{i}" for i in range(num_labels)),
        texts=tuple(("easy" if e else "hard") + f" sample {i}" for i, e in enumerate(easy)),
        meta={
            "task": "synthetic",
            "split": "train",
            "seed": seed,
            "fingerprint": f"synthetic-{seed}",
        },
    )
