"""Memory per prefix of a full feed in AdjRibIn + LocRib (bgp.rib), measured with tracemalloc.

One peer announces N IPv4 prefixes (default 1,000,000), one announce() per attribute set. The prefix key
ints and the interned PathAttributes objects are the decoder's output and are built before
tracing starts; everything the RIB allocates to hold them (tables, Path objects, the intern
cache, per-prefix entries) is traced. The key ints themselves are reported separately: the RIB
keeps them alive, the codec created them.

Scenarios vary the number of distinct attribute sets (a real full table has roughly one per
two to four prefixes; one per prefix is the worst case).

    .venv/bin/python bench/rib_memory.py [--prefixes 1000000] [--per-set 20 ...]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tracemalloc
from ipaddress import IPv4Address

from bgp.rib import ALLOW_ALL, AdjRibIn, LocRib, PeerInfo
from bgp.types import IPV4_UNICAST, AsPath, AsPathSegment, Origin, PathAttributes, SegmentType


def make_keys(count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    keys: set[int] = set()
    while len(keys) < count:
        length = rng.choice((16, 20, 22, 24, 24, 24))
        keys.add(((rng.getrandbits(length) << (32 - length)) << 8) | length)
    return sorted(keys)


def make_attributes(count: int, seed: int) -> list[PathAttributes]:
    rng = random.Random(seed)
    return [
        PathAttributes(
            origin=Origin.IGP,
            as_path=AsPath(
                (AsPathSegment(SegmentType.AS_SEQUENCE, (65001, *rng.sample(range(1, 400_000), 3))),)
            ),
            next_hop=IPv4Address("198.51.100.1"),
            med=index,
        )
        for index in range(count)
    ]


def feed(
    rib_in: AdjRibIn, loc: LocRib, keys: list[int], attributes: list[PathAttributes], per_set: int
) -> None:
    """The speaker's intake; a function, so the last chunk and batch are not left alive when measured."""
    for start in range(0, len(keys), per_set):
        chunk = keys[start : start + per_set]
        for batch in rib_in.announce(IPV4_UNICAST, chunk, attributes[start // per_set]).changes:
            loc.apply(batch)


def measure(keys: list[int], prefixes_per_set: int) -> None:
    attributes = make_attributes(-(-len(keys) // prefixes_per_set), 3)
    peer = PeerInfo("peer1", IPv4Address("198.51.100.1"), 65001, IPv4Address("203.0.113.1"), 4_200_000_000)
    gc.collect()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    rib_in = AdjRibIn(peer, ALLOW_ALL)
    loc = LocRib(max_paths=4)
    loc.attach(peer.peer_id, rib_in)  # as the speaker does: no per-peer copy in the Loc-RIB
    feed(rib_in, loc, keys, attributes, prefixes_per_set)
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(loc) == len(keys) == len(rib_in)
    rib = (after - before) / len(keys)
    key_ints = sum(sys.getsizeof(k) for k in keys[:1000]) / 1000
    print(
        f"  {prefixes_per_set:>2} prefixes per attribute set ({len(attributes):>9,} sets): "
        f"{rib:6.1f} B/prefix in AdjRibIn+LocRib, {rib + key_ints:6.1f} B/prefix with the key ints"
    )
    del rib_in, loc, attributes
    gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prefixes", type=int, default=1_000_000)
    parser.add_argument(
        "--per-set",
        type=int,
        action="append",
        help="prefixes per attribute set (repeatable; default 1, 3 and 20; --per-set N: one set for all)",
    )
    args = parser.parse_args()
    keys = make_keys(args.prefixes, 1)
    print(f"{args.prefixes:,} prefixes from one peer, one announce() per attribute set")
    for per_set in args.per_set or (1, 3, 20):
        measure(keys, per_set)


if __name__ == "__main__":
    main()
