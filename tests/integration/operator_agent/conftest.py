"""The operator tests of this package share one cluster per module (an API server, etcd, a controller
manager and the chart installed with helm): it takes seconds to start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.operator_lab import Cluster, cluster_fixture


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from cluster_fixture(tmp_path_factory.mktemp("cluster"))
