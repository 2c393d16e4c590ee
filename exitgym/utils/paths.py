"""Where exitgym keeps downloaded data, prepared heads and per-layer caches.

One function decides the location so that every component (tasks, heads, caches, CLI) agrees, and
users can move everything with a single environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV_VAR = "EXITGYM_CACHE"


def cache_dir() -> Path:
    """Return the root cache directory, creating it if needed.

    ``$EXITGYM_CACHE`` wins; otherwise the platform's user cache dir (``~/.cache/exitgym`` on
    Linux). Tests point the variable at a temporary folder so they never touch a user's cache.
    """
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        root = Path(env).expanduser()
    else:
        from platformdirs import user_cache_dir

        root = Path(user_cache_dir("exitgym"))
    root.mkdir(parents=True, exist_ok=True)
    return root
