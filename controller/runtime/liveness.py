"""BFD liveness of BGP peers (RFC 5882): requests, retries, and the teardown a BFD Down causes.

Owns: `Liveness`, one per route server: which BFD session each peer should have, requesting it from
the BFD service (off the loop: the service answers from its own thread), retrying a failed request
with backoff, releasing a session that is no longer wanted, and acting on state changes.

Level-triggered: `ensure(peer, now)` compares the session the peer should have (peer address, the BGP
connection's local address, the BFD settings; wanted once the peer has been Established, RFC 5881 §4)
with the one held, and requests, keeps or releases. The route server calls it on every Established
event and on every convergence pass, so a request that failed (a socket, a port, the BFD thread) is
asked again after its backoff, and a session the service closed is asked again, without any
configuration change and without touching the BGP session. A BFD session that never comes Up does
not block BGP (the hold timer still protects it).

A BFD Up -> Down failure while BGP is Established first has the route server's tables move every route
off the peer's next hops (`fail_over`: nexthop-group rewrites to the backups the FIB recorded, a few
messages whatever the route count), then calls `Speaker.peer_down(peer, BFD_DOWN)` in the same loop
callback that delivered it (RFC 5882 §3.2, Cease/BFD Down RFC 9384): the session closes, its routes
leave the Loc-RIB, the FIB moves to the standby and the tables get the batch, all before the next
task switch. A peer's AdminDown is not a failure (RFC 5882 §3.2).

Must not touch: BGP sessions other than through `Speaker.peer_down`; the FIB or tables (a teardown
reaches them through the speaker's events).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Protocol

from bfd.codec import Diag
from bfd.codec import State as BfdState
from bfd.service import SessionStatus
from bfd.session import StateChange
from bgp.api import Speaker
from bgp.fsm.events import DownReason, State
from bgp.types import IPAddress
from controller.desired import BfdSettings
from controller.events import (
    BfdDown,
    BfdFailed,
    BfdRequested,
    BfdStateChanged,
    BfdUnavailable,
    BfdUp,
)
from controller.runtime.peers import PeerRuntime
from controller.runtime.ports import BfdService, RouteServerPart, bfd_profile

BFD_STATE_NAMES = {
    BfdState.ADMIN_DOWN: "AdminDown",
    BfdState.DOWN: "Down",
    BfdState.INIT: "Init",
    BfdState.UP: "Up",
}


def diag_name(diag: int) -> str:
    try:
        return "".join(part.capitalize() for part in Diag(diag).name.lower().split("_"))
    except ValueError:
        return str(diag)


class LivenessOwner(RouteServerPart, Protocol):
    """What liveness needs of its route server."""

    @property
    def speaker(self) -> Speaker | None: ...

    def current(self, peer: PeerRuntime) -> bool: ...  # still this route server's peer record

    def wake(self) -> None: ...  # run a convergence pass now

    def fail_over(self, peer: PeerRuntime) -> None: ...  # move routes off the peer's next hops now


class Liveness:
    def __init__(self, owner: LivenessOwner, bfd: BfdService | None) -> None:
        self.owner = owner
        self.bfd = bfd

    def ensure(self, peer: PeerRuntime, now: float) -> None:
        """Converge the peer's BFD session: request, keep or release (module docstring)."""
        settings = peer.desired.bfd
        if settings is None or not peer.came_up or self.owner.speaker is None:
            if settings is None and (peer.bfd_path is not None or peer.bfd_handle is not None):
                self.release(peer)
            return
        if self.bfd is None:
            if peer.bfd_error is None:
                peer.bfd_error = "no BFD service in this agent"
                self.owner.events.emit(BfdUnavailable(self.owner.name, peer.name))
            return
        local = peer.local_address or peer.desired.config.local_address
        path = (peer.desired.config.peer_address, local, settings)
        if peer.bfd_path == path and (peer.bfd_handle is not None or peer.bfd_pending):
            return
        if peer.bfd_path is not None or peer.bfd_handle is not None:
            self.release(peer)
        if not peer.bfd_backoff.due(now):
            return  # a failed request waits for its backoff (the convergence loop wakes then)
        peer.bfd_path = path
        peer.bfd_pending = True
        task = asyncio.get_running_loop().create_task(
            self._request(peer, peer.bfd_generation, local, settings), name=f"bfd-{peer.name}"
        )
        task.add_done_callback(_log_crash)

    def deadline(self, peer: PeerRuntime) -> float | None:
        """When the peer's failed BFD request is due again (None: nothing to retry)."""
        if peer.desired.bfd is None or peer.bfd_handle is not None or peer.bfd_pending:
            return None
        return peer.bfd_backoff.deadline()

    async def _request(
        self, peer: PeerRuntime, generation: int, local: IPAddress | None, settings: BfdSettings
    ) -> None:
        bfd = self.bfd
        assert bfd is not None
        owner = self.owner
        address = peer.desired.config.peer_address
        loop = asyncio.get_running_loop()
        try:
            handle = await asyncio.to_thread(
                bfd.request, address, local=local, interface=None, profile=bfd_profile(settings)
            )
        except Exception as exc:
            if peer.bfd_generation == generation:
                peer.bfd_pending = False
                peer.bfd_path = None
                self._failed(peer, f"{type(exc).__name__}: {exc}", loop.time())
            return
        if peer.bfd_generation != generation or not owner.current(peer):
            await asyncio.to_thread(handle.release)  # the peer changed or left while we asked
            return
        peer.bfd_handle, peer.bfd_pending = handle, False
        callback = functools.partial(self._on_change, peer, generation)
        closed = functools.partial(self._on_closed, peer, generation)
        try:
            subscription = await asyncio.to_thread(handle.subscribe, callback, loop, closed)
        except Exception as exc:
            if peer.bfd_generation == generation:
                self.release(peer)
                self._failed(peer, f"{type(exc).__name__}: {exc}", loop.time())
            return
        peer.bfd_error = None
        peer.bfd_backoff.succeeded()
        initial: SessionStatus | None = getattr(subscription, "initial", None)
        # Changes after the snapshot may already have been delivered (they win over it).
        if initial is not None and peer.bfd_generation == generation and peer.bfd_state is None:
            peer.bfd_state = initial.state
        owner.events.emit(
            BfdRequested(
                owner.name,
                peer.name,
                str(address),
                str(local) if local is not None else None,
                settings.min_tx_ms,
                settings.min_rx_ms,
                settings.detect_multiplier,
                BFD_STATE_NAMES[peer.bfd_state] if peer.bfd_state is not None else None,
            )
        )

    def _failed(self, peer: PeerRuntime, error: str, now: float) -> None:
        peer.bfd_error = error
        delay = peer.bfd_backoff.failed(now)
        self.owner.events.emit(BfdFailed(self.owner.name, peer.name, error, delay))
        self.owner.wake()  # the loop re-arms for the retry

    def release(self, peer: PeerRuntime) -> None:
        peer.bfd_generation += 1  # late callbacks and answers of the old session are ignored
        handle, peer.bfd_handle = peer.bfd_handle, None
        peer.bfd_path = None
        peer.bfd_pending = False
        peer.bfd_state = None
        peer.bfd_last = None
        if handle is not None:
            # The release sends AdminDown from the BFD thread; do not wait for it here.
            asyncio.get_running_loop().run_in_executor(None, handle.release)

    def _on_closed(self, peer: PeerRuntime, generation: int) -> None:
        """The service closed a session we still hold (it stopped or restarted): ask again."""
        if peer.bfd_generation != generation or not self.owner.current(peer):
            return  # our own release
        self.release(peer)
        self._failed(peer, "BFD session closed by the BFD service", asyncio.get_running_loop().time())

    def _on_change(self, peer: PeerRuntime, generation: int, change: StateChange) -> None:
        """A BFD state change, delivered on the loop thread (call_soon_threadsafe)."""
        owner = self.owner
        if peer.bfd_generation != generation or not owner.current(peer):
            return
        peer.bfd_state = change.new
        peer.bfd_last = change
        address = str(peer.desired.config.peer_address)
        if change.failure:
            peer.bfd_failures += 1
            established = peer.bgp_state is State.ESTABLISHED
            owner.events.emit(
                BfdDown(
                    owner.name, peer.name, address, change.reason.value, diag_name(change.diag), established
                )
            )
            speaker = owner.speaker
            if established and speaker is not None:
                # Prefix-independent convergence first: the tables move every route off the peer's
                # next hops group by group (a few messages), then the RIB does its per-prefix work.
                try:
                    owner.fail_over(peer)
                except Exception:
                    logging.getLogger(__name__).exception("fast failover of %s failed", peer.name)
                # RFC 5882 §4.3: the forwarding path is gone; tear the session down now.
                with contextlib.suppress(KeyError):
                    speaker.peer_down(peer.name, DownReason.BFD_DOWN)
        elif change.new is BfdState.UP:
            owner.events.emit(BfdUp(owner.name, peer.name, address, change.reason.value))
        else:
            owner.events.emit(
                BfdStateChanged(owner.name, peer.name, BFD_STATE_NAMES[change.new], change.reason.value)
            )


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger(__name__).error("BFD request task failed", exc_info=task.exception())
