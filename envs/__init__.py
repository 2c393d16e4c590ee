"""Gymnasium environments of exitgym: early exit, block skipping, reward shapes, vector envs.

The settings classes (the ``gym.make`` keyword arguments of each environment family) are
importable from here; the environments themselves are made with ``gym.make`` /
``gym.make_vec`` (``import exitgym`` registers them) or imported from their modules. Importing
this package never imports torch.
"""

from exitgym.envs.settings import (
    EnvSettings,
    ExitSettings,
    SkipBlockSettings,
    SkipSettings,
    SwitchableSettings,
)

__all__ = ["EnvSettings", "ExitSettings", "SkipBlockSettings", "SkipSettings",
           "SwitchableSettings"]
