"""pytest fixtures for a real etcd + kube-apiserver + kube-controller-manager (one per test session:
it takes seconds to start)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.apiserver import ApiServer


@pytest.fixture(scope="session")
def apiserver() -> Iterator[ApiServer]:
    with ApiServer() as server:
        yield server
