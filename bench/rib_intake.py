"""Intake throughput: prefixes/s through import policy + AdjRibIn + LocRib (bgp.rib).

Feeds a synthetic full table as UPDATE-sized batches (prefixes sharing one interned attribute
set), the way the speaker feeds decoded `Reach`es, and reports prefixes per second for:
  - first feed from one peer (every prefix new),
  - the same feed from a second peer (every prefix gets a second candidate: decision runs),
  - re-announcement of the first feed (no change: the GR refresh / route-refresh case),
  - withdrawal of the first peer via LocRib.remove_peer (the failover case; bench/rib_withdraw.py
    times a peer whose prefixes have no other path).
Policies: allow-all (single 0/0 le 32 rule) and a 200-rule prefix list.

    .venv/bin/python bench/rib_intake.py [--prefixes 1000000] [--per-update 20]
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network

from bgp.rib import AdjRibIn, ImportPolicy, LocRib, PeerInfo, PrefixRule
from bgp.types import IPV4_UNICAST, AsPath, AsPathSegment, Origin, PathAttributes, SegmentType

Feed = list[tuple[list[int], PathAttributes]]


def make_feed(count: int, per_update: int, first_asn: int, seed: int) -> Feed:
    """`count` distinct IPv4 prefixes (/16../24) in batches of `per_update`, one attribute set each."""
    rng = random.Random(seed)
    seen: set[int] = set()
    keys: list[int] = []
    while len(keys) < count:
        length = rng.choice((16, 19, 20, 21, 22, 23, 24, 24, 24, 24))
        address = rng.getrandbits(length) << (32 - length)
        key = (address << 8) | length
        if key not in seen:
            seen.add(key)
            keys.append(key)
    keys.sort()
    feed = []
    for start in range(0, count, per_update):
        path = (first_asn, *(rng.randrange(1, 400_000) for _ in range(rng.randrange(1, 6))))
        attributes = PathAttributes(
            origin=Origin.IGP,
            as_path=AsPath((AsPathSegment(SegmentType.AS_SEQUENCE, path),)),
            next_hop=IPv4Address("198.51.100.1") + first_asn % 200,
            med=rng.choice((None, 0, 10)),
        )
        feed.append((keys[start : start + per_update], attributes))
    return feed


def standby_feed(feed: Feed, asn: int) -> Feed:
    """The same prefixes from a second peer with a fixed 3-AS path (ties or loses per prefix)."""
    return [
        (
            keys,
            PathAttributes(
                origin=attributes.origin,
                as_path=AsPath((AsPathSegment(SegmentType.AS_SEQUENCE, (asn, 1, 2)),)),
                next_hop=IPv4Address("198.51.100.2"),
            ),
        )
        for keys, attributes in feed
    ]


def peer(index: int) -> PeerInfo:
    return PeerInfo(
        f"peer{index}",
        IPv4Address("198.51.100.1") + index,
        65000 + index,
        IPv4Address("203.0.113.1") + index,
        4_200_000_000,
    )


def timed(label: str, prefixes: int, run: Callable[[], int]) -> None:
    gc.collect()
    start = time.perf_counter()
    changes = run()
    elapsed = time.perf_counter() - start
    rate = prefixes / elapsed
    print(f"  {label:<40} {rate:>12,.0f} prefixes/s  ({elapsed:.2f} s, {changes:,} RibChanges)")


def feed(rib: AdjRibIn, loc: LocRib, batches: Feed) -> int:
    """What the speaker does per Reach: AdjRibIn.announce, then LocRib.apply per returned batch."""
    total = 0
    for keys, attributes in batches:
        for batch in rib.announce(IPV4_UNICAST, keys, attributes).changes:
            total += len(loc.apply(batch))
    return total


def run_policy(policy: ImportPolicy, feed_a: Feed, feed_b: Feed, count: int) -> None:
    loc = LocRib(max_paths=4)
    rib_a = AdjRibIn(peer(1), policy)
    rib_b = AdjRibIn(peer(2), policy)
    loc.attach("peer1", rib_a)  # as the speaker does: the Loc-RIB lists each peer's keys from it
    loc.attach("peer2", rib_b)
    timed("peer A full feed (all new)", count, lambda: feed(rib_a, loc, feed_a))
    timed("peer B same prefixes (2 candidates)", count, lambda: feed(rib_b, loc, feed_b))
    timed("peer A re-announces (no change)", count, lambda: feed(rib_a, loc, feed_a))
    timed("peer A down: LocRib.remove_peer", count, lambda: len(loc.remove_peer("peer1")))
    rib_a.clear()
    timed(
        "AdjRibIn alone (policy + table)",
        count,
        lambda: sum(len(rib_a.announce(IPV4_UNICAST, k, a).changes) for k, a in feed_a),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prefixes", type=int, default=1_000_000)
    parser.add_argument("--per-update", type=int, default=20)
    args = parser.parse_args()
    rng = random.Random(7)
    many = [PrefixRule(IPv4Network((rng.getrandbits(8) << 24, 8)), le=24) for _ in range(100)]
    many += [PrefixRule(IPv4Network((rng.getrandbits(16) << 16, 16)), ge=17, le=24) for _ in range(100)]
    many.append(PrefixRule(IPv4Network("0.0.0.0/0"), le=24))  # every generated prefix still passes
    feed_a = make_feed(args.prefixes, args.per_update, 65001, 1)
    feed_b = standby_feed(feed_a, 65002)
    print(f"{args.prefixes:,} prefixes, {args.per_update} per UPDATE, {len(feed_a):,} attribute sets")
    for name, rules in (
        ("allow-all (0.0.0.0/0 le 32)", [PrefixRule(IPv4Network("0.0.0.0/0"), le=32)]),
        ("201-rule prefix list", many),
    ):
        print(f"policy: {name}")
        run_policy(ImportPolicy(tuple(rules)), feed_a, feed_b, args.prefixes)


if __name__ == "__main__":
    main()
