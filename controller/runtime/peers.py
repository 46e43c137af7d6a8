"""What the runtime tracks about one peer beyond the speaker's own status.

Owns: `PeerRuntime`: the peer's desired settings, what the speaker actually holds for it (`applied`,
None until `add_peer` succeeded), the configuration error and its retry backoff, the BGP state as
last published, the connection's local address once it came up, the BFD session held for it and the
BFD request's error and backoff (controller/runtime/liveness.py), and the bookkeeping for logging
rejections and the restart deferral's End-of-RIB tracking.

Must not touch: anything; a record the route server and liveness code read and write.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bfd.codec import State as BfdState
from bfd.session import StateChange
from bgp.api import PeerConfig
from bgp.fsm.events import State
from bgp.types import IPAddress
from controller.desired import BfdSettings, PeerDesired
from controller.runtime.ports import BfdHandle
from controller.runtime.retry import Backoff

BfdPath = tuple[IPAddress, IPAddress | None, BfdSettings]  # peer, local, settings


@dataclass
class PeerRuntime:
    desired: PeerDesired
    applied: PeerConfig | None = None  # what the speaker holds (None: not configured there)
    error: str | None = None  # the last add/update failure, until one succeeds
    backoff: Backoff = field(default_factory=Backoff)
    bgp_state: State = State.IDLE
    came_up: bool = False  # Established at least once (BFD is wanted from then on)
    local_address: IPAddress | None = None  # our end of the last Established connection
    bfd_handle: BfdHandle | None = None
    bfd_path: BfdPath | None = None  # the path held or being requested
    bfd_generation: int = 0
    bfd_pending: bool = False
    bfd_state: BfdState | None = None
    bfd_last: StateChange | None = None
    bfd_failures: int = 0
    bfd_error: str | None = None
    bfd_backoff: Backoff = field(default_factory=Backoff)
    rejected_logged: int = 0
    rejected_by_reason_logged: dict[str, int] = field(default_factory=dict)
    end_of_rib: set[str] = field(default_factory=set)  # families with End-of-RIB since Established

    @property
    def name(self) -> str:
        return self.desired.name
