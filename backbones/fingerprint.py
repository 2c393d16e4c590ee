"""sha256 of a model: what a cache, a prepared head or a converted checkpoint was built from."""

from __future__ import annotations

import hashlib
import json

from torch import nn


def model_fingerprint(model: nn.Module, tag: str) -> str:
    """sha256 over the config (minus fields that vary with no change of the model), a tag and
    every weight, so a changed config, a different use (``tag``) or changed weights rebuild."""
    digest = hashlib.sha256()
    config = model.config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "architectures"):
        config.pop(volatile, None)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(tag.encode())
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
