"""Plot a bench/kernel_intake.py result: time into the kernel and peak memory against the prefix count.

Two panels, log-log, one line per receiver (medians over the run's repetitions, min-max as error
bars): seconds from the feeder's Established until all N routes are in the receiver's kernel table,
and the peak resident memory of the receiver's processes (VmHWM) at completion. Needs matplotlib
(`pip install matplotlib`; a bench tool, not a dependency of the project).

    .venv/bin/python -m bench.plot_intake bench/results/kernel_intake-YYYYMMDD-HHMMSS.json
    .venv/bin/python -m bench.plot_intake RESULT.json --out bench/results/kernel-intake.png
    .venv/bin/python -m bench.plot_intake SMALL.json LARGE.json --out ...   # runs of several results merged
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LABELS = {
    "krs": "kube-route-server",
    "krs-before": "kube-route-server (before)",
    "bird": "BIRD 2 (bgp + kernel)",
    "frr": "FRR (bgpd + zebra)",
}
STYLES = {"krs": "o-", "krs-before": "o--", "bird": "s-", "frr": "^-"}


def series(runs: Sequence[dict[str, Any]], field: str) -> dict[str, list[tuple[int, float, float, float]]]:
    """receiver -> [(N, median, min, max)] of one measured field, error runs left out."""
    values: dict[tuple[str, int], list[float]] = defaultdict(list)
    for run in runs:
        value = run.get(field)
        if run.get("error") or value is None or run["receiver"] not in LABELS:
            continue
        values[(run["receiver"], run["prefixes"])].append(float(value))
    out: dict[str, list[tuple[int, float, float, float]]] = defaultdict(list)
    for (receiver, count), found in sorted(values.items()):
        out[receiver].append((count, statistics.median(found), min(found), max(found)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "result", type=Path, nargs="+", help="kernel_intake JSONs from bench/results/ (their runs are merged)"
    )
    parser.add_argument("--out", type=Path, help="PNG to write (default: next to the JSON)")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [json.loads(path.read_text()) for path in args.result]
    runs = [run for data in results for run in data["runs"]]
    data = results[-1]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (
        (left, "kernel_from_feeder_s", 1.0, "seconds until all routes are in the kernel"),
        (right, "hwm_loaded", 2**-20, "peak RSS at completion (MiB)"),
    )
    for axis, field, scale, title in panels:
        for receiver, points in series(runs, field).items():
            counts = [p[0] for p in points]
            medians = [p[1] * scale for p in points]
            errors = [[(p[1] - p[2]) * scale for p in points], [(p[3] - p[1]) * scale for p in points]]
            axis.errorbar(
                counts, medians, yerr=errors, fmt=STYLES[receiver], label=LABELS[receiver], capsize=3
            )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("IPv4 /32 prefixes")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    left.legend()
    machine = data.get("machine", {})
    figure.suptitle(
        f"BGP feed into the kernel, one BIRD feeder ({machine.get('cpus', '?')} cores, "
        f"load {' '.join(machine.get('loadavg', []))})"
    )
    figure.tight_layout()
    out = args.out or args.result[-1].with_suffix(".png")
    figure.savefig(out, dpi=110)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
