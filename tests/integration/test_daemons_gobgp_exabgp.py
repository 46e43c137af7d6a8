"""GoBGP and ExaBGP fixtures: sessions, exact attributes, withdraw, TCP-MD5, 4-octet ASNs, cross-daemon."""

from __future__ import annotations

import time

import pytest

from tests.support.daemons.base import Neighbor, Route, RoutingDaemon
from tests.support.daemons.bird import BirdDaemon
from tests.support.daemons.exabgp import ExabgpDaemon
from tests.support.daemons.frr import FrrDaemon
from tests.support.daemons.gobgp import GobgpDaemon
from tests.support.netns import Lab

pytestmark = [pytest.mark.netns, pytest.mark.interop]

ROUTES_A = [
    Route(
        "203.0.113.10/32",
        med=50,
        communities=("65001:7",),
        as_path_prepend=2,
        large_communities=("65001:1:2",),
    ),
    Route("2001:db8:100::/48", med=20),
]
ROUTES_B = [Route("198.51.100.0/25", med=30, communities=("64512:9",)), Route("2001:db8:200::/48")]


def _hosts(lab: Lab) -> tuple:  # type: ignore[type-arg]
    a, b = lab.host("a"), lab.host("b")
    lab.link(a, b, ["10.0.0.1/24", "2001:db8::1/64"], ["10.0.0.2/24", "2001:db8::2/64"])
    return a, b


def _wait_gone(daemon: RoutingDaemon, prefix: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while prefix in daemon.received_routes():
        assert time.monotonic() < deadline, f"{daemon.kind} still has {prefix}"
        time.sleep(0.1)


@pytest.mark.parametrize("transport", ["ipv4", "ipv6"])
def test_gobgp_and_exabgp_exchange_routes(lab: Lab, transport: str) -> None:
    a, b = _hosts(lab)
    addr_a, addr_b = ("10.0.0.1", "10.0.0.2") if transport == "ipv4" else ("2001:db8::1", "2001:db8::2")
    gobgp = GobgpDaemon(
        a, asn=65001, router_id="10.0.0.1", neighbors=[Neighbor(addr_b, 4200000002)], routes=ROUTES_A
    )
    exa = ExabgpDaemon(
        b, asn=4200000002, router_id="10.0.0.2", neighbors=[Neighbor(addr_a, 65001)], routes=ROUTES_B
    )
    gobgp.start()
    exa.start()
    gobgp.wait_session(addr_b)
    exa.wait_session(addr_a)

    got = exa.wait_routes(["203.0.113.10/32", "2001:db8:100::/48"])
    assert got["203.0.113.10/32"].as_path == (65001, 65001, 65001)
    assert got["203.0.113.10/32"].med == 50
    assert got["203.0.113.10/32"].communities == ("65001:7",)
    assert got["203.0.113.10/32"].large_communities == ("65001:1:2",)
    got = gobgp.wait_routes(["198.51.100.0/25", "2001:db8:200::/48"])
    assert got["198.51.100.0/25"].as_path == (4200000002,)
    assert got["198.51.100.0/25"].med == 30
    assert got["198.51.100.0/25"].communities == ("64512:9",)

    exa.advertise([Route("198.51.100.128/25", med=7)])
    assert gobgp.wait_routes(["198.51.100.128/25"])["198.51.100.128/25"].med == 7
    exa.withdraw(["198.51.100.128/25"])
    _wait_gone(gobgp, "198.51.100.128/25")
    gobgp.withdraw(["203.0.113.10/32"])
    _wait_gone(exa, "203.0.113.10/32")


def test_gobgp_and_exabgp_with_tcp_md5(lab: Lab) -> None:
    a, b = _hosts(lab)
    gobgp = GobgpDaemon(
        a, asn=65001, router_id="10.0.0.1", neighbors=[Neighbor("10.0.0.2", 65002, password="md5-secret")]
    )
    exa = ExabgpDaemon(
        b, asn=65002, router_id="10.0.0.2", neighbors=[Neighbor("10.0.0.1", 65001, password="md5-secret")]
    )
    gobgp.start()
    exa.start()
    gobgp.wait_session("10.0.0.2")


def test_gobgp_with_frr(lab: Lab) -> None:
    a, b = _hosts(lab)
    gobgp = GobgpDaemon(
        a, asn=65001, router_id="10.0.0.1", neighbors=[Neighbor("10.0.0.2", 65002)], routes=ROUTES_A
    )
    frr = FrrDaemon(
        b, asn=65002, router_id="10.0.0.2", neighbors=[Neighbor("10.0.0.1", 65001)], routes=ROUTES_B
    )
    gobgp.start()
    frr.start()
    frr.wait_session("10.0.0.1")
    assert frr.wait_routes(["203.0.113.10/32"])["203.0.113.10/32"].as_path == (65001, 65001, 65001)
    assert gobgp.wait_routes(["198.51.100.0/25"])["198.51.100.0/25"].med == 30


def test_exabgp_with_bird(lab: Lab) -> None:
    a, b = _hosts(lab)
    exa = ExabgpDaemon(
        a, asn=65001, router_id="10.0.0.1", neighbors=[Neighbor("10.0.0.2", 65002)], routes=ROUTES_A
    )
    bird = BirdDaemon(
        b, asn=65002, router_id="10.0.0.2", neighbors=[Neighbor("10.0.0.1", 65001)], routes=ROUTES_B
    )
    exa.start()
    bird.start()
    bird.wait_session("10.0.0.1")
    got = bird.wait_routes(["203.0.113.10/32"])["203.0.113.10/32"]
    assert got.as_path == (65001, 65001, 65001) and got.med == 50
    assert exa.wait_routes(["198.51.100.0/25"])["198.51.100.0/25"].communities == ("64512:9",)
