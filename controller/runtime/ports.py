"""The backends the runtime drives, as small protocols (DESIGN §7.7), and the factories that make them.

Owns: `BfdService` / `BfdHandle` (what the runtime needs of bfd.service: thread-safe, blocking round
trips, run off the loop with asyncio.to_thread), `TableWriter` (the writer protocol as the runtime
uses it), `SpeakerFactory` and `WriterFactory` (how a route server gets its speaker and a table its
writer) and `default_speaker_factory`. The `Speaker` protocol itself is bgp.api's.

Must not touch: any concrete writer. Which writer serves which table target is the host's choice
(controller/writers/factory.py, passed in as `writer_factory`); import-linter keeps the runtime from
importing controller.writers.netlink or rtnl, directly or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from bfd.service import BfdProfile, ServiceStatus
from bfd.session import StateChange
from bgp.api import Speaker
from bgp.speaker import Speaker as BgpSpeaker
from bgp.types import IPAddress
from controller.desired import BfdSettings, SelectionSettings, SpeakerSettings, TableDesired
from controller.events import EventSink
from controller.writers.base import RouteWriter

# The one writer protocol (start, apply, resync, withdraw_all, installed, close).
TableWriter = RouteWriter


class BfdHandle(Protocol):
    """bfd.service.SessionHandle as the runtime uses it."""

    def subscribe(
        self,
        callback: Callable[[StateChange], object],
        loop: asyncio.AbstractEventLoop | None = None,
        on_close: Callable[[], object] | None = None,
    ) -> object: ...

    def release(self) -> None: ...


class BfdService(Protocol):
    """bfd.service.BfdService as the runtime uses it (thread-safe, blocking round trips).

    `request` raises for a session it cannot create (OSError: a socket, a port; ValueError: a profile
    that cannot be combined; BfdServiceError: the service thread is not running). The runtime treats
    every such error alike: shown in status, retried with backoff (controller/runtime/liveness.py).
    """

    @property
    def running(self) -> bool: ...

    def request(
        self,
        peer: IPAddress,
        *,
        local: IPAddress | None = None,
        interface: str | None = None,
        profile: BfdProfile | None = None,
    ) -> BfdHandle: ...

    def status(self) -> ServiceStatus: ...


class RouteServerPart(Protocol):
    """What every part of a route server (its tables, its liveness) needs of it: a name for events,
    and where the events go."""

    @property
    def name(self) -> str: ...

    @property
    def events(self) -> EventSink: ...


SpeakerFactory = Callable[[SpeakerSettings, SelectionSettings], Speaker]
# The same type as controller.writers.factory.WriterFactory, spelled here: importing that module
# would import every concrete writer it names (import-linter forbids it, indirectly too).
WriterFactory = Callable[[TableDesired], RouteWriter]


def default_speaker_factory(settings: SpeakerSettings, selection: SelectionSettings) -> Speaker:
    return BgpSpeaker(
        settings.asn,
        settings.router_id,
        settings.listen_addresses,
        settings.listen_port,
        max_paths=selection.rib_max_paths,
        always_compare_med=selection.always_compare_med,
    )


def bfd_profile(settings: BfdSettings) -> BfdProfile:
    return BfdProfile.from_ms(
        settings.min_tx_ms,
        settings.min_rx_ms,
        settings.detect_multiplier,
        auth=settings.auth,
        passive=settings.passive,
        multihop=settings.multihop,
    )
