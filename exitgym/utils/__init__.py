"""Utilities every layer may use: atomic file writes and checksums, the cache directory.

The lowest layer of the import contract (``pyproject.toml``): it imports nothing from exitgym.
"""
