"""Network-namespace labs: hosts, veth links and L2 segments between them, processes inside them.

One implementation for the test suite (tests/support/netns.py re-exports it) and for `routeserver
demo`, so the demo builds its lab with exactly the code the integration tests exercise.

Safety rules (DEVELOPING.md), enforced here rather than trusted to each caller:
- nothing is ever created in the root namespace: veth pairs are created *inside* one lab namespace
  with the peer end placed directly into the other (`ip -n A link add a type veth peer name b netns B`),
  and a bridge lives in a lab namespace of its own (`Lab.switch`);
- only 198.51.100.0/24, 203.0.113.0/24, 10.0.0.0/8 and 2001:db8::/32 may be assigned (the machine's
  own 192.0.2.0/24 and fd00::/64 would cut it off);
- every namespace name carries a per-run prefix with the owning PID, so a sweeper can remove what a
  killed run left behind without ever touching anything else;
- teardown stops processes by PID, then deletes the namespaces, on close(), at interpreter exit and
  on SIGTERM.

Needs only iproute2 (`ip`, `tc`) and root; importing it needs neither (nor pytest).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import ip_interface, ip_network
from pathlib import Path
from types import FrameType

ALLOWED_NETWORKS = (
    ip_network("198.51.100.0/24"),
    ip_network("203.0.113.0/24"),
    ip_network("10.0.0.0/8"),
    ip_network("2001:db8::/32"),
)
PREFIX_RE = re.compile(r"^krs(?P<pid>\d+)x[0-9a-f]{3}-")
LAB_ENV = "KRS_LAB_HOST"  # set to the host's namespace name in the environment of every process it starts


class LabError(Exception):
    """A lab operation failed (with the command's stderr), or a safety rule refused it."""


def check_address(cidr: str) -> str:
    """Refuse any address outside the test ranges."""
    iface = ip_interface(cidr)
    network = iface.network
    inside = any(
        network.version == net.version and network.subnet_of(net)  # type: ignore[arg-type]
        for net in ALLOWED_NETWORKS
    )
    if not inside:
        raise LabError(f"{cidr} is outside the lab ranges {', '.join(str(n) for n in ALLOWED_NETWORKS)}")
    return str(iface)


def _ip(*args: str, check: bool = True, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ManagedProcess:
    """A long-lived process inside a lab host, stopped by PID at teardown."""

    def __init__(self, popen: subprocess.Popen[bytes], name: str, log_path: Path) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.name = name
        self.log_path = log_path

    def alive(self) -> bool:
        return self._popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGCONT (it may be frozen), SIGTERM, then SIGKILL after `timeout`; the whole process group."""
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self._popen.wait(timeout=timeout)
        # Reap stragglers of the group (a daemon that forked) by process group id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        return self._popen.returncode

    def wait(self, timeout: float | None = None) -> int:
        return self._popen.wait(timeout=timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class Link:
    a: Host
    b: Host
    a_ifname: str
    b_ifname: str


class Host:
    """One test host: a network namespace with its own work directory."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        self.name = name
        self.netns = f"{lab.prefix}{name}"
        self.workdir = lab.workdir / name
        self.workdir.mkdir(mode=0o755, exist_ok=True)
        self._if_counter = 0

    def __repr__(self) -> str:
        return f"Host({self.netns})"

    def next_ifname(self) -> str:
        name = f"eth{self._if_counter}"
        self._if_counter += 1
        return name

    def _wrap(self, argv: Sequence[str], user: str | None) -> list[str]:
        cmd = ["ip", "netns", "exec", self.netns]
        if user is not None:
            cmd += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
        return cmd + [str(a) for a in argv]

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 15.0,
        user: str | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and wait for it."""
        proc = subprocess.run(
            self._wrap(argv, user), capture_output=True, text=True, timeout=timeout, input=input, check=False
        )
        if check and proc.returncode != 0:
            raise LabError(f"[{self.name}] {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def popen(
        self,
        argv: Sequence[str],
        *,
        name: str,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> ManagedProcess:
        """Start a long-lived process inside the namespace; output goes to workdir/<name>.log."""
        log_path = self.workdir / f"{name}.log"
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        full_env[LAB_ENV] = self.netns  # marks every lab process, so a check can find stragglers
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                self._wrap(argv, user),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        proc = ManagedProcess(popen, name, log_path)
        self.lab._register(proc)
        return proc

    def sysctl(self, key: str, value: str, *, check: bool = True) -> None:
        """Set a network sysctl of this namespace (`net.ipv4.ip_forward`) through /proc/sys.

        Written with `tee` (coreutils) so the lab needs nothing beyond iproute2; interface names
        containing dots are not supported (the lab never makes them).
        """
        if not key.startswith("net."):
            raise LabError(f"only network sysctls belong to a namespace, not {key}")
        path = "/proc/sys/" + key.replace(".", "/")
        self.run("tee", path, input=f"{value}\n", check=check)

    def add_address(self, ifname: str, cidr: str) -> None:
        cidr = check_address(cidr)
        args = ["-n", self.netns, "addr", "add", cidr, "dev", ifname]
        if ":" in cidr:
            args.append("nodad")
        _ip(*args)

    def interfaces(self) -> list[str]:
        out = _ip("-n", self.netns, "-o", "link", "show").stdout
        names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
        return [n for n in names if n != "lo"]

    def addresses(self) -> list[str]:
        out = _ip("-n", self.netns, "-o", "addr", "show").stdout
        found = []
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[2] in ("inet", "inet6") and fields[1] != "lo":
                found.append(fields[3])
        return found

    def wait_ipv6_ready(self, ifname: str, timeout: float = 5.0) -> None:
        """Wait until no IPv6 address on `ifname` is tentative (link-local DAD), so IPv6 works at once."""

        def settled() -> bool:
            out = _ip("-n", self.netns, "-6", "addr", "show", "dev", ifname, "tentative").stdout
            return not out.strip()

        wait_until(settled, timeout, what=f"IPv6 DAD on {self.name}/{ifname}")

    def freeze(self, interfaces: Sequence[str] | None = None) -> None:
        """Drop every outgoing packet with the carrier still up: a `pfifo limit 0` root qdisc.

        `interfaces` (default: all but lo) spares a lookup when the caller times the freeze.
        """
        for ifname in self.interfaces() if interfaces is None else interfaces:
            _ip_tc("-n", self.netns, "qdisc", "replace", "dev", ifname, "root", "pfifo", "limit", "0")

    def unfreeze(self, interfaces: Sequence[str] | None = None) -> None:
        for ifname in self.interfaces() if interfaces is None else interfaces:
            _ip_tc("-n", self.netns, "qdisc", "del", "dev", ifname, "root", check=False)


def _ip_tc(*args: str, check: bool = True) -> None:
    proc = subprocess.run(["tc", *args], capture_output=True, text=True, timeout=10, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"tc {' '.join(args)}: {proc.stderr.strip()}")


_LIVE_LABS: set[Lab] = set()
_LIVE_LOCK = threading.Lock()


class Lab:
    """A set of hosts (network namespaces) that exists for one test and is always torn down."""

    def __init__(self, name: str = "lab") -> None:
        self.name = name
        self.prefix = f"krs{os.getpid()}x{secrets.token_hex(2)[:3]}-"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}{name}-"))
        self.workdir.chmod(0o755)
        self.hosts: dict[str, Host] = {}
        self._processes: list[ManagedProcess] = []
        self._closed = False
        with _LIVE_LOCK:
            _LIVE_LABS.add(self)
        _install_handlers()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def host(self, name: str) -> Host:
        """Create a host: a namespace with loopback up and IPv6 enabled."""
        if name in self.hosts:
            raise LabError(f"host {name} exists")
        if len(self.prefix) + len(name) > 40:
            raise LabError(f"host name {name!r} too long")
        host = Host(self, name)
        _ip("netns", "add", host.netns)
        self.hosts[name] = host
        _ip("-n", host.netns, "link", "set", "lo", "up")
        for key, value in (
            ("net.ipv6.conf.all.disable_ipv6", "0"),
            ("net.ipv6.conf.default.disable_ipv6", "0"),
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
        ):
            host.sysctl(key, value, check=False)
        return host

    def link(
        self,
        a: Host,
        b: Host,
        a_addrs: Sequence[str] = (),
        b_addrs: Sequence[str] = (),
        *,
        a_ifname: str | None = None,
        b_ifname: str | None = None,
    ) -> Link:
        """A veth pair created inside `a` with its peer end moved straight into `b`; both up."""
        for cidr in (*a_addrs, *b_addrs):
            check_address(cidr)
        a_if = a_ifname or a.next_ifname()
        b_if = b_ifname or b.next_ifname()
        _ip("-n", a.netns, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.netns)
        for host, ifname, addrs in ((a, a_if, a_addrs), (b, b_if, b_addrs)):
            for cidr in addrs:
                host.add_address(ifname, cidr)
            _ip("-n", host.netns, "link", "set", ifname, "up")
        for host, ifname in ((a, a_if), (b, b_if)):
            host.wait_ipv6_ready(ifname)
        return Link(a, b, a_if, b_if)

    def switch(
        self, name: str, members: Mapping[Host, Sequence[str]], *, bridge: str = "br0"
    ) -> dict[Host, str]:
        """One L2 segment: a host `name` holding a Linux bridge with a veth port to each member.

        Each member gets its end of the veth with `members[host]` addresses; returns the member's
        interface name per host. STP stays off, so ports forward at once.
        """
        sw = self.host(name)
        _ip("-n", sw.netns, "link", "add", bridge, "type", "bridge")
        _ip("-n", sw.netns, "link", "set", bridge, "up")
        ports: dict[Host, str] = {}
        for member, addrs in members.items():
            link = self.link(sw, member, (), addrs)
            _ip("-n", sw.netns, "link", "set", link.a_ifname, "master", bridge)
            ports[member] = link.b_ifname
        return ports

    def _register(self, proc: ManagedProcess) -> None:
        self._processes.append(proc)

    def processes(self) -> list[ManagedProcess]:
        return list(self._processes)

    def close(self) -> None:
        """Stop every process (by PID), delete every namespace, remove the work directory."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for proc in reversed(self._processes):
            try:
                proc.stop()
            except Exception as exc:  # keep tearing down the rest
                errors.append(f"{proc.name}: {exc}")
        for host in self.hosts.values():
            # Processes started with `ip netns exec` outside popen (daemons that fork) die with the netns
            # only if we kill them: find PIDs still inside this namespace and stop them.
            for pid in _pids_in_netns(host.netns):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deleted = _ip("netns", "del", host.netns, check=False)
            if deleted.returncode != 0 and "No such file" not in deleted.stderr:
                errors.append(f"netns del {host.netns}: {deleted.stderr.strip()}")
        if os.environ.get("KRS_KEEP_LAB") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)
        with _LIVE_LOCK:
            _LIVE_LABS.discard(self)
        if errors:
            raise LabError("lab teardown: " + "; ".join(errors))


def _pids_in_netns(netns: str) -> list[int]:
    proc = _ip("netns", "pids", netns, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit() and int(p) != os.getpid()]


def close_all_labs() -> None:
    with _LIVE_LOCK:
        labs = list(_LIVE_LABS)
    for lab in labs:
        with contextlib.suppress(Exception):
            lab.close()


_handlers_installed = False


def _install_handlers() -> None:
    """Close live labs at exit and on SIGTERM (a killed test run must not leak namespaces)."""
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(close_all_labs)
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: FrameType | None) -> None:
        close_all_labs()
        if callable(previous):
            previous(signum, frame)
        else:
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)


def sweep_stale_labs() -> list[str]:
    """Delete namespaces left by earlier runs whose owning process is gone; only our own prefix."""
    removed = []
    out = _ip("netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        match = PREFIX_RE.match(name)
        if not match:
            continue
        pid = int(match.group("pid"))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        for stray in _pids_in_netns(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(stray, signal.SIGKILL)
        if _ip("netns", "del", name, check=False).returncode == 0:
            removed.append(name)
    return removed


def wait_until(predicate: object, timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    """Poll `predicate()` until true; raise AssertionError naming `what` after `timeout` seconds."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
