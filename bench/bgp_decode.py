"""Micro-benchmark of UPDATE intake: decode_update over a packed IPv4 /32 feed.

Encodes 100,000 IPv4 /32 prefixes the way a feeder sends them (as many prefixes per UPDATE as fit,
a handful of attribute sets), then times decode_update over every message with one interning cache
per run, and prints prefixes per second. Not a test: run it by hand,

    .venv/bin/python bench/bgp_decode.py [--prefixes N] [--sets K] [--rounds R] [--extended] [--mixed]
"""

from __future__ import annotations

import argparse
import time
from ipaddress import IPv4Address

from bgp.codec.messages import HEADER_SIZE, CodecContext
from bgp.codec.update import build_updates, decode_update
from bgp.types import IPV4_UNICAST, AsPath, AsPathSegment, Origin, PathAttributes, SegmentType


def make_feed(prefixes: int, sets: int, ctx: CodecContext, mixed: bool = False) -> list[bytes]:
    """UPDATE bodies announcing `prefixes` /32s from 10.0.0.0 spread over `sets` attribute sets
    (with `mixed`, lengths cycle through /24../32 as in a real table, defeating the uniform fast path)."""
    bodies: list[bytes] = []
    per_set = -(-prefixes // sets)
    base = int(IPv4Address("10.0.0.0"))
    for s in range(sets):
        attrs = PathAttributes(
            origin=Origin.IGP,
            as_path=AsPath((AsPathSegment(SegmentType.AS_SEQUENCE, (64512 + s, 4200000000 + s)),)),
            next_hop=IPv4Address(f"198.51.100.{s + 1}"),
            med=s * 10,
            communities=(0xFDE80000 | s,),
        )
        first = s * per_set
        keys = []
        for i in range(first, min(first + per_set, prefixes)):
            length = 24 + i % 9 if mixed else 32
            address = ((base + (i << 8)) if mixed else base + i) & ~((1 << (32 - length)) - 1)
            keys.append((address << 8) | length)
        bodies.extend(m[HEADER_SIZE:] for m in build_updates(IPV4_UNICAST, attrs, keys, ctx))
    return bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefixes", type=int, default=100_000)
    parser.add_argument("--sets", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--extended", action="store_true", help="65535-octet messages (RFC 8654)")
    parser.add_argument("--mixed", action="store_true", help="prefix lengths /24../32 mixed in each message")
    args = parser.parse_args()
    ctx = CodecContext(extended_message=args.extended)
    bodies = make_feed(args.prefixes, args.sets, ctx, args.mixed)
    best = float("inf")
    total = 0
    for _ in range(args.rounds):
        cache: dict[bytes, PathAttributes] = {}
        start = time.perf_counter()
        total = 0
        for body in bodies:
            update = decode_update(body, ctx, cache)
            for reach in update.reach:
                total += len(reach.prefixes)
        best = min(best, time.perf_counter() - start)
    assert total == args.prefixes, (total, args.prefixes)
    print(
        f"{len(bodies)} UPDATEs, {total} {'mixed-length' if args.mixed else '/32'} prefixes, "
        f"{args.sets} attribute sets: "
        f"best of {args.rounds} {best * 1000:.1f} ms = {total / best:,.0f} prefixes/s"
    )


if __name__ == "__main__":
    main()
