"""FRR and BIRD fixtures against each other: BGP + BFD, IPv4/IPv6, attributes, withdraw, freeze, MD5."""

from __future__ import annotations

import time

import pytest

from tests.support.daemons.base import BfdTimers, Neighbor, Route
from tests.support.daemons.bird import BirdDaemon
from tests.support.daemons.frr import FrrDaemon
from tests.support.netns import Lab

pytestmark = [pytest.mark.netns, pytest.mark.interop]

FAST_BFD = BfdTimers(min_tx_ms=100, min_rx_ms=100, multiplier=3)


def _pair(lab: Lab, transport: str, **neighbor: object) -> tuple[FrrDaemon, BirdDaemon, str, str]:
    a, b = lab.host("frr"), lab.host("bird")
    lab.link(a, b, ["10.0.0.1/24", "2001:db8::1/64"], ["10.0.0.2/24", "2001:db8::2/64"])
    frr_addr, bird_addr = ("10.0.0.1", "10.0.0.2") if transport == "ipv4" else ("2001:db8::1", "2001:db8::2")
    frr = FrrDaemon(
        a,
        asn=65001,
        router_id="10.0.0.1",
        neighbors=[Neighbor(bird_addr, 4200000002, **neighbor)],  # type: ignore[arg-type]
        routes=[
            Route(
                "203.0.113.10/32",
                med=50,
                communities=("65001:7",),
                as_path_prepend=2,
                large_communities=("65001:1:2",),
            ),
            Route("2001:db8:100::/48", med=20),
        ],
    )
    bird = BirdDaemon(
        b,
        asn=4200000002,
        router_id="10.0.0.2",
        neighbors=[Neighbor(frr_addr, 65001, **neighbor)],  # type: ignore[arg-type]
        routes=[Route("198.51.100.0/25", med=30, communities=("64512:9",)), Route("2001:db8:200::/48")],
    )
    frr.start()
    bird.start()
    return frr, bird, frr_addr, bird_addr


@pytest.mark.parametrize("transport", ["ipv4", "ipv6"])
def test_frr_and_bird_exchange_routes_with_bfd(lab: Lab, transport: str) -> None:
    frr, bird, frr_addr, bird_addr = _pair(lab, transport, bfd=FAST_BFD)
    bird.wait_session(frr_addr)
    frr.wait_session(bird_addr)

    got = bird.wait_routes(["203.0.113.10/32", "2001:db8:100::/48"])
    assert got["203.0.113.10/32"].as_path == (65001, 65001, 65001)
    assert got["203.0.113.10/32"].med == 50
    assert got["203.0.113.10/32"].communities == ("65001:7",)
    assert got["203.0.113.10/32"].large_communities == ("65001:1:2",)
    assert got["2001:db8:100::/48"].med == 20
    got = frr.wait_routes(["198.51.100.0/25", "2001:db8:200::/48"])
    assert got["198.51.100.0/25"].as_path == (4200000002,)
    assert got["198.51.100.0/25"].communities == ("64512:9",)

    assert frr.wait_bfd(bird_addr).state == "Up"
    assert bird.wait_bfd(frr_addr).state == "Up"

    frr.withdraw(["203.0.113.10/32"])
    deadline = time.monotonic() + 10
    while "203.0.113.10/32" in bird.received_routes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "203.0.113.10/32" not in bird.received_routes()


def test_frozen_peer_takes_bfd_down(lab: Lab) -> None:
    frr, bird, frr_addr, bird_addr = _pair(lab, "ipv4", bfd=FAST_BFD)
    frr.wait_bfd(bird_addr)
    bird.wait_bfd(frr_addr)
    frr.host.freeze()
    view = bird.wait_bfd(frr_addr, "Down", timeout=3)
    assert view.state == "Down"


def test_tcp_md5_matching_password_establishes(lab: Lab) -> None:
    frr, bird, frr_addr, bird_addr = _pair(lab, "ipv4", password="s3cret-md5")
    bird.wait_session(frr_addr)
    frr.wait_session(bird_addr)
