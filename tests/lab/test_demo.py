"""`routeserver demo` without a lab: arguments, the refusal without root, its configuration, its timeline.

The demo itself runs in tests/integration/test_demo.py; here are the parts that need neither root nor
namespaces, plus the client probe and echo helpers over loopback.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller import cli
from controller.standalone import validate
from lab import demo
from lab.demo import (
    ADDRESSES,
    VIP,
    DemoOptions,
    Event,
    JsonTail,
    Timeline,
    describe,
    log_time,
    options_from_args,
    route_server_yaml,
    summarize,
)


def _parse(argv: list[str]) -> argparse.Namespace:
    return cli.build_parser().parse_args(["demo", *argv])


def test_defaults_are_100ms_x3_one_round() -> None:
    args = _parse([])
    assert args.handler is demo.main_from_args
    options = options_from_args(args)
    assert options == DemoOptions()
    assert (options.rounds, options.bfd_interval_ms, options.bfd_multiplier) == (1, 100, 3)
    assert options.detection_ms == 300 and options.timeout == 5.0


def test_flags_reach_the_options() -> None:
    args = _parse(
        [
            *("--rounds", "5", "--bfd-interval-ms", "50", "--bfd-multiplier", "4", "--timeout", "2.5"),
            *("--frozen-seconds", "0", "--probe-interval-ms", "5", "-v"),
        ]
    )
    options = options_from_args(args)
    assert options == DemoOptions(
        rounds=5,
        bfd_interval_ms=50,
        bfd_multiplier=4,
        timeout=2.5,
        frozen_seconds=0.0,
        probe_interval_ms=5.0,
        verbose=True,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--rounds", "0"],
        ["--rounds", "x"],
        ["--bfd-interval-ms", "9"],
        ["--bfd-multiplier", "256"],
        ["--timeout", "0"],
        ["--frozen-seconds", "-1"],
        ["--probe-interval-ms", "0.5"],
    ],
)
def test_bad_values_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_appliance_is_registered_too() -> None:
    args = cli.build_parser().parse_args(
        ["appliance", "--asn", "65001", "--peer", "10.0.0.1", "--peer-asn", "64512", "--advertise", VIP]
    )
    assert args.handler.__module__ == "lab.appliance"


def test_without_root_it_refuses_politely(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    built: list[object] = []
    monkeypatch.setattr(demo, "Lab", lambda *a, **k: built.append(a))
    assert cli.main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "needs root" in err and "sudo routeserver demo" in err
    assert not built


def test_missing_iproute2_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "tc" else "/usr/sbin/ip")
    message = demo.preflight()
    assert message is not None and "tc" in message and "iproute2" in message


def test_route_server_configuration_is_valid_and_active_passive(tmp_path: Path) -> None:
    text = route_server_yaml(DemoOptions(bfd_interval_ms=50, bfd_multiplier=4))
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    assert validate([str(path)]) == []
    assert "mode: ActivePassive" in text
    assert "minTxIntervalMilliseconds: 50" in text and "detectMultiplier: 4" in text
    assert "table: 100" in text
    for name in ("appl-a", "appl-b"):
        assert f"peerAddress: {ADDRESSES[name]}" in text
    assert text.count("prefix: 203.0.113.0/24") == 2 and text.count("le: 32") == 2


def test_log_lines_become_timeline_events_on_the_monotonic_clock() -> None:
    offset = 1_700_000_000.0
    record = {
        "time": "2023-11-14T22:13:20.250Z",  # 1_700_000_000.25
        "event": "bfd_down",
        "peer": "appl-a",
        "reason": "detection_time_expired",
    }
    event = describe("rs", record, offset)
    assert event is not None and event.kind == "rs"
    assert event.t == pytest.approx(0.25)
    assert event.text == "rs: BFD session with appl-a Down (detection time expired)"
    moved = describe(
        "rs",
        {"time": "2023-11-14T22:13:20.251Z", "event": "failover", "old_nexthops": ["10.0.0.11"]}
        | {"new_nexthops": ["10.0.0.12"]},
        offset,
    )
    assert moved is not None and moved.text.endswith("10.0.0.11 (appl-a) -> 10.0.0.12 (appl-b)")
    assert describe("rs", {"time": "2023-11-14T22:13:20.251Z", "event": "table_written"}, offset) is None
    up = describe("appl-a", {"time": "2023-11-14T22:13:20.251Z", "event": "bfd_up"}, offset)
    assert up is not None and (up.kind, up.text) == ("appliance", "appl-a: BFD session Up")
    assert up.t == pytest.approx(0.251)
    assert log_time("1970-01-01T00:00:01.500Z") == 1.5


def test_route_and_probe_lines() -> None:
    route = describe("watch", {"kind": "route", "t": 12.5, "via": ["10.0.0.12"]}, 0.0)
    assert route is not None and route.t == 12.5
    assert route.text == f"rs kernel: {VIP} via 10.0.0.12 (appl-b)"
    gone = describe("watch", {"kind": "route", "t": 1.0, "via": []}, 0.0)
    assert gone is not None and gone.text == f"rs kernel: no route for {VIP}"
    probe = {"kind": "probe", "t": 2.0, "from": "appl-b", "prev_from": "appl-a", "prev_t": 1.7, "lost": 29}
    event = describe("probe", probe, 0.0)
    assert event is not None
    assert event.text == "client: answered by appl-b (29 probes lost, 300 ms without an answer)"


def test_json_tail_returns_complete_lines_once(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    tail = JsonTail(path)
    assert list(tail.read()) == []  # not there yet
    path.write_text('{"a": 1}\nnot json\n{"b": ')
    assert list(tail.read()) == [{"a": 1}]
    with open(path, "a") as f:
        f.write('2}\n[1, 2]\n{"c": 3}\n')
    assert list(tail.read()) == [{"b": 2}, {"c": 3}]
    assert list(tail.read()) == []


def test_timeline_prints_in_time_order_and_holds_recent_events() -> None:
    out = io.StringIO()
    timeline = Timeline(out, t0=10.0)
    timeline.add(Event(10.302, "route moved", "route"))
    timeline.add(Event(10.300, "bfd down", "rs"))
    timeline.add(Event(11.0, "later", "rs"))
    timeline.flush(upto=10.5)
    assert out.getvalue().splitlines() == ["  t+   300.0 ms  bfd down", "  t+   302.0 ms  route moved"]
    timeline.flush()
    assert out.getvalue().splitlines()[-1] == "  t+  1000.0 ms  later"


def test_summaries() -> None:
    assert summarize([]) == "n/a"
    assert summarize([301.84]) == "301.8 ms"
    assert summarize([300.0, 250.0, 280.0]) == "median 280.0 ms (min 250.0, max 300.0, n=3)"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _first_json_line(proc: subprocess.Popen[str], timeout: float = 20) -> dict[str, object]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            record: dict[str, object] = json.loads(line)
            return record
        assert proc.poll() is None, "the helper exited"
    raise AssertionError("no line from the helper")


def test_probe_reports_who_answers_through_the_echo_helper() -> None:
    """The client probe and the appliance echo over loopback: the probe names the responder."""
    port = _free_udp_port()
    base = [sys.executable, "-m", "lab.demo_tools"]
    echo = subprocess.Popen(
        [*base, "echo", "--bind", "127.0.0.1", "--port", str(port), "--name", "appl-a"],
        stdout=subprocess.PIPE,
        text=True,
    )
    probe: subprocess.Popen[str] | None = None
    try:
        assert _first_json_line(echo)["kind"] == "echo"
        probe = subprocess.Popen(
            [*base, "probe", "--target", "127.0.0.1", "--port", str(port), "--interval-ms", "5"],
            stdout=subprocess.PIPE,
            text=True,
        )
        record = _first_json_line(probe)
        assert record["kind"] == "probe" and record["from"] == "appl-a"
        assert record["prev_from"] is None and record["lost"] == 0
        assert isinstance(record["t"], float) and isinstance(record["seq"], int)
    finally:
        for proc in (probe, echo):
            if proc is not None:
                proc.kill()
                proc.wait()
