"""exitgym: the layers of a pretrained transformer as the steps of a Gymnasium episode.

Importing this package registers the environments (``exitgym/EarlyExit-v0``,
``exitgym/SkipBlock-v0``, ``exitgym/SwitchableDecision-v0``) with string entry points, so it stays
light: it never imports torch. Heavy modules load when an environment is made.
"""

from __future__ import annotations

from exitgym.registration import register_envs

__version__ = "0.1.0"

register_envs()

__all__ = ["__version__", "infer"]


def __getattr__(name: str) -> object:
    """Lazy ``exitgym.infer`` (a callable module): loads torch only when inference is used."""
    if name == "infer":
        import importlib

        return importlib.import_module("exitgym.infer")
    raise AttributeError(f"module 'exitgym' has no attribute {name!r}")
