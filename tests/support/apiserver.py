"""A real Kubernetes control plane for tests: etcd + kube-apiserver + kube-controller-manager on
loopback, TLS and RBAC.

The binaries come from `.ci/build-go-tools.sh` (built from Go modules, cached by version). The
cluster is as close to a real control plane as the operator needs: TLS with a private CA, client
certificates for an admin in system:masters, RBAC authorization, service-account signing keys so
the TokenRequest API mints real tokens for restricted ServiceAccounts. The controller manager
(`controller_manager=True`, the default) runs only the controllers the operator relies on: garbage
collection of ownerReferences, namespace deletion, the `default` ServiceAccount and legacy token
Secrets, and the `kube-root-ca.crt` ConfigMap in every namespace. Nothing schedules or runs pods.
`stop_apiserver()`/`start_apiserver()` take only the kube-apiserver down and up again (same port,
etcd and certificates) for API-outage tests; etcd and the controller manager keep running.

This module owns the processes it starts and stops them by PID; it never touches anything else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.prereq import require_binary

_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on, never one this process was given before: the kernel may
    hand the same ephemeral port to consecutive bind(0) calls once each socket is closed (two of
    etcd's URLs on one port: "bind: address already in use")."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no unused loopback port after 1000 tries")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class _Proc:
    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)


# The controllers the operator relies on (names as `kube-controller-manager --help` lists them).
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
)


class ApiServer:
    """etcd + kube-apiserver (+ kube-controller-manager); `kubeconfig` is an admin credential.
    Use as a context manager."""

    def __init__(self, controller_manager: bool = True) -> None:
        self.etcd_bin = require_binary("etcd")
        self.apiserver_bin = require_binary("kube-apiserver")
        self.kubectl_bin = require_binary("kubectl")
        self.controller_manager_bin = (
            require_binary("kube-controller-manager") if controller_manager else None
        )
        self.dir = Path(tempfile.mkdtemp(prefix="krs-apiserver-"))
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = self.dir / "admin.kubeconfig"
        self.controller_manager_port = free_port() if controller_manager else None
        self._etcd: _Proc | None = None
        self._apiserver: _Proc | None = None
        self._controller_manager: _Proc | None = None
        self._apiserver_argv: list[str] = []

    def __enter__(self) -> ApiServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- setup ----------------------------------------------------------------------------------

    def _pki(self) -> None:
        pki = self.dir / "pki"
        pki.mkdir()
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=krs-test-ca",
            cwd=pki,
        )
        ext = pki / "server.ext"
        ext.write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
            "extendedKeyUsage=serverAuth\n"
        )
        self._leaf("server", "/CN=kube-apiserver", ext)
        client_ext = pki / "client.ext"
        client_ext.write_text("extendedKeyUsage=clientAuth\n")
        self._leaf("admin", "/O=system:masters/CN=krs-admin", client_ext)
        if self.controller_manager_bin is not None:
            # Its own identity, in system:masters: with --use-service-account-credentials=false every
            # controller acts as this user, and the garbage collector and the namespace controller
            # delete arbitrary resources (custom ones too), which the default
            # system:kube-controller-manager ClusterRole (list/watch everything, write only Secrets
            # and ServiceAccounts) does not grant.
            self._leaf(
                "controller-manager", "/O=system:masters/CN=system:kube-controller-manager", client_ext
            )
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)

    def _leaf(self, name: str, subject: str, ext: Path) -> None:
        pki = self.dir / "pki"
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            subject,
            cwd=pki,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            str(ext),
            cwd=pki,
        )

    def _write_kubeconfig(self, path: Path, user: dict[str, str]) -> Path:
        pki = self.dir / "pki"
        lines = [
            "apiVersion: v1",
            "kind: Config",
            "clusters:",
            "- name: test",
            "  cluster:",
            f"    server: {self.url}",
            f"    certificate-authority: {pki / 'ca.crt'}",
            "users:",
            "- name: user",
            "  user:",
            *[f"    {k}: {v}" for k, v in user.items()],
            "contexts:",
            "- name: test",
            "  context:",
            "    cluster: test",
            "    user: user",
            "current-context: test",
        ]
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    def start(self) -> None:
        self._pki()
        pki = self.dir / "pki"
        client, peer = free_port(), free_port()
        self._etcd = _Proc(
            [
                self.etcd_bin,
                "--name",
                "krs",
                "--data-dir",
                str(self.dir / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{client}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{client}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                f"krs=http://127.0.0.1:{peer}",
                "--log-level",
                "warn",
                "--unsafe-no-fsync",
                "--listen-metrics-urls",
                f"http://127.0.0.1:{free_port()}",
            ],
            self.dir / "etcd.log",
        )
        self._apiserver_argv = [
            self.apiserver_bin,
            f"--etcd-servers=http://127.0.0.1:{client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--tls-cert-file={pki / 'server.crt'}",
            f"--tls-private-key-file={pki / 'server.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--endpoint-reconciler-type=none",
            f"--cert-dir={self.dir / 'certs'}",
            "--enable-priority-and-fairness=false",
            "--v=0",
        ]
        self._apiserver = _Proc(self._apiserver_argv, self.dir / "kube-apiserver.log")
        self._write_kubeconfig(
            self.kubeconfig,
            {
                "client-certificate": str(pki / "admin.crt"),
                "client-key": str(pki / "admin.key"),
            },
        )
        self._wait_ready()
        if self.controller_manager_bin is not None:
            self._start_controller_manager(self.controller_manager_bin)

    def _start_controller_manager(self, binary: str) -> None:
        pki = self.dir / "pki"
        kubeconfig = self._write_kubeconfig(
            self.dir / "controller-manager.kubeconfig",
            {
                "client-certificate": str(pki / "controller-manager.crt"),
                "client-key": str(pki / "controller-manager.key"),
            },
        )
        self._controller_manager = _Proc(
            [
                binary,
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.controller_manager_port}",
                f"--tls-cert-file={pki / 'server.crt'}",
                f"--tls-private-key-file={pki / 'server.key'}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                "--v=0",
            ],
            self.dir / "kube-controller-manager.log",
        )
        self._wait_controller_manager_ready()

    def _wait_controller_manager_ready(self, timeout: float = 60.0) -> None:
        proc = self._controller_manager
        assert proc is not None
        context = ssl.create_default_context(cafile=str(self.dir / "pki" / "ca.crt"))
        url = f"https://127.0.0.1:{self.controller_manager_port}/healthz"
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(
                    f"kube-controller-manager exited:\n{proc.log.read_text(errors='replace')[-3000:]}"
                )
            try:
                with urllib.request.urlopen(url, context=context, timeout=5) as response:
                    body = response.read().decode(errors="replace").strip()
                if body == "ok":
                    return
                last = body
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.25)
        raise RuntimeError(f"kube-controller-manager not healthy after {timeout}s: {last}")

    def running(self) -> bool:
        """The kube-apiserver process is up (False between stop_apiserver and start_apiserver)."""
        return self._apiserver is not None and self._apiserver.alive()

    def stop_apiserver(self) -> None:
        """Stop only the kube-apiserver (etcd and the controller manager keep running)."""
        if self._apiserver is not None:
            self._apiserver.stop()

    def start_apiserver(self) -> None:
        """Start the kube-apiserver again after `stop_apiserver()`: same port, etcd and certificates;
        returns once it is ready."""
        if self._apiserver is not None and self._apiserver.alive():
            raise RuntimeError("kube-apiserver is already running")
        self._apiserver = _Proc(self._apiserver_argv, self.dir / "kube-apiserver.log")
        self._wait_ready()

    def _wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for proc, name in (
                (self._etcd, "etcd"),
                (self._apiserver, "kube-apiserver"),
                (self._controller_manager, "kube-controller-manager"),
            ):
                if proc is not None and not proc.alive():
                    raise RuntimeError(f"{name} exited:\n{proc.log.read_text(errors='replace')[-3000:]}")
            result = self.kubectl("get", "--raw", "/readyz", check=False)
            if result.returncode == 0 and result.stdout.strip() == "ok":
                return
            last = result.stderr.strip() or result.stdout.strip()
            time.sleep(0.5)
        raise RuntimeError(f"kube-apiserver not ready after {timeout}s: {last}")

    # -- use ------------------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.kubectl_bin, f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def apply(self, manifest: str, *, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", input=manifest, kubeconfig=kubeconfig)

    def create_service_account(self, namespace: str, name: str) -> None:
        self.apply(f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n")
        self.apply(
            f"apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
        )

    def token_for(self, namespace: str, service_account: str, expiration_seconds: int = 3600) -> str:
        """A real bound token from the TokenRequest API."""
        result = self.kubectl(
            "create", "token", service_account, "-n", namespace, f"--duration={expiration_seconds}s"
        )
        return result.stdout.strip()

    def kubeconfig_for_token(self, token: str, name: str = "sa") -> Path:
        return self._write_kubeconfig(self.dir / f"{name}.kubeconfig", {"token": token})

    def client(self, kubeconfig: Path | None = None) -> Any:
        """A kubernetes.client.ApiClient for this server."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))  # type: ignore[no-untyped-call]

    def pids(self) -> list[int]:
        """PIDs of every process this server started (etcd, kube-apiserver, kube-controller-manager)."""
        procs = (self._etcd, self._apiserver, self._controller_manager)
        return [p.popen.pid for p in procs if p is not None]

    def close(self) -> None:
        for proc in (self._controller_manager, self._apiserver, self._etcd):
            if proc is not None:
                proc.stop()
        if os.environ.get("KRS_KEEP_APISERVER") != "1":
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)
