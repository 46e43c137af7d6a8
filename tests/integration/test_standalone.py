"""`routeserver run -f` in a lab: two appliances (FRR active, BIRD standby prepending) advertise a VIP.

Topology: host rs runs the route server as a process (admin on 127.0.0.1 inside its namespace); fw-a
(FRR, AS 65001) on 10.0.1.0/24 and fw-b (BIRD, AS 65002) on 10.0.2.0/24 peer with it over BGP and
BFD (100 ms x 3). The VIP must land in rs's kernel table 100 via the active appliance, move to the
standby when the active one withdraws it or freezes (BFD, well inside the 9 s hold time), come
back, survive a SIGHUP reload without dropping sessions, and leave the table on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.daemons.base import BfdTimers, Neighbor, Route
from tests.support.daemons.bird import BirdDaemon
from tests.support.daemons.frr import FrrDaemon
from tests.support.netns import Host, Lab, ManagedProcess, wait_until
from tests.support.prereq import REPO_ROOT

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.slow]

VIP = "203.0.113.10/32"
TABLE = 100
ACTIVE, STANDBY = "10.0.1.2", "10.0.2.2"
BFD = BfdTimers(min_tx_ms=100, min_rx_ms=100, multiplier=3)
HOLD = 9

CONFIG = """\
apiVersion: routeserver.dev/v1alpha1
kind: RouteServer
metadata:
  name: vip
spec:
  asn: 64512
  importPolicy:
    allowedPrefixes:
      - prefix: 203.0.113.0/24
        ge: 32
        le: 32
  bfdProfile:
    minTxIntervalMilliseconds: 100
    detectMultiplier: 3
---
apiVersion: routeserver.dev/v1alpha1
kind: RouteTableAssociation
metadata:
  name: vip-table
spec:
  routeServerRef:
    name: vip
  target:
    node:
      table: 100
"""

PEER = """\
---
apiVersion: routeserver.dev/v1alpha1
kind: RouteServerPeer
metadata:
  name: {name}
spec:
  routeServerRef:
    name: vip
  peerAddress: {address}
  peerASN: {asn}
  timers:
    holdTimeSeconds: 9
    connectRetryTimeSeconds: 1
