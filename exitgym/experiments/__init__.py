"""Experiments: configs, run directories, training, comparisons, recorded trajectories, replay.

Everything here writes or reads a run directory (:mod:`exitgym.experiments.runs`); it builds
environments from :class:`~exitgym.experiments.env_spec.EnvSpec` and methods from the one agent
registry, and hands results to :mod:`exitgym.reports`.
"""
