"""Data: task loading (embedded and user files, hub), the ``prepare`` step and its caches.

``prepare`` turns a task and a backbone into exit heads and the per-layer cache the exit
environments read; :mod:`exitgym.data.synthetic` makes small caches without a model (tests,
benchmarks). Layer above :mod:`exitgym.backbones`, below :mod:`exitgym.envs`.
"""