"""


@dataclass
class Setup:
    rs: Host
    fw_a: FrrDaemon
    fw_b: BirdDaemon
    proc: ManagedProcess
    config: Any

    def log(self) -> str:
        return self.proc.log_text()[-6000:]

    def status(self) -> dict[str, Any]:
        done = self.rs.run(
            sys.executable, "-m", "controller.cli", "status", "--json", check=False, timeout=20
        )
        if done.returncode != 0:
            raise AssertionError(f"status failed: {done.stderr}\n{self.log()}")
        data: dict[str, Any] = json.loads(done.stdout)
        return data

    def peer(self, name: str) -> dict[str, Any]:
        (rs,) = self.status()["route_servers"]
        peer: dict[str, Any] = next(p for p in rs["peers"] if p["name"] == name)
        return peer

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            wait_until(predicate, timeout, interval=0.05, what=what)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nkernel table: {kernel_routes(self.rs)}\nrouteserver log:\n{self.log()}"
            ) from None


def _gateways_of_nexthop(host: Host, nhid: int) -> set[str]:
    (nh,) = json.loads(host.run("ip", "-j", "nexthop", "show", "id", str(nhid)).stdout)
    if "gateway" in nh:
        return {nh["gateway"]}
    found: set[str] = set()
    for member in nh.get("group", []):
        found |= _gateways_of_nexthop(host, member["id"])
    return found


def kernel_routes(host: Host, table: int = TABLE) -> dict[str, set[str]]:
    """prefix -> gateways of every route in a kernel table (plain, multipath or nexthop objects)."""
    done = host.run("ip", "-j", "route", "show", "table", str(table), check=False)
    if done.returncode != 0:
        assert "does not exist" in done.stderr, done.stderr  # nothing was ever written there
        return {}
    out = done.stdout.strip()
    routes: dict[str, set[str]] = {}
    for route in json.loads(out or "[]"):
        dst = route["dst"] if "/" in route["dst"] else route["dst"] + "/32"
        hops = {route["gateway"]} if "gateway" in route else set()
        hops |= {nh["gateway"] for nh in route.get("nexthops", []) if "gateway" in nh}
        if not hops and "nhid" in route:
            hops = _gateways_of_nexthop(host, route["nhid"])
        routes[dst] = hops
    return routes


def routed_via(host: Host, gateway: str) -> Callable[[], bool]:
    return lambda: kernel_routes(host).get(VIP) == {gateway}


def write_config(path: Any, peers: list[tuple[str, str, int]]) -> None:
    text = CONFIG + "".join(PEER.format(name=n, address=a, asn=asn) for n, a, asn in peers)
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def setup(lab: Lab) -> Iterator[Setup]:
    rs, a, b = lab.host("rs"), lab.host("fw-a"), lab.host("fw-b")
    lab.link(rs, a, ["10.0.1.1/24"], [f"{ACTIVE}/24"])
    lab.link(rs, b, ["10.0.2.1/24"], [f"{STANDBY}/24"])
    config = rs.workdir / "routeserver.yaml"
    write_config(config, [("fw-a", ACTIVE, 65001), ("fw-b", STANDBY, 65002)])
    proc = rs.popen(
        [sys.executable, "-m", "controller.cli", "run", "-f", str(config), "--watch-interval", "0"],
        name="routeserver",
        cwd=REPO_ROOT,
    )
    fw_a = FrrDaemon(
        a,
        asn=65001,
        router_id=ACTIVE,
        neighbors=[Neighbor("10.0.1.1", 64512, bfd=BFD, hold_time=HOLD, connect_retry=1)],
        routes=[Route(VIP)],
    )
    fw_b = BirdDaemon(
        b,
        asn=65002,
        router_id=STANDBY,
        neighbors=[Neighbor("10.0.2.1", 64512, bfd=BFD, hold_time=HOLD, connect_retry=1)],
        routes=[Route(VIP, as_path_prepend=2)],  # the standby
    )
    fw_a.start()
    fw_b.start()
    state = Setup(rs, fw_a, fw_b, proc, config)
    state.wait(routed_via(rs, ACTIVE), 40, "the VIP via the active appliance")
    yield state


def test_vip_goes_to_the_active_appliance_and_fails_over_on_withdraw(setup: Setup) -> None:
    s = setup
    s.wait(lambda: s.peer("fw-a")["bfd"]["state"] == "Up", 20, "BFD up with fw-a")
    (rs,) = s.status()["route_servers"]
    assert rs["fib"] == [{"prefix": VIP, "nexthops": [ACTIVE]}]
    peers = {p["name"]: p for p in rs["peers"]}
    assert peers["fw-a"]["bgp_state"] == peers["fw-b"]["bgp_state"] == "Established"
    assert peers["fw-a"]["prefixes_accepted"] == peers["fw-b"]["prefixes_accepted"] == 1
    (table,) = rs["tables"]
    assert table["table_id"] == TABLE and table["installed"] == [{"prefix": VIP, "nexthops": [ACTIVE]}]

    # The admin endpoints answer inside the namespace.
    fetch = "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())"
    metrics = s.rs.run(sys.executable, "-c", fetch, "http://127.0.0.1:9179/metrics").stdout
    assert 'routeserver_bgp_session_up{peer="fw-a",route_server="vip"} 1.0' in metrics
    assert 'routeserver_table_routes_installed{route_server="vip",table="vip-table"} 1.0' in metrics
    assert s.rs.run(sys.executable, "-c", fetch, "http://127.0.0.1:9179/healthz").stdout.strip() == "ok"
    text = s.rs.run(sys.executable, "-m", "controller.cli", "status").stdout
    assert "fw-a" in text and "Established" in text and VIP in text

    # The active appliance withdraws: the standby's path is installed; it re-advertises: back.
    s.fw_a.withdraw([VIP])
    s.wait(routed_via(s.rs, STANDBY), 10, "failover to the standby after the withdraw")
    s.fw_a.advertise([Route(VIP)])
    s.wait(routed_via(s.rs, ACTIVE), 10, "failback to the active appliance")

    # SIGHUP reload with a new peer: the existing sessions are not touched.
    before = s.peer("fw-a")["established_count"]
    write_config(s.config, [("fw-a", ACTIVE, 65001), ("fw-b", STANDBY, 65002), ("fw-c", "10.0.3.2", 65003)])
    s.proc.signal(signal.SIGHUP)
    s.wait(lambda: s.status()["config"]["generation"] == 2, 10, "the reload applied")
    status = s.status()
    names = [p["name"] for p in status["route_servers"][0]["peers"]]
    assert names == ["fw-a", "fw-b", "fw-c"]
    fw_a = next(p for p in status["route_servers"][0]["peers"] if p["name"] == "fw-a")
    assert fw_a["bgp_state"] == "Established" and fw_a["established_count"] == before

    # A broken edit is refused and the running configuration stays.
    s.config.write_text("kind: RouteServer\n")
    s.proc.signal(signal.SIGHUP)
    s.wait(lambda: s.status()["config"]["last_error"] is not None, 10, "the refused reload")
    assert s.status()["config"]["generation"] == 2
    assert kernel_routes(s.rs).get(VIP) == {ACTIVE}

    # SIGTERM: routes withdrawn (no persistRoutes), sessions closed, clean exit.
    s.proc.signal(signal.SIGTERM)
    assert s.proc.wait(timeout=20) == 0, s.log()
    assert VIP not in kernel_routes(s.rs)
    wait_until(
        lambda: s.fw_a.session_state("10.0.1.1") != "Established", 10, what="fw-a sees the session close"
    )


def test_bfd_moves_the_vip_when_the_active_appliance_freezes(setup: Setup) -> None:
    s = setup
    s.wait(lambda: s.peer("fw-a")["bfd"]["state"] == "Up", 20, "BFD up with fw-a")
    s.fw_a.wait_bfd("10.0.1.1", "Up", timeout=10)
    started = time.monotonic()
    s.fw_a.host.freeze()
    s.wait(routed_via(s.rs, STANDBY), 5, "BFD failover to the standby")
    elapsed = time.monotonic() - started
    # Detection is 300 ms; the hold timer (9 s) must not be what moved it.
    assert elapsed < HOLD / 3, f"failover took {elapsed:.2f}s"
    fw_a = s.peer("fw-a")
    assert fw_a["last_transition_reason"] == "BfdDown", fw_a
    assert fw_a["bfd"]["down_count"] == 1
    assert fw_a["bgp_state"] != "Established"

    s.fw_a.host.unfreeze()
    s.wait(routed_via(s.rs, ACTIVE), 30, "the active appliance back after the freeze")
    s.wait(lambda: s.peer("fw-a")["bfd"]["state"] == "Up", 20, "BFD up again")
