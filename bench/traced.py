"""Run `routeserver` (controller.cli) under tracemalloc; SIGUSR2 writes where the live bytes are.

A bench tool, not part of the product: bench/kernel_intake.py --tracemalloc starts the route server
through it, signals it once all routes are in the kernel and reads the report. The report lists the
largest allocation sites (file:line, grouped) and their share of the traced total, so a per-prefix
figure can be attributed to the structure that holds it.

    python -m bench.traced REPORT -- run -f config.yaml ...
"""

from __future__ import annotations

import gc
import runpy
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

TOP = 40


def _report(path: Path) -> None:
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        (
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        )
    )
    lines = []
    total = sum(stat.size for stat in snapshot.statistics("filename"))
    lines.append(f"traced total {total:,} bytes")
    for key in ("lineno", "filename"):
        lines.append(f"\n== top {TOP} by {key} ==")
        for stat in snapshot.statistics(key)[:TOP]:
            frame = stat.traceback[0]
            where = f"{frame.filename}:{frame.lineno}" if key == "lineno" else frame.filename
            lines.append(
                f"{stat.size:>14,} B {stat.count:>10,} blocks {100 * stat.size / total:5.1f}%  {where}"
            )
    lines.extend(_oversized_containers())
    partial = path.with_name(path.name + ".partial")
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(path)  # whole or absent: the bench waits for the file to appear


def _oversized_containers(min_bytes: int = 1 << 20) -> list[str]:
    """Dicts and sets whose table is far larger than their contents (a dict never shrinks as keys
    are deleted), with what refers to each: after a withdraw these are the memory kept for nothing."""
    found = []
    for obj in gc.get_objects():
        size = sys.getsizeof(obj) if isinstance(obj, (dict, set)) else 0
        if size >= min_bytes and len(obj) * 64 < size:
            holders = []
            for ref in gc.get_referrers(obj):
                if isinstance(ref, dict) and "__module__" not in ref:
                    owners = [type(o).__name__ for o in gc.get_referrers(ref) if hasattr(o, "__dict__")]
                    keys = [k for k, v in ref.items() if v is obj][:3]
                    holders.append(f"attribute {keys} of {owners[:3]}")
                elif type(ref).__name__ not in ("frame", "list"):
                    holders.append(type(ref).__name__)
            kind = type(obj).__name__
            found.append(f"{size:>14,} B  {kind} of {len(obj):,}  held by {holders[:4]}")
    return ["", "== oversized containers (table much larger than contents) ==", *found]


def main() -> None:
    report = Path(sys.argv[1])
    if sys.argv[2] != "--":
        raise SystemExit("usage: python -m bench.traced REPORT -- ROUTESERVER-ARGS...")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        _report(report)

    signal.signal(signal.SIGUSR2, on_signal)
    tracemalloc.start(1)
    sys.argv = ["routeserver", *sys.argv[3:]]
    runpy.run_module("controller.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
