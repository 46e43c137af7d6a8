"""Exponential backoff for everything the runtime retries: peers, BFD requests, tables, speakers.

Owns: `Backoff`, a pure record of one thing's failures (`now` comes in): when the next attempt is
due and how long the last wait was. Doubling from RETRY_MIN up to RETRY_MAX (1 s .. 30 s) keeps a
broken backend from being hammered while a transient failure (a port taken for a moment, a BFD
thread restarting) is retried within a second or two.

Must not touch: the clock, the loop or the thing retried; callers ask `due(now)` and report
`failed(now)` / `succeeded()`.
"""

from __future__ import annotations

from dataclasses import dataclass

RETRY_MIN = 1.0
RETRY_MAX = 30.0


@dataclass(slots=True)
class Backoff:
    delay: float = 0.0  # the last wait (0: no failure since the last success)
    at: float = 0.0  # the next attempt is due at this instant
    failures: int = 0  # consecutive failures

    def due(self, now: float) -> bool:
        return now >= self.at

    def failed(self, now: float) -> float:
        """Record a failure at `now`; returns the wait before the next attempt."""
        # Read at call time, so tests can shorten the module's bounds.
        self.delay = min(max(self.delay * 2, RETRY_MIN), RETRY_MAX)
        self.at = now + self.delay
        self.failures += 1
        return self.delay

    def succeeded(self) -> None:
        self.delay, self.at, self.failures = 0.0, 0.0, 0

    def deadline(self) -> float | None:
        """When a pending retry is due (None: nothing failed)."""
        return self.at if self.failures else None
