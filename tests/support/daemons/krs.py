"""Our own BGP speaker (bgp.speaker.Speaker) as a lab peer, symmetric to the real-daemon fixtures.

The speaker runs as `python -m tests.support.krs_speaker_proc` inside the lab host and is driven
over a unix socket in the host's work directory (JSON lines; see that module). Besides the common
RoutingDaemon interface it exposes our status snapshot, the event log and the BFD hook.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.support.daemons.base import Neighbor, Route, RouteView, RoutingDaemon, start_python_harness
from tests.support.netns import Host, LabError, ManagedProcess


@dataclass(frozen=True)
class KrsNeighbor(Neighbor):
    """A neighbour with the options only our speaker's harness knows."""

    gtsm_hops: int | None = None  # RFC 5082 TTL security
    max_prefix: int | None = None
    max_prefix_action: str = "teardown"  # or "warn"
    allowed: tuple[str, ...] | None = None  # "10.0.0.0/8 le 32"; None: allow everything
    idle_hold_time: float = 0.5


class KrsSpeaker(RoutingDaemon):
    kind = "krs"

    def __init__(self, host: Host, *, listen_addresses: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self.dir = host.workdir / f"krs-{self.asn}-{id(self) % 10000}"
        self.control = self.dir / "ctl.sock"
        self.listen_addresses = list(listen_addresses) if listen_addresses else ["0.0.0.0", "::"]
        self._proc: ManagedProcess | None = None

    def _own(self, ipv6: bool) -> str | None:
        try:
            return self.own_address(ipv6)
        except RuntimeError:
            return None

    def _neighbor(self, n: Neighbor) -> dict[str, Any]:
        # Next hop self: over a session of the route's family the speaker uses the session's local
        # address; routes of the other family need a configured next hop of their own family.
        other_family_hop = self._own(ipv6=":" not in n.address)
        data: dict[str, Any] = {
            "next_hop_ipv4" if ":" in n.address else "next_hop_ipv6": other_family_hop,
            "address": n.address,
            "asn": n.asn,
            "port": n.port,
            "local_address": n.local_address,
            "passive": n.passive,
            "password": n.password,
            "multihop_ttl": n.multihop_ttl,
            "hold_time": n.hold_time,
            "connect_retry": n.connect_retry,
            "graceful_restart": n.graceful_restart,
            "families": list(n.families),
        }
        if isinstance(n, KrsNeighbor):
            data.update(
                gtsm_hops=n.gtsm_hops,
                max_prefix=n.max_prefix,
                max_prefix_action=n.max_prefix_action,
                allowed=list(n.allowed) if n.allowed is not None else None,
                idle_hold_time=n.idle_hold_time,
            )
        return data

    def _route(self, route: Route) -> dict[str, Any]:
        return {
            "prefix": route.prefix,
            "next_hop": route.next_hop,  # None: next hop self
            "as_path_prepend": route.as_path_prepend,
            "med": route.med,
            "communities": list(route.communities),
            "large_communities": list(route.large_communities),
        }

    def render(self) -> dict[str, Any]:
        return {
            "asn": self.asn,
            "router_id": self.router_id,
            "listen": self.listen_addresses,
            "port": self.listen_port,
            "control": str(self.control),
            "neighbors": [self._neighbor(n) for n in self.neighbors],
            "routes": [self._route(r) for r in self.routes],
        }

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "config.json"
        config.write_text(json.dumps(self.render(), indent=1))
        self.control.unlink(missing_ok=True)
        self._proc = start_python_harness(
            self.host,
            "tests.support.krs_speaker_proc",
            ["--config", str(config)],
            name=f"krs-{self.asn}",
            control=self.control,
            probe=lambda: self.request("status"),
        )

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def pause(self) -> None:
        """SIGSTOP: the process freezes with its sockets open (the peer's hold timer must fire)."""
        assert self._proc is not None
        self._proc.signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.signal(signal.SIGCONT)

    def log_text(self) -> str:
        return self._proc.log_text() if self._proc is not None else ""

    # -- control socket -----------------------------------------------------------------------------

    def request(self, cmd: str, **args: Any) -> Any:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.control))
            sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        answer = json.loads(data)
        if not answer.get("ok"):
            raise LabError(f"krs {cmd}: {answer.get('error')}")
        return answer

    # -- RoutingDaemon --------------------------------------------------------------------------------

    def advertise(self, routes: Sequence[Route]) -> None:
        self.request("advertise", routes=[self._route(r) for r in routes])

    def withdraw(self, prefixes: Sequence[str]) -> None:
        self.request("withdraw", prefixes=list(prefixes))

    def status(self) -> dict[str, Any]:
        """Our SpeakerStatus as JSON: listening, refused counts and one PeerStatus per peer."""
        status: dict[str, Any] = self.request("status")["status"]
        return status

    def peer_status(self, neighbor_address: str) -> dict[str, Any]:
        for peer in self.status()["peers"]:
            if peer["address"] == neighbor_address:
                return dict(peer)
        raise LabError(f"krs has no peer {neighbor_address}")

    def session_state(self, neighbor_address: str) -> str:
        return str(self.peer_status(neighbor_address)["state"])

    def received_routes(self) -> dict[str, RouteView]:
        routes: dict[str, RouteView] = {}
        for r in self.request("routes")["routes"]:
            routes[r["prefix"]] = RouteView(
                prefix=r["prefix"],
                next_hop=r["next_hop"],
                as_path=tuple(r["as_path"]),
                med=r["med"],
                local_pref=r["local_pref"],
                communities=tuple(r["communities"]),
                large_communities=tuple(r["large_communities"]),
            )
        return routes

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.request("events", since=since)["events"]
        return events

    def peer_down(self, neighbor_address: str, graceful: bool = False) -> None:
        """The BFD hook: tear the session down now (Cease/BFD Down)."""
        self.request("peer_down", peer=neighbor_address, graceful=graceful)

    def refresh(self, neighbor_address: str) -> list[str]:
        families: list[str] = self.request("refresh", peer=neighbor_address)["families"]
        return families

    def wait_event(self, predicate: Any, timeout: float = 10.0, what: str = "event") -> dict[str, Any]:
        """Poll the event log until an event satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        events: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            events = self.events()
            for event in events:
                if predicate(event):
                    return event
            time.sleep(0.05)
        raise AssertionError(f"krs: no {what} within {timeout}s; events: {events[-15:]}")
