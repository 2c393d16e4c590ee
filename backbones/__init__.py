"""Transformer backbones stepped one layer at a time, the FLOPs model, exit heads and the cache.

Import submodules directly (``exitgym.backbones.base``); this package ``__init__`` stays light and
re-exports the entry points lazily so that ``import exitgym.backbones`` does not load torch.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "load_backbone": "exitgym.backbones.registry",
    "Backbone": "exitgym.backbones.base",
    "State": "exitgym.backbones.base",
    "FlopsModel": "exitgym.backbones.flops",
    "LayerCache": "exitgym.backbones.layer_cache",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'exitgym.backbones' has no attribute {name!r}")


__all__ = sorted(_LAZY)
