"""The per-peer driver on loopback, with a scripted session: one timer, actions, connects, failures."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv4Address
from typing import Any

from bgp.fsm.events import Action, Close, Connect, Event, Send
from bgp.io.connection import PeerDriver, TransportConfig
from bgp.io.listener import Listener, PeerSecurity

LOCAL = IPv4Address("127.0.0.1")


class ScriptedSession:
    """Records every call; actions, events and the deadline are set by the test."""

    def __init__(self) -> None:
        self.calls: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.log: list[tuple[Any, ...]] = []
        self.actions: list[Action] = []
        self.events: list[Event] = []
        self.deadline: float | None = None
        self.on_timer: list[Action] = []

    def _record(self, *call: Any) -> None:
        self.log.append(call)
        self.calls.put_nowait(call)

    def connection_made(self, conn: int, now: float, outgoing: bool) -> None:
        self._record("made", conn, outgoing)

    def data_received(self, conn: int, data: bytes, now: float) -> None:
        self._record("data", conn, data)

    def connection_lost(self, conn: int, now: float, error: str | None = None) -> None:
        self._record("lost", conn, error)

    def connection_failed(self, now: float, error: str) -> None:
        self._record("failed", error)

    def handle_timer(self, now: float) -> None:
        self._record("timer", now)
        self.deadline = None
        self.actions += self.on_timer

    def next_deadline(self) -> float | None:
        return self.deadline

    def take_actions(self) -> list[Action]:
        actions, self.actions = self.actions, []
        return actions

    def take_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    async def next_call(self, kind: str) -> tuple[Any, ...]:
        while True:
            call = await asyncio.wait_for(self.calls.get(), 5)
            if call[0] == kind:
                return call


async def _server() -> tuple[
    asyncio.Server, int, asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
]:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.put_nowait((reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], accepted


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _driver(session: ScriptedSession, port: int, **kwargs: Any) -> PeerDriver:
    return PeerDriver("test", session, TransportConfig(LOCAL, port, **kwargs), lambda driver, events: None)


async def test_one_timer_rearmed_only_when_the_deadline_moves() -> None:
    session = ScriptedSession()
    driver = _driver(session, _free_port())
    loop = asyncio.get_running_loop()
    session.deadline = loop.time() + 60
    driver.pump()
    driver.pump()
    assert driver.timer_arms == 1
    first = driver.timer_deadline
    session.deadline = loop.time() + 0.02
    driver.pump()
    assert driver.timer_arms == 2
    assert driver.timer_deadline == session.deadline != first
    due = session.deadline
    _, now = await session.next_call("timer")
    assert now >= due  # never told it is before its own deadline
    assert driver.timer_deadline is None
    assert [c[0] for c in session.log] == ["timer"]  # the superseded 60 s timer never fired
    await driver.close()


async def test_no_deadline_means_no_timer() -> None:
    session = ScriptedSession()
    driver = _driver(session, _free_port())
    driver.pump()
    assert driver.timer_arms == 0
    assert driver.timer_deadline is None
    await driver.close()


async def test_connect_refused_is_reported_then_retry_succeeds_and_actions_are_executed() -> None:
    session = ScriptedSession()
    server, port, accepted = await _server()
    closed_port = _free_port()
    driver = _driver(session, closed_port)
    session.actions = [Connect()]
    driver.pump()
    _, error = await session.next_call("failed")
    assert "refused" in error.lower()
    assert driver.last_error == error

    driver.transport = TransportConfig(LOCAL, port)
    session.actions = [Connect()]
    driver.pump()
    _, conn, outgoing = await session.next_call("made")
    assert outgoing is True
    assert driver.connect_attempts == 2
    reader, writer = await asyncio.wait_for(accepted.get(), 5)

    session.actions = [Send(conn, b"hello")]
    driver.pump()
    assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"

    writer.write(b"from peer")
    await writer.drain()
    _, got_conn, data = await session.next_call("data")
    assert (got_conn, data) == (conn, b"from peer")

    # Close: the bytes sent before it still leave, then EOF; the session hears nothing back.
    session.actions = [Send(conn, b"bye"), Close(conn)]
    driver.pump()
    assert await asyncio.wait_for(reader.read(), 5) == b"bye"
    assert driver.connection(conn) is None
    await asyncio.sleep(0)
    assert not any(c[0] == "lost" for c in session.log)
    writer.close()
    await driver.close()
    server.close()


async def test_peer_closing_is_reported_as_connection_lost() -> None:
    session = ScriptedSession()
    server, port, accepted = await _server()
    source_port = _free_port()
    driver = _driver(session, port, local_address=LOCAL, local_port=source_port)
    session.actions = [Connect()]
    driver.pump()
    _, conn, _ = await session.next_call("made")
    connection = driver.connection(conn)
    assert connection is not None and connection.local is not None
    assert connection.local == (LOCAL, source_port)
    _, writer = await asyncio.wait_for(accepted.get(), 5)
    writer.close()
    _, lost_conn, error = await session.next_call("lost")
    assert lost_conn == conn
    assert error == "connection closed by peer"
    await driver.close()
    server.close()


async def test_connect_timeout_with_md5_names_the_likely_cause() -> None:
    session = ScriptedSession()
    listener = Listener(lambda address: None, ["127.0.0.1"], 0)
    await listener.start()
    listener.configure_peer(LOCAL, PeerSecurity(password="k3y-A"))
    port = listener.bound()[0][1]
    driver = _driver(session, port, password="k3y-B", connect_timeout=0.3)
    session.actions = [Connect()]
    driver.pump()
    _, error = await session.next_call("failed")
    assert "timed out" in error
    assert "TCP-MD5" in error
    assert "k3y" not in error  # never the key
    assert "k3y" not in repr(driver.transport)
    await driver.close()
    await listener.close()


async def test_a_new_connect_supersedes_the_pending_one() -> None:
    session = ScriptedSession()
    listener = Listener(lambda address: None, ["127.0.0.1"], 0)
    await listener.start()
    listener.configure_peer(LOCAL, PeerSecurity(password="right"))
    port = listener.bound()[0][1]
    driver = _driver(session, port, password="wrong", connect_timeout=30)
    session.actions = [Connect()]
    driver.pump()
    await asyncio.sleep(0.05)
    server, good_port, accepted = await _server()
    driver.transport = TransportConfig(LOCAL, good_port)
    session.actions = [Connect()]
    driver.pump()
    _, _conn, outgoing = await session.next_call("made")
    assert outgoing
    assert not any(c[0] == "failed" for c in session.log)  # the first attempt was cancelled, not failed
    (await accepted.get())[1].close()
    await driver.close()
    await listener.close()
    server.close()


async def test_accepted_connection_is_fed_to_the_session() -> None:
    session = ScriptedSession()
    driver = _driver(session, _free_port())
    listener = Listener(lambda address: driver, ["127.0.0.1"], 0)
    await listener.start()
    port = listener.bound()[0][1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    _, conn, outgoing = await session.next_call("made")
    assert outgoing is False
    connection = driver.connection(conn)
    assert connection is not None
    sock = connection.transport.get_extra_info("socket") if connection.transport else None
    assert sock is not None and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    writer.write(b"x")
    _, _, data = await session.next_call("data")
    assert data == b"x"
    writer.close()
    await driver.close()
    await listener.close()
