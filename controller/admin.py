"""The admin HTTP endpoint: `/metrics` (Prometheus), `/healthz`, `/status` and `/routes` (JSON).

A deliberately tiny HTTP/1.1 server on asyncio streams (no web framework is a dependency): GET and
HEAD only, request head bounded in size and time, one response per connection (`Connection:
close`). It runs on the agent's own loop, so a handler reads the runtime's state without locks; the
default address is loopback because the status includes peer addresses and rejected prefixes.

`/routes?routeServer=NAME&after=PREFIX&limit=N&prefix=CIDR` is the per-route routing database
(AWS GetRouteServerRoutingDatabase), one page per request: controller/runtime/routes.py builds it in
O(page) on the loop; a bad parameter is a 400, an unknown route server a 404.

Owns: the HTTP server and its endpoints. May not touch: the runtime's state (it only reads through
the callables it is given); the agent (controller/agent.py) starts and closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from controller.metrics import Metrics
from controller.runtime.routes import RoutesPage, RoutesQuery
from controller.status import AgentStatus, format_address, to_json

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ADMIN_ADDRESS",
    "HttpServer",
    "Response",
    "admin_server",
    "format_address",
    "parse_address",
]

DEFAULT_ADMIN_ADDRESS = "127.0.0.1:9179"
MAX_HEAD = 16 * 1024  # request line + headers
HEAD_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Response:
    status: HTTPStatus
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


Query = Mapping[str, str]  # the request's query parameters (the last of a repeated one wins)
Handler = Callable[[Query], Awaitable[Response]]
RoutesSource = Callable[[RoutesQuery], Awaitable[RoutesPage]]


def parse_address(text: str, default_port: int = 9179) -> tuple[str, int]:
    """`host:port`, `[v6]:port`, `host` or `:port` (all addresses) -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" in text:
        host, port = text, ""  # a bare IPv6 address
    else:
        host, port = text, ""
    try:
        number = int(port) if port else default_port
    except ValueError:
        raise ValueError(f"invalid port in admin address {text!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range in admin address {text!r}")
    return host or "0.0.0.0", number


class HttpServer:
    """Routes GET/HEAD paths to handlers; everything else gets 404/405/400."""

    def __init__(self, routes: Mapping[str, Handler], host: str, port: int) -> None:
        self.routes = dict(routes)
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]  # the kernel's choice when asked for port 0

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return
            method, path, query = _request_line(head)
            if method is None:
                response = Response(HTTPStatus.BAD_REQUEST, b"bad request\n")
            elif method not in ("GET", "HEAD"):
                response = Response(
                    HTTPStatus.METHOD_NOT_ALLOWED, b"GET or HEAD only\n", headers={"Allow": "GET, HEAD"}
                )
            else:
                handler = self.routes.get(path)
                if handler is None:
                    response = Response(HTTPStatus.NOT_FOUND, b"not found\n")
                else:
                    try:
                        response = await handler(query)
                    except Exception:
                        log.exception("admin handler for %s failed", path)
                        response = Response(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n")
            writer.write(_encode(response, head_only=method == "HEAD"))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


def _request_line(head: bytes) -> tuple[str | None, str, Query]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None, "", {}
    target = urlsplit(parts[1])
    return parts[0], target.path, dict(parse_qsl(target.query))


def _encode(response: Response, head_only: bool) -> bytes:
    status = response.status
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        "Cache-Control: no-store",
        *(f"{k}: {v}" for k, v in response.headers.items()),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


def admin_server(
    host: str,
    port: int,
    *,
    metrics: Metrics,
    status: Callable[[], AgentStatus],
    healthy: Callable[[], bool],
    routes: RoutesSource | None = None,
) -> HttpServer:
    """The agent's admin endpoints on one server (`/routes` only when `routes` is given)."""

    async def get_metrics(query: Query) -> Response:
        return Response(HTTPStatus.OK, metrics.exposition(), CONTENT_TYPE_LATEST)

    async def get_health(query: Query) -> Response:
        if healthy():
            return Response(HTTPStatus.OK, b"ok\n")
        return Response(HTTPStatus.SERVICE_UNAVAILABLE, b"unhealthy: see /status\n")

    async def get_status(query: Query) -> Response:
        body = json.dumps(to_json(status()), indent=2, sort_keys=False).encode() + b"\n"
        return Response(HTTPStatus.OK, body, "application/json")

    handlers: dict[str, Handler] = {"/metrics": get_metrics, "/healthz": get_health, "/status": get_status}
    if routes is not None:
        source = routes

        async def get_routes(query: Query) -> Response:
            try:
                request = RoutesQuery.parse(query)
            except ValueError as exc:
                return Response(HTTPStatus.BAD_REQUEST, f"{exc}\n".encode())
            try:
                page = await source(request)
            except KeyError:
                return Response(HTTPStatus.NOT_FOUND, f"no route server {request.route_server!r}\n".encode())
            return Response(HTTPStatus.OK, page.encode() + b"\n", "application/json")

        handlers["/routes"] = get_routes
    return HttpServer(handlers, host, port)
