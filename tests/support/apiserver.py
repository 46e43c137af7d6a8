"""A real Kubernetes API server for tests: etcd + kube-apiserver on loopback, TLS and RBAC.

The binaries come from `.ci/build-go-tools.sh` (built from Go modules, cached by version). The
server is as close to a real control plane as the operator needs: TLS with a private CA, client
certificates for an admin in system:masters, RBAC authorization, service-account signing keys so
the TokenRequest API mints real tokens for restricted ServiceAccounts. No controller manager runs,
so nothing reconciles pods; the route server's operator does not need it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.prereq import require_binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


class ApiServer:
    """etcd + kube-apiserver; `kubeconfig` is an admin credential. Use as a context manager."""

    def __init__(self) -> None:
        self.etcd_bin = require_binary("etcd")
        self.apiserver_bin = require_binary("kube-apiserver")
        self.kubectl_bin = require_binary("kubectl")
        self.dir = Path(tempfile.mkdtemp(prefix="krs-apiserver-"))
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = self.dir / "admin.kubeconfig"
        self._etcd: _Proc | None = None
        self._apiserver: _Proc | None = None

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
        self._apiserver = _Proc(
            [
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
            ],
            self.dir / "kube-apiserver.log",
        )
        self._write_kubeconfig(
            self.kubeconfig,
            {
                "client-certificate": str(pki / "admin.crt"),
                "client-key": str(pki / "admin.key"),
            },
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for proc, name in ((self._etcd, "etcd"), (self._apiserver, "kube-apiserver")):
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
        return [p.popen.pid for p in (self._etcd, self._apiserver) if p is not None]

    def close(self) -> None:
        for proc in (self._apiserver, self._etcd):
            if proc is not None:
                proc.stop()
        if os.environ.get("KRS_KEEP_APISERVER") != "1":
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)
