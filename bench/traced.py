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
    partial = path.with_name(path.name + ".partial")
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(path)  # whole or absent: the bench waits for the file to appear


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
