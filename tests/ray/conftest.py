"""Ray tests (run by ``make test`` in .venv-ray; the main suite ignores this folder, see
pyproject's addopts): one local Ray of 2 CPUs per test module, no dashboard, shut down after."""

from __future__ import annotations

import os

import pytest

from exitgym.integrations.ray import ray_session


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory: pytest.TempPathFactory):
    """A local Ray of 2 CPUs for the module (exitgym code called inside reuses it).

    Ray's worker processes inherit the environment of ``ray.init``, which runs before the
    per-test ``_isolated_cache`` fixture: point ``$EXITGYM_CACHE`` at that same session folder
    first, or workers would read and write the user's cache.
    """
    root = tmp_path_factory.getbasetemp() / "exitgym-cache"
    root.mkdir(exist_ok=True)
    before = os.environ.get("EXITGYM_CACHE")
    os.environ["EXITGYM_CACHE"] = str(root)
    try:
        with ray_session(num_cpus=2) as ray:
            yield ray
    finally:
        if before is None:
            os.environ.pop("EXITGYM_CACHE", None)
        else:
            os.environ["EXITGYM_CACHE"] = before
