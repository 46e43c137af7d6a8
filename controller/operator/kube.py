"""The kubernetes-client wrapper every operator module uses: one ApiClient, calls off the loop.

Owns: building the client (in-cluster ServiceAccount or a kubeconfig), the thread pool every
blocking kubernetes-client call runs on (`await kube.call(what, fn, ...)`), the API request
counter by purpose, and the names of our API group.

May not touch: the runtime, the agent, kopf. Nothing here runs a kubernetes-client call on the
event loop: the loop only awaits the executor's future.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kubernetes import client, config

GROUP = "routeserver.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
ROUTE_SERVERS = "routeservers"
PEERS = "routeserverpeers"
ASSOCIATIONS = "routetableassociations"
SESSIONS = "routeserversessions"
KIND_OF_PLURAL = {
    ROUTE_SERVERS: "RouteServer",
    PEERS: "RouteServerPeer",
    ASSOCIATIONS: "RouteTableAssociation",
    SESSIONS: "RouteServerSession",
}

DEFAULT_REQUEST_TIMEOUT = 10.0  # seconds, connect + read, for every call that does not set its own
DEFAULT_WORKERS = 4

T = TypeVar("T")


def load_client_configuration(kubeconfig: str | None = None) -> client.Configuration:
    """In a pod: the ServiceAccount (KUBERNETES_SERVICE_HOST set); else `kubeconfig` or $KUBECONFIG."""
    configuration = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        config.load_kube_config(config_file=path, client_configuration=configuration)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        raise RuntimeError("no Kubernetes credentials: not in a pod, and no --kubeconfig or KUBECONFIG")
    return configuration


class Kube:
    """One ApiClient and its executor. `call` runs a client method on a worker thread.

    `requests` counts calls by purpose (`what`): the figure the operator's rate limits are judged by.
    """

    def __init__(self, configuration: client.Configuration, workers: int = DEFAULT_WORKERS) -> None:
        self.configuration = configuration
        self.api_client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.coordination = client.CoordinationV1Api(self.api_client)
        self.events = client.EventsV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="kube")
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, workers: int = DEFAULT_WORKERS) -> Kube:
        return cls(load_client_configuration(kubeconfig), workers)

    async def call(self, what: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` on a worker thread; `what` (a short fixed name) is counted.

        `_request_timeout` defaults to DEFAULT_REQUEST_TIMEOUT so no call can hang a worker forever.
        Exceptions (kubernetes.client.exceptions.ApiException, urllib3 errors) propagate.
        """
        kwargs.setdefault("_request_timeout", DEFAULT_REQUEST_TIMEOUT)
        with self._lock:
            self.requests[what] += 1
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))
        except Exception:
            with self._lock:
                self.failures[what] += 1
            raise

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.requests)

    def failure_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.failures)

    def close(self) -> None:
        """Stop the executor (waits for calls in flight, which are bounded by their timeouts)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.api_client.close()


__all__ = [
    "API_VERSION",
    "ASSOCIATIONS",
    "GROUP",
    "KIND_OF_PLURAL",
    "PEERS",
    "ROUTE_SERVERS",
    "SESSIONS",
    "VERSION",
    "Kube",
    "load_client_configuration",
]
