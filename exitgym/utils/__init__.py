"""Utilities every layer may use: atomic writes and checksums, directory manifests, replacing a
directory only once its successor is whole, whether a process is alive, the cache directory,
config dataclasses as CLI flags and JSON, class registries, torch thread settings.

The lowest layer of the import contract (``pyproject.toml``): it imports nothing from exitgym.
"""
