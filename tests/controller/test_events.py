"""controller/events.py: one event -> the structured log line (format unchanged) and its metric."""

from __future__ import annotations

import io
import logging

from controller import logs
from controller.events import (
    BfdDown,
    BgpSessionDown,
    ConnectionRefusedEvent,
    Event,
    Fanout,
    LogSink,
    MetricsSink,
    RoutesLost,
    TableWriteFailed,
)
from controller.metrics import Metrics


def _lines(*events: Event) -> list[str]:
    stream = io.StringIO()
    logger = logging.getLogger("test.events")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        sink = LogSink(logger)
        for event in events:
            sink.emit(event)
    finally:
        logger.removeHandler(handler)
    return [line.split(" ", 1)[1] for line in stream.getvalue().splitlines()]  # without the time


def test_the_log_line_keeps_event_name_field_order_and_leaves_out_none_and_hidden_fields() -> None:
    (line,) = _lines(BgpSessionDown("vip", "fw-a", "10.0.0.2", "Idle", "HoldTimerExpired", None, None))
    assert line == (
        "WARNING BGP session down event=bgp_session_down route_server=vip peer=fw-a address=10.0.0.2 "
        "state=Idle reason=HoldTimerExpired"
    )
    (expected,) = _lines(BgpSessionDown("vip", "fw-a", "10.0.0.2", "Idle", "ManualStop", expected=True))
    assert expected.startswith("INFO  BGP session down event=bgp_session_down")


def test_messages_and_levels_follow_the_event() -> None:
    down, lost = _lines(
        BfdDown("vip", "fw-a", "10.0.0.2", "DetectionTimeExpired", "ControlDetectionTimeExpired", True),
        RoutesLost("vip", "fw-a", ["10.0.0.2"], [], 3, "203.0.113.10/32"),
    )
    assert down.startswith("WARNING BFD down: tearing the BGP session down (RFC 5882) event=bfd_down")
    assert "established" not in down
    assert lost.startswith("WARNING routes lost their last next hop event=routes_lost route_server=vip")


def test_repeated_events_are_counted_but_not_logged_again() -> None:
    metrics = Metrics()
    sink = MetricsSink(metrics)
    events = [
        TableWriteFailed("vip", "t", "OSError: x", "write", first=True),
        TableWriteFailed("vip", "t", "OSError: x", "write", first=False),
        ConnectionRefusedEvent("vip", "10.9.9.9", first=False),
    ]
    for event in events:
        sink.emit(event)
    assert metrics.table_write_errors.labels("vip", "t")._value.get() == 2
    assert metrics.connections_refused.labels("vip")._value.get() == 1
    assert _lines(*events) == [
        'ERROR table write failed event=table_write_failed route_server=vip table=t error="OSError: x"'
    ]


def test_a_failing_sink_does_not_stop_the_others() -> None:
    seen: list[Event] = []

    class Broken:
        def emit(self, event: Event) -> None:
            raise RuntimeError("boom")

    class Recorder:
        def emit(self, event: Event) -> None:
            seen.append(event)

    event = ConnectionRefusedEvent("vip", "10.9.9.9")
    Fanout([Broken(), Recorder()]).emit(event)
    assert seen == [event]
