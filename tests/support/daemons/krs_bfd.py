"""Our BFD service as a lab process (tests/support/bfd_proc.py), with the same view helpers as the daemons.

    bfd = KrsBfd(host)
    bfd.start()
    sid = bfd.request("10.0.0.2", local="10.0.0.1", timers=BfdTimers(100, 100, 3))
    bfd.wait_state(sid, "UP")
    bfd.status(sid)["detection_time_us"]

States are bfd.codec.State names (ADMIN_DOWN, DOWN, INIT, UP); `bfd_sessions()` also gives the
RoutingDaemon-style BfdView (AdminDown/Down/Init/Up) so a test can read every side the same way.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from typing import Any

from tests.support.daemons.base import BfdAuth, BfdTimers, BfdView, start_python_harness
from tests.support.netns import Host, LabError, ManagedProcess

DEFAULT_TIMERS = BfdTimers()
_VIEW_STATE = {"ADMIN_DOWN": "AdminDown", "DOWN": "Down", "INIT": "Init", "UP": "Up"}


def profile(
    timers: BfdTimers,
    *,
    auth: BfdAuth | None = None,
    passive: bool = False,
    multihop: bool = False,
    min_ttl: int = 254,
) -> dict[str, Any]:
    """The harness's JSON profile from the fixtures' neutral dataclasses."""
    return {
        "min_tx_ms": timers.min_tx_ms,
        "min_rx_ms": timers.min_rx_ms,
        "multiplier": timers.multiplier,
        "passive": passive,
        "multihop": multihop,
        "min_ttl": min_ttl,
        "auth": {"type": auth.type, "key_id": auth.key_id, "secret": auth.secret} if auth else None,
    }


class KrsBfd:
    kind = "krs-bfd"

    def __init__(self, host: Host, ports: dict[str, int] | None = None) -> None:
        self.host = host
        self.dir = host.workdir / f"krs-bfd-{id(self) % 10000}"
        self.control = self.dir / "ctl.sock"
        self.ports = ports or {}
        self._proc: ManagedProcess | None = None
        self._conn: Any = None
        self.sessions: dict[int, dict[str, Any]] = {}

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.control.unlink(missing_ok=True)
        self._proc = start_python_harness(
            self.host,
            "tests.support.bfd_proc",
            ["--control", str(self.control), "--ports", json.dumps(self.ports)],
            name=f"krs-bfd-{id(self) % 10000}",
            control=self.control,
            probe=lambda: self.call("clock"),
        )

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def pause(self) -> None:
        """SIGSTOP: the whole process freezes, sockets open (the peer's detection must fire)."""
        assert self._proc is not None
        self._proc.signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.signal(signal.SIGCONT)

    def log_text(self) -> str:
        return self._proc.log_text() if self._proc is not None else ""

    # -- control ------------------------------------------------------------------------------

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """One request over a persistent connection (polling must be cheap on a 2-core machine)."""
        from bench.common import JsonLines

        if self._conn is None:
            self._conn = JsonLines(self.control, timeout=10)
        try:
            answer: dict[str, Any] = self._conn.request(cmd, **args)
            return answer
        except OSError:
            self._conn.close()
            self._conn = None
            raise

    def request(
        self,
        peer: str,
        *,
        local: str | None = None,
        interface: str | None = None,
        timers: BfdTimers = DEFAULT_TIMERS,
        auth: BfdAuth | None = None,
        passive: bool = False,
        multihop: bool = False,
        min_ttl: int = 254,
    ) -> int:
        spec = profile(timers, auth=auth, passive=passive, multihop=multihop, min_ttl=min_ttl)
        sid = int(self.call("request", peer=peer, local=local, interface=interface, profile=spec)["id"])
        self.sessions[sid] = {"peer": peer, "local": local, "interface": interface, "multihop": multihop}
        return sid

    def update(self, sid: int, timers: BfdTimers, **options: Any) -> None:
        self.call("update", id=sid, profile=profile(timers, **options))

    def release(self, sid: int) -> None:
        self.call("release", id=sid)
        self.sessions.pop(sid, None)

    def burn(self, mode: str) -> None:
        self.call("burn", mode=mode)

    def service_status(self) -> dict[str, Any]:
        return self.call("status")

    def status(self, sid: int) -> dict[str, Any]:
        """The session of handle `sid` (matched by its path)."""
        want = self.sessions[sid]
        for session in self.service_status()["sessions"]:
            if all(session[k] == want[k] for k in ("peer", "local", "interface", "multihop")):
                return dict(session)
        raise LabError(f"krs bfd has no session for handle {sid}")

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.call("events", since=since)["events"]
        return events

    def wait_state(self, sid: int, state: str = "UP", timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.status(sid)
            if last["state"] == state:
                return last
            time.sleep(0.02)
        raise AssertionError(f"krs bfd handle {sid}: {last.get('state')}, wanted {state}: {last}")

    def wait_event(
        self, predicate: Callable[[dict[str, Any]], bool], since: int = 0, timeout: float = 10.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        events: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            events = self.events(since)
            for event in events:
                if predicate(event):
                    return event
            time.sleep(0.01)
        raise AssertionError(f"krs bfd: no matching event within {timeout}s; events: {events[-10:]}")

    def bfd_sessions(self) -> dict[str, BfdView]:
        views: dict[str, BfdView] = {}
        for s in self.service_status()["sessions"]:
            views[s["peer"]] = BfdView(
                peer=s["peer"],
                state=_VIEW_STATE[s["state"]],
                remote_state=_VIEW_STATE[s["remote_state"]],
                diagnostic=s["local_diag"],
                tx_interval_ms=s["tx_interval_us"] // 1000,
                rx_interval_ms=(s["rx_interval_us"] or 0) // 1000 or None,
                detect_multiplier=s["profile"]["multiplier"],
                extra={"detection_time_ms": str((s["detection_time_us"] or 0) // 1000)},
            )
        return views
