"""Ray tests (run by ``make test`` in .venv-ray; the main suite ignores this folder, see
pyproject's addopts): one local Ray of 2 CPUs per test module, no dashboard, shut down after."""

from __future__ import annotations

import pytest

from exitgym.integrations.ray import ray_session


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray of 2 CPUs for the module (exitgym code called inside reuses it)."""
    with ray_session(num_cpus=2) as ray:
        yield ray
