"""`/routes` page cost at a full table: building the index and one page, in process.

A real Runtime with the unit tests' fake speaker (a real LocRib) and a fake table writer: two peers
announce the same N IPv4 /32s (the second with a longer AS path, so every prefix has two paths, a
best one and a deciding step), the FIB and the table hold all of them. Then:

- the index build (cooperative: the longest single loop step is measured too),
- `routes_page` for 5000-route pages from the start, from the middle and with `after` near the end,
  and the JSON encoding the admin handler adds (median over repetitions, with min-max).

    .venv/bin/python -m bench.routes_page                 # 1,000,000 prefixes
    .venv/bin/python -m bench.routes_page --size 100000 --repeats 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a script: make `bench`, `controller` and `tests` importable
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from bgp.api import RoutesChanged
from bgp.rib.path import Path
from bgp.types import AsPath, AsPathSegment, PathAttributes, SegmentType
from controller.runtime.routes import RoutesQuery, routes_page
from tests.controller.builders import association, desired, peer, server
from tests.controller.test_runtime import ALLOW, Harness

BATCH = 10000


async def longest_step(work: asyncio.Future[object]) -> float:
    """The longest gap between loop iterations while `work` runs (how long the loop was blocked)."""
    longest, last = 0.0, time.perf_counter()
    while not work.done():
        await asyncio.sleep(0)
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    return longest


def ms(values: list[float]) -> str:
    low, mid, high = (v * 1000 for v in (min(values), statistics.median(values), max(values)))
    return f"{mid:.1f} ms (min {low:.1f}, max {high:.1f})"


async def main(size: int, repeats: int, limit: int) -> None:
    spec = {**ALLOW, "importPolicy": {"allowedPrefixes": [{"prefix": "10.0.0.0/8", "le": 32}]}}
    harness = Harness()
    await harness.runtime.start()
    peers = [
        peer("fw-a", "198.51.100.2", liveness="BGPKeepalive"),
        peer("fw-b", "198.51.100.3", liveness="BGPKeepalive"),
    ]
    await harness.runtime.apply(desired([server(**spec)], peers, [association("t")]))
    speaker = harness.speaker
    speaker.establish("fw-a")
    speaker.establish("fw-b")
    keys = [((0x0A000000 + i) << 8) | 32 for i in range(size)]
    started = time.perf_counter()
    for name, length in (("fw-a", 1), ("fw-b", 3)):
        info = speaker._info(name)
        attributes = PathAttributes(
            as_path=AsPath((AsPathSegment(SegmentType.AS_SEQUENCE, (65001,) * length),)),
            next_hop=info.address,
        )
        path = Path(info, attributes)
        for start in range(0, size, BATCH):
            changes = speaker.loc_rib.update_many(info, keys[start : start + BATCH], path)
            if changes:
                speaker.publish(RoutesChanged(name, tuple(changes)))
            await asyncio.sleep(0)
    rs = harness.runtime.route_server("vip")
    writer = harness.table()
    while len(writer.routes) < size:
        writer.written.clear()
        await writer.written.wait()
    print(
        f"{size} prefixes x 2 paths in the RIB, FIB and table: {time.perf_counter() - started:.1f} s to load"
    )

    build = asyncio.ensure_future(rs.route_index.get(rs))
    blocked = await longest_step(build)
    index = await build
    print(f"index build: {rs.route_index.build_seconds:.2f} s, longest loop step {blocked * 1000:.1f} ms")

    def measure(after: int | None) -> tuple[list[float], list[float], list[float], int, int]:
        query = RoutesQuery("vip", after, limit)
        pages, cpu, encodes, count, size_bytes = [], [], [], 0, 0
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            page = routes_page(rs, index, query)
            c1, t1 = time.process_time(), time.perf_counter()
            body = page.encode()
            t2 = time.perf_counter()
            pages.append(t1 - t0)
            cpu.append(c1 - c0)
            encodes.append(t2 - t1)
            count = len(page.routes)
            size_bytes = len(body)
        return pages, cpu, encodes, count, size_bytes

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; median (min, max) of {repeats}")
    for label, after in (
        ("first page", None),
        ("middle page", keys[size // 2]),
        ("after near the end", keys[size - limit // 2 - 1]),
    ):
        pages, cpu, encodes, count, body = measure(after)
        print(f"{label}: {count} routes ({body / 1e6:.2f} MB JSON)")
        print(f"    routes_page {ms(pages)}; its CPU time {ms(cpu)}; encode {ms(encodes)}")
    await harness.runtime.stop(keep_routes=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--limit", type=int, default=5000)
    args = parser.parse_args()
    asyncio.run(main(args.size, args.repeats, args.limit))
