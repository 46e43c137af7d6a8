"""`routeserver appliance`: argument parsing, the attributes it originates, and a session over loopback.

The session test runs the appliance (BFD off) against a plain Speaker on 127.0.0.1 acting as the route
server: no namespace, no root.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_network
from pathlib import Path

import pytest

from bgp.api import PeerConfig, PeerStateChanged, RoutesChanged, SpeakerEvent
from bgp.rib.policy import ImportPolicy, PrefixRule
from bgp.speaker import Speaker, to_key
from bgp.types import NO_EXPORT, AsPath, AsPathSegment, LargeCommunity, Origin, SegmentType
from lab.appliance import (
    Appliance,
    ApplianceOptions,
    add_parser,
    options_from_args,
    parse_community,
    parse_peer,
)

VIP = "203.0.113.10/32"
BASE = ["--asn", "65001", "--local-address", "10.0.0.11", "--peer", "10.0.0.1", "--peer-asn", "64512"]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="routeserver")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["appliance", *argv])


def _options(argv: list[str]) -> ApplianceOptions:
    return options_from_args(_parse(argv))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1", ("10.0.0.1", 179)),
        ("10.0.0.1:1179", ("10.0.0.1", 1179)),
        ("2001:db8::1", ("2001:db8::1", 179)),
        ("[2001:db8::1]:8179", ("2001:db8::1", 8179)),
        ("[2001:db8::1]", ("2001:db8::1", 179)),
    ],
)
def test_peer_address_with_and_without_port(text: str, expected: tuple[str, int]) -> None:
    address, port = parse_peer(text)
    assert (str(address), port) == expected


@pytest.mark.parametrize("text", ["rs.example", "10.0.0.1:0", "10.0.0.1:x", "[2001:db8::1", "10.0.0.1:70000"])
def test_bad_peer_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_peer(text)


def test_communities_standard_large_and_well_known() -> None:
    assert parse_community("65001:7") == (65001 << 16) | 7
    assert parse_community("no-export") == NO_EXPORT
    assert parse_community("4200000001:1:2") == LargeCommunity(4200000001, 1, 2)
    for bad in ("70000:1", "a:b", "1", "1:2:3:4"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_community(bad)


def test_a_standby_with_prepend_med_and_communities() -> None:
    options = _options(
        [
            *BASE,
            "--advertise",
            VIP,
            "--advertise",
            "203.0.113.11/32",
            "--prepend",
            "2",
            "--med",
            "50",
            "--community",
            "65001:7",
            "--community",
            "65001:1:2",
            "--bfd-interval-ms",
            "100",
            "--bfd-multiplier",
            "4",
            "--hold-time",
            "9",
        ]
    )
    assert options.router_id == IPv4Address("10.0.0.11")  # from the local address
    assert options.peer_address == IPv4Address("10.0.0.1") and options.peer_port == 179
    assert options.prefixes == (ip_network(VIP), ip_network("203.0.113.11/32"))
    attrs = options.attributes()
    assert attrs.origin is Origin.IGP
    assert attrs.as_path == AsPath((AsPathSegment(SegmentType.AS_SEQUENCE, (65001, 65001)),))
    assert attrs.med == 50
    assert attrs.communities == ((65001 << 16) | 7,)
    assert attrs.large_communities == (LargeCommunity(65001, 1, 2),)
    assert attrs.next_hop is None  # next hop self: our address on the session
    profile = options.bfd_profile()
    assert (profile.min_tx_us, profile.min_rx_us, profile.multiplier) == (100_000, 100_000, 4)
    config = options.peer_config()
    assert config.hold_time == 9 and config.local_address == IPv4Address("10.0.0.11")


def test_defaults_and_next_hop_of_the_right_family() -> None:
    options = _options([*BASE, "--advertise", VIP, "--next-hop", "10.0.0.99", "--no-bfd"])
    assert options.prepend == 0 and options.med is None and not options.bfd
    assert options.attributes().as_path == AsPath()
    config = options.peer_config()
    assert config.next_hop_ipv4 == IPv4Address("10.0.0.99") and config.next_hop_ipv6 is None
    assert options.hold_time == 90 and options.bfd_interval_ms == 300 and options.bfd_multiplier == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "nothing to advertise"),
        (["--advertise", VIP, "--peer-asn", "65001", "--prepend", "1"], "eBGP"),
        (["--advertise", VIP, "--local-address", "2001:db8::2"], "same address family"),
        (["--advertise", VIP, "--hold-time", "2"], "at least 3"),
        (["--advertise", VIP, "--router-id", "0.0.0.0"], "non-zero"),
        (["--advertise", VIP, "--router-id", "2001:db8::1"], "IPv4"),
    ],
)
def test_inconsistent_arguments_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _options([*BASE, *argv])


def test_router_id_is_needed_without_an_ipv4_local_address() -> None:
    args = _parse(["--asn", "65001", "--peer", "2001:db8::1", "--peer-asn", "64512", "--advertise", VIP])
    with pytest.raises(ValueError, match="--router-id"):
        options_from_args(args)
    args = _parse(
        [
            *("--asn", "65001", "--peer", "[2001:db8::1]:1179", "--peer-asn", "64512", "--advertise", VIP),
            *("--router-id", "192.0.2.1", "--local-address", "2001:db8::2"),
        ]
    )
    options = options_from_args(args)
    assert options.local_address == IPv6Address("2001:db8::2") and options.peer_port == 1179


@pytest.mark.parametrize(
    "argv",
    [
        [*BASE, "--advertise", "203.0.113.10/24"],  # host bits set
        [*BASE, "--advertise", VIP, "--prepend", "33"],
        [*BASE, "--advertise", VIP, "--bfd-interval-ms", "5"],
        [*BASE, "--advertise", VIP, "--bfd-multiplier", "0"],
        [*BASE, "--advertise", VIP, "--med", "-1"],
        ["--asn", "0", *BASE[2:], "--advertise", VIP],
    ],
)
def test_argparse_refuses_bad_values(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


async def _until(events: asyncio.Queue[SpeakerEvent], predicate: Callable[[SpeakerEvent], bool]) -> None:
    async def scan() -> None:
        while not predicate(await events.get()):
            pass

    await asyncio.wait_for(scan(), 20)


async def test_appliance_advertises_its_prefix_and_withdraws_it_on_stop() -> None:
    """The route server side sees the VIP with our prepended path, MED and communities, then loses it."""
    rs = Speaker(64512, "10.0.0.1", ["127.0.0.1"], 0)
    await rs.start()
    events: asyncio.Queue[SpeakerEvent] = asyncio.Queue()
    rs.add_listener(events.put_nowait)
    allow = ImportPolicy(allowed=(PrefixRule(ip_network("203.0.113.0/24"), le=32),))
    await rs.add_peer(
        PeerConfig(IPv4Address("127.0.0.2"), 65001, passive=True, hold_time=9, import_policy=allow)
    )
    port = rs.listening()[0][1]
    options = _options(
        [
            *("--asn", "65001", "--local-address", "127.0.0.2", "--peer", f"127.0.0.1:{port}"),
            *("--peer-asn", "64512", "--advertise", VIP, "--prepend", "2", "--med", "50"),
            *("--community", "65001:7", "--no-bfd", "--listen-port", "0", "--connect-retry", "1"),
            *("--next-hop", "198.51.100.7"),  # a loopback next hop would be refused (RFC 7606 §7.3)
        ]
    )
    appliance = Appliance(options)
    key = to_key(VIP)
    try:
        await appliance.start()
        await _until(events, lambda e: isinstance(e, RoutesChanged) and rs.loc_rib.best(key) is not None)
        best = rs.loc_rib.best(key)
        assert best is not None
        assert best.attributes.as_path.asns() == (65001, 65001, 65001)  # 2 prepends + the eBGP export
        assert best.attributes.med == 50
        assert best.attributes.communities == ((65001 << 16) | 7,)
        assert best.attributes.next_hop == IPv4Address("198.51.100.7")
        await appliance.stop()
        await _until(events, lambda e: isinstance(e, PeerStateChanged) and e.old.value == "Established")
        assert rs.loc_rib.best(key) is None
    finally:
        await appliance.stop()
        await rs.stop()


def test_prefixes_from_a_file_join_the_command_line(tmp_path: Path) -> None:
    listing = tmp_path / "vips.txt"
    listing.write_text("# VIPs of the pool\n203.0.113.11/32\n\n203.0.113.12/32  # second\n" + VIP + "\n")
    options = _options([*BASE, "--advertise", VIP, "--advertise-file", str(listing)])
    assert options.prefixes == tuple(
        ip_network(p) for p in (VIP, "203.0.113.11/32", "203.0.113.12/32")
    )  # in order, once each


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file"),
        ("203.0.113.11/32\n203.0.113.300/32\n", "line 2"),
        ("# none\n", "nothing to advertise"),
    ],
)
def test_a_bad_or_empty_prefix_file_is_refused_with_its_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    listing = tmp_path / "vips.txt"
    if content is not None:
        listing.write_text(content)
    with pytest.raises(ValueError, match=message):
        _options([*BASE, "--advertise-file", str(listing)])
