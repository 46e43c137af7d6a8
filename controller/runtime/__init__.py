"""The agent core shared by the standalone mode and the operator (DESIGN §4-§6): level-triggered.

The host (controller/agent.py, controller/standalone.py) hands `Runtime.apply()` a `DesiredState`
(controller/desired.py) whenever the configuration changes; each route server then converges to it
by itself, retrying what failed. Modules, each owning one concern:

    core.py          Runtime: route servers of the desired state, status, health, observation
    route_server.py  RouteServerRuntime: one route server's speaker, FIB, peers, tables; convergence
    peers.py         PeerRuntime: what the runtime tracks of one peer (desired vs what the speaker holds)
    liveness.py      BFD sessions of the peers: requests, retries, RFC 5882 teardown
    tables.py        TableRuntime: one table's writer, batches, resync, backoff; its narrow owner API
    deferral.py      restart route-selection deferral (RFC 4724 §4.1), pure: `now` in, decisions out
    retry.py         exponential backoff (1 s .. 30 s), pure
    views.py         status views (controller/status.py types)
    ports.py         the protocols of the backends (BFD service, writers) and the factory types

User-visible events go through controller/events.py (log line + metric, later Kubernetes Events).
Must not touch: concrete writers (import-linter: controller.runtime never imports
controller.writers.netlink or rtnl); the sources of desired state; the BFD service's lifecycle.
"""

from controller.runtime.core import (
    GC_YOUNG_THRESHOLD,
    OBSERVE_INTERVAL,
    RESYNC_INTERVAL,
    NoWriterError,
    Runtime,
)
from controller.runtime.deferral import DeferralEnd, RestartDeferral
from controller.runtime.ports import BfdHandle, BfdService, SpeakerFactory, TableWriter, WriterFactory
from controller.runtime.route_server import RouteServerRuntime, persist_config
from controller.runtime.tables import TableOwner, TableRuntime

__all__ = [
    "GC_YOUNG_THRESHOLD",
    "OBSERVE_INTERVAL",
    "RESYNC_INTERVAL",
    "BfdHandle",
    "BfdService",
    "DeferralEnd",
    "NoWriterError",
    "RestartDeferral",
    "RouteServerRuntime",
    "Runtime",
    "SpeakerFactory",
    "TableOwner",
    "TableRuntime",
    "TableWriter",
    "WriterFactory",
    "persist_config",
]
