"""The listener on loopback: unknown peers refused before OPEN, known ones handed over, MD5 and GTSM."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv4Address
from typing import Any

import pytest

from bgp.io.listener import Listener, Lookup, PeerSecurity
from bgp.io.sockopts import MAX_TTL, set_md5, set_ttl
from bgp.types import IPAddress

LOCAL = IPv4Address("127.0.0.1")


class Handler:
    def __init__(self) -> None:
        self.sockets: asyncio.Queue[socket.socket] = asyncio.Queue()

    def accepted(self, sock: socket.socket) -> None:
        self.sockets.put_nowait(sock)


async def _connect(
    port: int, *, password: str | None = None, ttl: int | None = None, wait: float = 5.0
) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if password:
        set_md5(sock, LOCAL, password)
    if ttl is not None:
        set_ttl(sock, ttl)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), wait)
    except BaseException:
        sock.close()
        raise
    return sock


async def _started(lookup: Lookup, **kwargs: Any) -> tuple[Listener, int]:
    listener = Listener(lookup, ["127.0.0.1"], 0, **kwargs)
    await listener.start()
    return listener, listener.bound()[0][1]


async def test_unknown_address_is_closed_before_any_byte_and_counted() -> None:
    refused: list[tuple[IPAddress, int]] = []
    listener, port = await _started(lambda address: None, on_refused=lambda a, p: refused.append((a, p)))
    try:
        sock = await _connect(port)
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        sock.close()
        assert data == b""  # closed without an OPEN or a NOTIFICATION
        assert listener.refused == 1
        assert listener.refused_by_address[LOCAL] == 1
        assert refused[0][0] == LOCAL
    finally:
        await listener.close()


async def test_configured_address_is_handed_to_its_driver() -> None:
    handler = Handler()
    seen: list[IPAddress] = []

    def lookup(address: IPAddress) -> Handler:
        seen.append(address)
        return handler

    listener, port = await _started(lookup)
    try:
        client = await _connect(port)
        accepted = await asyncio.wait_for(handler.sockets.get(), 5)
        assert accepted.getpeername()[1] == client.getsockname()[1]
        assert accepted.getblocking() is False
        assert seen == [LOCAL]
        assert listener.refused == 0
        accepted.close()
        client.close()
    finally:
        await listener.close()


async def test_md5_key_on_listener_refuses_unsigned_and_wrongly_signed_syns() -> None:
    handler = Handler()
    listener, port = await _started(lambda address: handler)
    listener.configure_peer(LOCAL, PeerSecurity(password="s3cret"))
    try:
        for wrong in (None, "other"):
            with pytest.raises(TimeoutError):
                await _connect(port, password=wrong, wait=0.5)
        client = await _connect(port, password="s3cret")
        accepted = await asyncio.wait_for(handler.sockets.get(), 5)
        accepted.close()
        client.close()
        # Removing the key makes plain connections work again.
        listener.remove_peer(LOCAL)
        client = await _connect(port)
        (await asyncio.wait_for(handler.sockets.get(), 5)).close()
        client.close()
    finally:
        await listener.close()


async def test_gtsm_floor_on_listener_drops_syns_below_ttl_255() -> None:
    handler = Handler()
    listener, port = await _started(lambda address: handler)
    listener.configure_peer(LOCAL, PeerSecurity(min_ttl=MAX_TTL))
    try:
        with pytest.raises(TimeoutError):
            await _connect(port, ttl=64, wait=0.5)
        client = await _connect(port, ttl=MAX_TTL)
        (await asyncio.wait_for(handler.sockets.get(), 5)).close()
        client.close()
    finally:
        await listener.close()


async def test_listener_binds_ipv6_only_socket_separately() -> None:
    listener = Listener(lambda address: None, ["127.0.0.1", "::1"], 0)
    await listener.start()
    try:
        families = sorted(a.version for a, _ in listener.bound())
        assert families == [4, 6]
    finally:
        await listener.close()
    assert listener.bound() == []
