"""Peer-down cost: a peer with N single-path prefixes goes down without graceful restart.

One peer announces N IPv4 /32 prefixes (default 1,000,000) in UPDATE-sized batches through its
AdjRibIn into the LocRib; no other peer has a path for them, so every prefix leaves the Loc-RIB.
Timed, as medians of 3 runs (each on a freshly loaded RIB):
  - `LocRib.remove_peer` alone (the RibChange list included),
  - the same with a second peer's standby path for every prefix (failover: every prefix moves),
  - the speaker's peer-down path (`Speaker._flush_peer`: AdjRibIn.clear, LocRib.remove_peer and
    the tuple of RibChanges the RoutesChanged event carries), run on a real Speaker object.

    .venv/bin/python bench/rib_withdraw.py [--prefixes 1000000] [--per-update 500]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Callable
from ipaddress import IPv4Address

from bgp.api import PeerConfig, RoutesChanged, SpeakerEvent
from bgp.rib import ALLOW_ALL, AdjRibIn, LocRib, PeerInfo
from bgp.speaker import Speaker
from bgp.types import IPV4_UNICAST, AsPath, AsPathSegment, Origin, PathAttributes, SegmentType

PEER = PeerInfo("peer1", IPv4Address("198.51.100.1"), 65001, IPv4Address("203.0.113.1"), 4_200_000_000)
STANDBY = PeerInfo("peer2", IPv4Address("198.51.100.2"), 65002, IPv4Address("203.0.113.2"), 4_200_000_000)


def load(rib_in: AdjRibIn, loc: LocRib, keys: list[int], per_update: int) -> None:
    attributes = PathAttributes(
        origin=Origin.IGP,
        as_path=AsPath((AsPathSegment(SegmentType.AS_SEQUENCE, (65001, 65100)),)),
        next_hop=PEER.address,
    )
    for start in range(0, len(keys), per_update):
        for batch in rib_in.announce(IPV4_UNICAST, keys[start : start + per_update], attributes).changes:
            loc.apply(batch)
    assert len(loc) == len(keys)


def median_of_3(label: str, count: int, prepare: Callable[[], Callable[[], int]]) -> None:
    times: list[float] = []
    for _ in range(3):
        run = prepare()
        gc.collect()
        start = time.perf_counter()
        changes = run()
        times.append(time.perf_counter() - start)
        assert changes == count, (changes, count)
    median = statistics.median(times)
    runs = ", ".join(f"{t:.3f}" for t in times)
    print(f"  {label:<48} median {median:.3f} s ({median / count * 1e9:,.0f} ns/prefix; runs {runs})")


def rib_only(keys: list[int], per_update: int) -> Callable[[], int]:
    loc = LocRib()
    rib_in = AdjRibIn(PEER, ALLOW_ALL)
    loc.attach(PEER.peer_id, rib_in)
    load(rib_in, loc, keys, per_update)

    def run() -> int:
        changes = loc.remove_peer(PEER.peer_id)
        rib_in.clear()
        return len(changes)

    return run


def with_standby(keys: list[int], per_update: int) -> Callable[[], int]:
    """As `rib_only`, with a second peer's worse path for every prefix: failover, all prefixes move."""
    loc = LocRib()
    rib_in, standby = AdjRibIn(PEER, ALLOW_ALL), AdjRibIn(STANDBY, ALLOW_ALL)
    loc.attach(PEER.peer_id, rib_in)
    loc.attach(STANDBY.peer_id, standby)
    load(rib_in, loc, keys, per_update)
    longer = PathAttributes(
        origin=Origin.IGP,
        as_path=AsPath((AsPathSegment(SegmentType.AS_SEQUENCE, (65002, 65100, 65100)),)),
        next_hop=STANDBY.address,
    )
    for start in range(0, len(keys), per_update):
        for batch in standby.announce(IPV4_UNICAST, keys[start : start + per_update], longer).changes:
            loc.apply(batch)

    def run() -> int:
        changes = loc.remove_peer(PEER.peer_id)
        rib_in.clear()
        assert all(change.new_best is not None for change in changes)
        return len(changes)

    return run


def speaker_path(keys: list[int], per_update: int) -> Callable[[], int]:
    """A Speaker with one configured peer whose Adj-RIB-In holds the feed; times `_flush_peer`."""
    loop = asyncio.new_event_loop()
    speaker = Speaker(65000, "203.0.113.254", listen=False)
    config = PeerConfig(peer_id=PEER.peer_id, peer_address=PEER.address, peer_asn=PEER.asn, passive=True)
    loop.run_until_complete(speaker.add_peer(config))
    peer = speaker._peers[PEER.peer_id]
    peer.adj = AdjRibIn(PEER, ALLOW_ALL)
    speaker.loc_rib.attach(PEER.peer_id, peer.adj)
    load(peer.adj, speaker.loc_rib, keys, per_update)
    published: list[SpeakerEvent] = []
    speaker.add_listener(published.append)

    def run() -> int:
        speaker._flush_peer(peer)
        event = published[-1]
        assert isinstance(event, RoutesChanged)
        loop.run_until_complete(speaker.stop())
        loop.close()
        return len(event.changes)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prefixes", type=int, default=1_000_000)
    parser.add_argument("--per-update", type=int, default=500)
    args = parser.parse_args()
    keys = [((0x0A000000 + index) << 8) | 32 for index in range(args.prefixes)]
    print(f"{args.prefixes:,} IPv4 /32 prefixes from one peer, one path each, peer goes down")
    median_of_3("LocRib.remove_peer", args.prefixes, lambda: rib_only(keys, args.per_update))
    median_of_3(
        "LocRib.remove_peer, a standby for every prefix",
        args.prefixes,
        lambda: with_standby(keys, args.per_update),
    )
    median_of_3(
        "Speaker._flush_peer (peer-down path)", args.prefixes, lambda: speaker_path(keys, args.per_update)
    )


if __name__ == "__main__":
    main()
