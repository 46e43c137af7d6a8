"""BFD timer arithmetic (RFC 5880 §6.8.2-§6.8.4, §6.8.7): pure functions on microseconds.

Nothing here reads a clock or creates randomness: jitter draws from an injected `Rng` (a
`random.Random` fits), so sessions are deterministic on a virtual clock.

- TX interval (§6.8.2, §6.8.7): max(bfd.DesiredMinTxInterval, bfd.RemoteMinRxInterval), reduced per
  packet by a random 0-25% (10-25% when bfd.DetectMult is 1).
- Detection time (§6.8.4, asynchronous mode): the remote's Detect Mult x max(bfd.RequiredMinRxInterval,
  the remote's last Desired Min TX Interval).
- While not Up, the advertised Desired Min TX is at least one second (§6.8.3).
- Changing our timers (§6.8.3): what we advertise changes at once and a Poll Sequence starts; a larger
  Desired Min TX only slows our transmission, and a smaller Required Min RX only shortens our detection
  time, once the Poll Sequence has ended, so the peer has adapted before either bites.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

SLOW_TX_US = 1_000_000  # §6.8.3: Desired Min TX while the session is not Up
US_PER_S = 1_000_000


class Rng(Protocol):
    """The slice of `random.Random` the BFD core uses."""

    def random(self) -> float: ...

    def getrandbits(self, k: int, /) -> int: ...


def jitter_factor(rng: Rng, detect_mult: int) -> float:
    """§6.8.7: interval x [0.75, 1.0); x [0.75, 0.90] when bfd.DetectMult is 1."""
    span = 0.15 if detect_mult == 1 else 0.25
    return 0.75 + span * rng.random()


def jittered_interval_s(interval_us: int, detect_mult: int, rng: Rng) -> float:
    """The delay until the next periodic Control packet, in seconds."""
    return interval_us * jitter_factor(rng, detect_mult) / US_PER_S


def tx_interval_us(desired_min_tx_us: int, remote_min_rx_us: int) -> int:
    """§6.8.2/§6.8.7: never faster than we want to send nor than the remote wants to receive."""
    return max(desired_min_tx_us, remote_min_rx_us)


def detection_time_us(remote_detect_mult: int, required_min_rx_us: int, remote_desired_min_tx_us: int) -> int:
    """§6.8.4 asynchronous mode: the remote's multiplier x the interval the remote actually sends at."""
    return remote_detect_mult * max(required_min_rx_us, remote_desired_min_tx_us)


def advertised_min_tx_us(configured_us: int, up: bool) -> int:
    """§6.8.3: at least one second while the session is not Up."""
    return configured_us if up else max(configured_us, SLOW_TX_US)


@dataclasses.dataclass(slots=True)
class LocalTimers:
    """Our two intervals as advertised and as in effect (§6.8.3).

    `advertised_*` go into every packet. `effective_tx_us` paces our transmission and `effective_rx_us`
    enters our detection time; they lag the advertised values only in the two cases §6.8.3 defers
    until the Poll Sequence ends (while Up: Desired Min TX raised, Required Min RX lowered).
    """

    advertised_tx_us: int
    advertised_rx_us: int
    effective_tx_us: int
    effective_rx_us: int

    @classmethod
    def initial(cls, configured_tx_us: int, configured_rx_us: int) -> LocalTimers:
        """Timers for a new session, which starts Down (§6.8.1)."""
        tx = advertised_min_tx_us(configured_tx_us, up=False)
        return cls(tx, configured_rx_us, tx, configured_rx_us)

    def update(self, configured_tx_us: int, configured_rx_us: int, up: bool) -> bool:
        """Apply new configured values for the current state; True when the advertised values changed
        (§6.8.3: a Poll Sequence MUST then be initiated)."""
        tx = advertised_min_tx_us(configured_tx_us, up)
        changed = (tx, configured_rx_us) != (self.advertised_tx_us, self.advertised_rx_us)
        self.advertised_tx_us, self.advertised_rx_us = tx, configured_rx_us
        if not up or tx < self.effective_tx_us:
            self.effective_tx_us = tx
        if not up or configured_rx_us > self.effective_rx_us:
            self.effective_rx_us = configured_rx_us
        return changed

    def poll_terminated(self) -> None:
        """§6.8.3: the peer acknowledged with Final, so the deferred values now apply."""
        self.effective_tx_us = self.advertised_tx_us
        self.effective_rx_us = self.advertised_rx_us

    @property
    def deferred(self) -> bool:
        """True while a change waits for the end of a Poll Sequence."""
        return (self.effective_tx_us, self.effective_rx_us) != (self.advertised_tx_us, self.advertised_rx_us)
