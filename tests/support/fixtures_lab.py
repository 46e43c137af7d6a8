"""pytest fixtures for network-namespace labs and routing daemons."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.support.netns import Lab, sweep_stale_labs
from tests.support.prereq import require_root


@pytest.fixture(scope="session", autouse=True)
def _sweep_stale_labs() -> None:
    """Remove namespaces a killed earlier run left behind (only ours, only of dead PIDs)."""
    import os

    if os.geteuid() == 0:
        sweep_stale_labs()


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A fresh lab for one test, always torn down (processes by PID, then namespaces)."""
    require_root()
    with Lab(re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:24]) as the_lab:
        yield the_lab
