"""A failing or killed test leaves no namespace and no process behind.

Each case runs a child pytest on a generated test that builds a lab with a long-lived process and a
real BIRD daemon, writes what it created to a file, then fails (or is killed with SIGTERM).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.prereq import REPO_ROOT, require_binary, require_root

pytestmark = pytest.mark.netns

CHILD = """
import json, os, time
from tests.support.netns import Lab
from tests.support.daemons.bird import BirdDaemon
from tests.support.daemons.base import Neighbor

def test_child():
    with Lab("child") as lab:
        host = lab.host("h")
        peer = lab.host("p")
        lab.link(host, peer, ["10.0.0.1/24"], ["10.0.0.2/24"])
        sleeper = host.popen(["sleep", "600"], name="sleeper")
        bird = BirdDaemon(host, asn=65001, router_id="10.0.0.1", neighbors=[Neighbor("10.0.0.2", 65002)])
        bird.start()
        pids = [p.pid for p in lab.processes()]
        pids += [int(x) for x in host.run("cat", str(bird.dir / "bird.pid")).stdout.split()]
        with open(os.environ["KRS_CHILD_REPORT"], "w") as f:
            json.dump({"prefix": lab.prefix, "pids": pids}, f)
        if os.environ["KRS_CHILD_MODE"] == "fail":
            assert False, "deliberate failure"
        time.sleep(600)
"""


def _netns_names() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def _run_child(tmp_path: Path, mode: str) -> dict[str, object]:
    require_root()
    require_binary("bird")
    test_file = tmp_path / "test_child_lab.py"
    test_file.write_text(CHILD)
    report = tmp_path / "report.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "KRS_CHILD_REPORT": str(report),
        "KRS_CHILD_MODE": mode,
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        if mode == "kill":
            deadline = time.monotonic() + 60
            while not report.exists():
                assert time.monotonic() < deadline, "child never built its lab"
                assert child.poll() is None, child.communicate()[0]
                time.sleep(0.1)
            time.sleep(0.2)
            child.send_signal(signal.SIGTERM)
        output, _ = child.communicate(timeout=90)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert report.exists(), output
    result: dict[str, object] = json.loads(report.read_text())
    result["returncode"] = child.returncode
    result["output"] = output
    return result


def _assert_clean(result: dict[str, object]) -> None:
    prefix = str(result["prefix"])
    assert prefix not in _netns_names(), f"namespaces of {prefix} left behind"
    for pid in result["pids"]:  # type: ignore[attr-defined]
        alive = True
        try:
            os.kill(int(pid), 0)
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
            alive = state != "Z"
        except (ProcessLookupError, FileNotFoundError):
            alive = False
        assert not alive, f"process {pid} of the child lab still running"


def test_failing_test_cleans_up_namespaces_and_processes(tmp_path: Path) -> None:
    result = _run_child(tmp_path, "fail")
    assert result["returncode"] == 1, result["output"]
    assert "deliberate failure" in str(result["output"])
    _assert_clean(result)


def test_test_killed_with_sigterm_cleans_up(tmp_path: Path) -> None:
    result = _run_child(tmp_path, "kill")
    assert result["returncode"] != 0
    _assert_clean(result)
