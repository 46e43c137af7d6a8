"""Helpers shared by the lab benchmarks: cheap control-plane clients, process memory, result output.

The clients keep one connection open and speak each daemon's own control protocol, so a benchmark
can poll every few milliseconds without forking a CLI (a `birdc`/`vtysh`/`gobgp` process costs
5-40 ms of CPU on the same two cores the daemons under test run on):

- `BirdControl`: BIRD's control socket (what `birdc` speaks): one command line in, reply lines
  `DDDD-text` (more follows), ` text` (continuation) and a final `DDDD text`.
- `FrrVty`: one FRR daemon's vty socket (what `vtysh` speaks): a NUL-terminated command in, the
  output followed by three NULs and a status byte.
- `JsonLines`: our speaker harness's control socket (tests/support/krs_speaker_proc.py).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"


class ControlError(Exception):
    """A control connection failed or a daemon answered with an error."""


def _connect_unix(path: Path | str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return sock


class BirdControl:
    """A persistent connection to BIRD's control socket."""

    def __init__(self, path: Path | str, timeout: float = 30.0) -> None:
        self._sock = _connect_unix(path, timeout)
        self._buffer = b""
        self._reply()  # the "0001 BIRD x.y.z ready." greeting

    def _line(self) -> str:
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ControlError("BIRD closed its control socket")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace")

    def _reply(self) -> list[str]:
        """The reply's lines without their reply codes (as birdc prints them)."""
        lines: list[str] = []
        while True:
            line = self._line()
            coded = len(line) >= 5 and line[:4].isdigit() and line[4] in "- "
            lines.append(line[5:] if coded else line[1:])
            if coded and line[4] == " ":
                if line[0] in "89":  # 8xxx/9xxx: runtime or syntax error
                    raise ControlError(line)
                return lines

    def command(self, text: str) -> list[str]:
        self._sock.sendall(text.encode() + b"\n")
        return self._reply()

    def close(self) -> None:
        self._sock.close()


class FrrVty:
    """A persistent connection to one FRR daemon's vty socket (bgpd.vty, zebra.vty, ...)."""

    def __init__(self, path: Path | str, timeout: float = 30.0) -> None:
        self._sock = _connect_unix(path, timeout)
        self._buffer = b""

    def command(self, text: str) -> str:
        self._sock.sendall(text.encode() + b"\0")
        while True:
            end = self._buffer.find(b"\0\0\0")
            if end >= 0 and len(self._buffer) >= end + 4:
                output, status = self._buffer[:end], self._buffer[end + 3]
                self._buffer = self._buffer[end + 4 :]
                if status != 0:
                    raise ControlError(f"{text!r}: status {status}: {output.decode(errors='replace')}")
                return output.decode(errors="replace")
            chunk = self._sock.recv(1 << 20)
            if not chunk:
                raise ControlError("FRR closed its vty socket")
            self._buffer += chunk

    def json(self, text: str) -> Any:
        output = self.command(text)
        return json.loads(output) if output.strip() else {}

    def close(self) -> None:
        self._sock.close()


class JsonLines:
    """A persistent connection to a JSON-lines control socket (one request, one answer per line)."""

    def __init__(self, path: Path | str, timeout: float = 30.0) -> None:
        self._sock = _connect_unix(path, timeout)
        self._buffer = b""

    def request(self, cmd: str, **args: Any) -> dict[str, Any]:
        self._sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(1 << 20)
            if not chunk:
                raise ControlError("control socket closed")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise ControlError(f"{cmd}: {answer.get('error')}")
        return answer

    def close(self) -> None:
        self._sock.close()


# -- processes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """From /proc/PID/status, in bytes: resident now (VmRSS) and the peak since start (VmHWM)."""

    rss: int
    hwm: int


def memory(pid: int) -> Memory:
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
    return Memory(fields.get("VmRSS", 0), fields.get("VmHWM", 0))


def memory_sum(pids: Sequence[int]) -> Memory:
    parts = [memory(pid) for pid in pids]
    return Memory(sum(m.rss for m in parts), sum(m.hwm for m in parts))


# -- statistics and output -------------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def machine() -> dict[str, Any]:
    """What the numbers were measured on (they mean little without it)."""
    load = Path("/proc/loadavg").read_text().split()[:3]
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    versions: dict[str, str] = {}
    for name, argv in {
        "bird": ["bird", "--version"],
        "frr": ["/usr/lib/frr/bgpd", "--version"],
        "gobgp": ["gobgpd", "--version"],
    }.items():
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
            versions[name] = (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            versions[name] = "?"
    return {
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "loadavg": load,
        "versions": versions,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_results(name: str, data: dict[str, Any]) -> Path:
    """bench/results/<name>-<timestamp>.json (the directory is gitignored)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path
