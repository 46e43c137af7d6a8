"""The admin HTTP server: routing, methods, errors, and `routeserver status` against it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from controller import cli
from controller.admin import HttpServer, admin_server, format_address, parse_address
from controller.metrics import Metrics
from controller.status import AgentStatus, ConfigView


def _status() -> AgentStatus:
    return AgentStatus(
        node="node-a", version="1.2.3", started_at=0.0, healthy=True, config=ConfigView(generation=4)
    )


class State:
    healthy = True


async def request(server: HttpServer, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return status, headers, body


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    metrics = Metrics()
    metrics.observe_state(_status)
    state = State()
    srv = admin_server("127.0.0.1", 0, metrics=metrics, status=_status, healthy=lambda: state.healthy)
    srv.state = state  # type: ignore[attr-defined]
    await srv.start()
    yield srv
    await srv.close()


async def test_status_is_json(server: HttpServer) -> None:
    status, headers, body = await request(server, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    data = json.loads(body)
    assert data["node"] == "node-a" and data["config"]["generation"] == 4


async def test_metrics_are_prometheus_text(server: HttpServer) -> None:
    status, headers, body = await request(server, b"GET /metrics?x=1 HTTP/1.1\r\n\r\n")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    assert b"routeserver_healthy 1.0" in body
    assert b"routeserver_config_generation 4.0" in body


async def test_healthz_follows_the_runtime(server: HttpServer) -> None:
    assert (await request(server, b"GET /healthz HTTP/1.1\r\n\r\n"))[0] == 200
    server.state.healthy = False  # type: ignore[attr-defined]
    status, _, body = await request(server, b"GET /healthz HTTP/1.1\r\n\r\n")
    assert status == 503 and b"unhealthy" in body


async def test_head_has_no_body(server: HttpServer) -> None:
    status, headers, body = await request(server, b"HEAD /status HTTP/1.1\r\n\r\n")
    assert status == 200 and int(headers["Content-Length"]) > 0 and body == b""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"POST /status HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"GET /nope HTTP/1.1\r\n\r\n", 404),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /status SPDY/3\r\n\r\n", 400),
    ],
)
async def test_bad_requests(server: HttpServer, raw: bytes, expected: int) -> None:
    assert (await request(server, raw))[0] == expected


async def test_a_failing_handler_is_a_500_and_the_server_keeps_serving() -> None:
    async def boom(query: object) -> object:
        raise RuntimeError("no")

    srv = HttpServer({"/x": boom}, "127.0.0.1", 0)  # type: ignore[dict-item]
    await srv.start()
    try:
        assert (await request(srv, b"GET /x HTTP/1.1\r\n\r\n"))[0] == 500
        assert (await request(srv, b"GET /y HTTP/1.1\r\n\r\n"))[0] == 404
    finally:
        await srv.close()


async def test_oversized_request_head_is_dropped(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /status HTTP/1.1\r\nX: " + b"a" * 40000 + b"\r\n\r\n")
    data = b""
    with contextlib.suppress(ConnectionError):
        await writer.drain()
        data = await reader.read()
    writer.close()
    assert data == b""  # closed without an answer


async def test_status_command_prints_table_and_json(
    server: HttpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{server.port}"
    assert await asyncio.to_thread(cli.main, ["status", "--admin-address", address]) == 0
    out = capsys.readouterr().out
    assert "node node-a" in out and "no route servers configured" in out
    assert await asyncio.to_thread(cli.main, ["status", "--admin-address", address, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "1.2.3"


async def test_status_command_reports_an_unreachable_agent(capsys: pytest.CaptureFixture[str]) -> None:
    probe = HttpServer({}, "127.0.0.1", 0)
    await probe.start()
    port = probe.port
    await probe.close()  # nothing listens there now
    assert await asyncio.to_thread(cli.main, ["status", "--admin-address", f"127.0.0.1:{port}"]) == 1
    assert "cannot get status" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9179", ("127.0.0.1", 9179)),
        ("[::1]:80", ("::1", 80)),
        ("::1", ("::1", 9179)),
        (":8080", ("0.0.0.0", 8080)),
        ("localhost", ("localhost", 9179)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["host:port", "1.2.3.4:70000", "[::1]:x"])
def test_parse_address_refuses_bad_ports(text: str) -> None:
    with pytest.raises(ValueError, match="port"):
        parse_address(text)


def test_format_address_brackets_ipv6() -> None:
    assert format_address("::1", 9179) == "[::1]:9179"
    assert format_address("127.0.0.1", 9179) == "127.0.0.1:9179"
