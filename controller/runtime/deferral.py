"""Route-selection deferral after a restart (RFC 4724 §4.1 Selection_Deferral_Timer). Pure: `now` in.

A table that adopted routes of a previous run (persistRoutes, a SIGTERM that kept them, a crash)
does not rewrite those prefixes while
the sessions come back one by one, since the first peer to send its table may be the standby (FRR's
and BIRD's update-delay do the same). Their FIB changes are deferred until every configured peer is
Established and has sent End-of-RIB for the adopted families; then the converged FIB is written in
one batch. Bounds: peers not Established after `establish_wait_seconds` are no longer waited for
(FRR's establish-wait), and `max_seconds` ends it regardless. A session that goes down during the
deferral ends it at once: an adopted route may point at the appliance that failed, and failover is
never deferred. Prefixes that were not adopted are written at once (controller/runtime/tables.py).

Owns: `RestartDeferral` (the settings), `DeferralEnd` (why it ended) and `Deferral`, the decision
state machine of one route server: `check`, `session_down`, `handle_timer(now)` return the end
reason when the deferral ends, and `next_deadline()` is the one timer its owner arms.

Must not touch: the loop, the clock, tables or sessions; the owner (controller/runtime/route_server.py)
feeds it facts and carries out what it decides.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RestartDeferral:
    """Settings. 10 s bounds how long adopted routes ignore the FIB (peers that restart with us
    reconnect and send their tables within a second or two); peers still not Established after 5 s
    are taken for gone, as FRR's update-delay establish-wait does. `max_seconds` 0 disables it."""

    max_seconds: float = 10.0
    establish_wait_seconds: float = 5.0


class DeferralEnd(enum.Enum):
    CONVERGED = "Converged"  # every awaited peer Established and sent End-of-RIB
    TIMER_EXPIRED = "TimerExpired"  # max_seconds passed
    SESSION_DOWN = "SessionDown"  # a session went down: failover is not deferred
    STOPPED = "Stopped"


class Deferral:
    """One route server's deferral, running from `started` (the owner's start) until it ends."""

    def __init__(self, settings: RestartDeferral, started: float, enabled: bool) -> None:
        self.settings = settings
        self.started = started
        self.active = enabled and settings.max_seconds > 0
        self.establish_wait_over = False
        self.not_awaited: frozenset[str] = frozenset()

    def next_deadline(self) -> float | None:
        if not self.active:
            return None
        settings = self.settings
        if self.establish_wait_over:
            return self.started + settings.max_seconds
        return self.started + min(settings.establish_wait_seconds, settings.max_seconds)

    def handle_timer(
        self, now: float, established: Callable[[str], bool], peers: Iterable[str]
    ) -> DeferralEnd | None:
        """The deadline passed: past `max_seconds` the deferral ends; at the establish wait, peers not
        Established stop being awaited (the owner then calls `check`)."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return None
        if self.establish_wait_over or now >= self.started + self.settings.max_seconds:
            return self._end(DeferralEnd.TIMER_EXPIRED)
        self.establish_wait_over = True
        self.not_awaited = frozenset(p for p in peers if not established(p))
        return None

    def check(
        self,
        tables_open: bool,
        families: set[str],
        peers: Iterable[str],
        converged: Callable[[str, set[str]], bool],
    ) -> DeferralEnd | None:
        """Ends once every awaited peer is Established and sent its End-of-RIBs for `families` (the
        adopted ones). A table not open yet may still adopt routes: no decision before."""
        if not self.active or not tables_open:
            return None
        if families:
            for name in peers:
                if name not in self.not_awaited and not converged(name, families):
                    return None
        return self._end(DeferralEnd.CONVERGED)

    def session_down(self) -> DeferralEnd | None:
        return self._end(DeferralEnd.SESSION_DOWN) if self.active else None

    def stop(self) -> None:
        self.active = False

    def _end(self, reason: DeferralEnd) -> DeferralEnd:
        self.active = False
        return reason
