"""Plug-ins of runs: every registry's entry points loaded at once, and a run's recorded ones again.

:mod:`exitgym.utils.plugins` finds and records plug-ins; this module knows the registries (rewards,
observation views, agents, tasks), so the CLI can offer plug-in names as choices before it parses
and ``evaluate`` / ``replay`` / ``infer`` / ``--resume`` load the plug-ins a run used.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from exitgym.utils.plugins import GROUPS, load_recorded


def load_all_plugins() -> None:
    """Load every entry-point group that has entry points into its registry.

    A registry module is imported only when its group is used, so commands stay light when no
    plug-in is installed.
    """
    if not any(metadata.entry_points(group=g) for g in GROUPS.values()):
        return
    from exitgym.agents.registry import load_agent_plugins
    from exitgym.data.tasks import load_task_plugins
    from exitgym.envs.observations import load_observation_plugins
    from exitgym.envs.rewards import load_reward_plugins

    for load in (load_reward_plugins, load_observation_plugins, load_agent_plugins,
                 load_task_plugins):
        load()


def load_run_plugins(root: str | Path) -> None:
    """Load the plug-ins the run (or comparison) in ``root`` recorded in its ``config.json``.

    Raises:
        PluginError: one is not available; the message names the distribution and version.
    """
    from exitgym.experiments.binding import recorded

    record = recorded(root).get("plugins")
    if record:
        load_recorded(record, load_all_plugins)
    else:
        load_all_plugins()
