"""Structured log lines: an event name plus key=value fields, rendered as logfmt text or JSON lines.

Every state change a user cares about (session up/down, BFD down, failover, rejected routes,
max-prefix) is logged through `event()` with a stable event name and bounded field names, so log
pipelines can filter on them like on metric labels; everything else stays at DEBUG. (The module is
`logs`, not `logging`, so it never shadows the standard library.)

Owns: the line format (text and JSON) and `event()`. The runtime's events reach it through
controller/events.py's `LogSink`. Must not touch: metrics or state; it only formats and logs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def event(logger: logging.Logger, level: int, name: str, message: str, **fields: object) -> None:
    """Log `message` with an event name and fields (None values are left out)."""
    if not logger.isEnabledFor(level):
        return
    clean = {k: v for k, v in fields.items() if v is not None}
    logger.log(level, message, extra={"event": name, "fields": clean})


def _fields(record: logging.LogRecord) -> tuple[str | None, Mapping[str, Any]]:
    name = getattr(record, "event", None)
    fields = getattr(record, "fields", None)
    return (name if isinstance(name, str) else None), (fields if isinstance(fields, Mapping) else {})


def _logfmt_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(c in text for c in ' "=\\\n\t'):
        return json.dumps(text)
    return text


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created * 1000) % 1000:03d}Z"


class TextFormatter(logging.Formatter):
    """`2024-05-01T12:00:00.123Z INFO  message event=name key=value ...` (logfmt fields)."""

    def format(self, record: logging.LogRecord) -> str:
        name, fields = _fields(record)
        parts = [_timestamp(record.created), f"{record.levelname:<5}", record.getMessage()]
        if name is not None:
            parts.append(f"event={name}")
        parts.extend(f"{key}={_logfmt_value(value)}" for key, value in fields.items())
        if name is None:
            parts.append(f"logger={record.name}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, event and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        name, fields = _fields(record)
        data: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if name is not None:
            data["event"] = name
        for key, value in fields.items():
            data[key if key not in data and key not in _RESERVED else f"field_{key}"] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure the root logger once for the process (`routeserver run`)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # asyncio's own debug chatter is not ours to show at INFO. Neither are the protocol packages' INFO
    # lines (every connect retry, every state change): the controller logs what matters as events,
    # and the details are in /status; --log-level DEBUG shows them all.
    for name in ("asyncio", "bgp", "bfd"):
        logging.getLogger(name).setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
