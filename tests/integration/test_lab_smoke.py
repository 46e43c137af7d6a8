"""The network-namespace lab: hosts, links, addresses, freezing, teardown, root namespace untouched."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.netns import Host, Lab, LabError, check_address, wait_until

pytestmark = pytest.mark.netns


def _root_snapshot() -> tuple[str, str]:
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True).stdout
    routes = subprocess.run(
        ["ip", "route", "show", "table", "all"], capture_output=True, text=True, check=True
    ).stdout
    return links, routes


def _ping(host: Host, address: str) -> bool:
    return host.run("ping", "-c", "1", "-W", "1", address, check=False, timeout=5).returncode == 0


def test_addresses_outside_the_lab_ranges_are_refused() -> None:
    for bad in ("192.0.2.10/24", "fd00::5/64", "172.16.0.1/24", "8.8.8.8/32"):
        with pytest.raises(LabError):
            check_address(bad)
    for good in ("10.1.2.3/24", "198.51.100.1/24", "203.0.113.10/32", "2001:db8:1::1/64"):
        assert check_address(good)


def test_two_hosts_reach_each_other_over_ipv4_and_ipv6(lab: Lab) -> None:
    before = _root_snapshot()
    a, b = lab.host("a"), lab.host("b")
    link = lab.link(a, b, ["10.0.0.1/24", "2001:db8::1/64"], ["10.0.0.2/24", "2001:db8::2/64"])
    assert link.a_ifname in a.interfaces() and link.b_ifname in b.interfaces()
    assert "10.0.0.2/24" in b.addresses()
    assert _ping(a, "10.0.0.2")
    assert _ping(a, "2001:db8::2")
    assert _root_snapshot() == before, "the lab changed the root namespace"
    with pytest.raises(LabError):
        lab.link(a, b, ["192.0.2.50/24"], [])


def test_freeze_drops_traffic_with_the_carrier_still_up(lab: Lab) -> None:
    a, b = lab.host("a"), lab.host("b")
    link = lab.link(a, b, ["10.0.0.1/24"], ["10.0.0.2/24"])
    assert _ping(a, "10.0.0.2")
    b.freeze()
    assert not _ping(a, "10.0.0.2")
    state = b.run("ip", "-br", "link", "show", link.b_ifname).stdout
    assert " UP " in f" {state} ", f"carrier lost while frozen: {state}"
    b.unfreeze()
    wait_until(lambda: _ping(a, "10.0.0.2"), timeout=5, what="traffic after unfreeze")


def test_close_stops_processes_and_deletes_namespaces() -> None:
    lab = Lab("closing")
    try:
        host = lab.host("h")
        proc = host.popen(["sleep", "300"], name="sleeper")
        assert proc.alive()
        netns = host.netns
        workdir = Path(lab.workdir)
    finally:
        lab.close()
    assert not proc.alive()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert netns not in listed
    assert not workdir.exists()
    lab.close()  # idempotent
