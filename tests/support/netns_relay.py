"""A TCP relay from a lab namespace's loopback to a server on the root namespace's loopback.

The test API server listens on 127.0.0.1 of the root namespace only (the network rules forbid a
route out of a lab namespace); an agent runs inside a "node" namespace. This relay listens on
127.0.0.1:PORT *inside* the node namespace and forwards every connection to 127.0.0.1:TARGET in the
root namespace, byte for byte (TLS passes through: the server certificate names 127.0.0.1, so the
agent verifies it as usual).

Run as a process of its own (`python -m tests.support.netns_relay NETNS PORT TARGET`): it enters
the namespace on its only thread just long enough to open the listening socket, returns to the root
namespace, then relays with asyncio. `NetnsRelay` starts it, waits until the port answers, and stops
it by PID. `pause()`/`resume()` (SIGSTOP/SIGCONT) cut and restore the agents' access without
touching the API server, for outage tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.prereq import REPO_ROOT

CLONE_NEWNET = 0x40000000


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def listen_in(netns: str, port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:port of `netns`; the caller's thread ends in its own namespace."""
    own = f"/proc/{os.getpid()}/task/{os.getpid()}/ns/net"
    own_fd = os.open(own, os.O_RDONLY)
    try:
        _setns(f"/run/netns/{netns}")
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(128)
            sock.setblocking(False)
        finally:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(own_fd, CLONE_NEWNET) != 0:
                os._exit(3)  # never relay from the wrong namespace
    finally:
        os.close(own_fd)
    return sock


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(sock: socket.socket, target: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, sock=sock)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    netns, port, target = argv[0], int(argv[1]), int(argv[2])
    sock = listen_in(netns, port)
    print("listening", flush=True)
    asyncio.run(_serve(sock, target))
    return 0


class NetnsRelay:
    """The relay process for one namespace; stopped by PID in `close()`."""

    def __init__(self, netns: str, port: int, target: int, log: Path) -> None:
        self.netns, self.port, self.target = netns, port, target
        self.log = log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "tests.support.netns_relay", netns, str(port), str(target)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while "listening" not in log.read_text(errors="replace"):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"relay for {netns} did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)

    def pause(self) -> None:
        """Cut the namespace off the API server (connections stall, as in a network outage)."""
        os.kill(self.popen.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.popen.pid, signal.SIGCONT)

    def close(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGCONT)
                os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
