"""The cached helm binary with private directories, and the names the chart tests install under."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.prereq import REPO_ROOT, require_binary

CHART = REPO_ROOT / "charts" / "kube-route-server"
RELEASE = "krs"
NAMESPACE = "krs-system"
FULLNAME = "krs-kube-route-server"


class Helm:
    """The cached helm binary with private config/cache/data directories."""

    def __init__(self, home: Path, kubeconfig: Path | None = None) -> None:
        self.bin = require_binary("helm")
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        if kubeconfig is not None:
            self.env["KUBECONFIG"] = str(kubeconfig)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.bin, *args], capture_output=True, text=True, env=self.env, timeout=180, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}:\n{result.stderr}")
        return result

    def template(self, *args: str) -> list[dict[str, Any]]:
        out = self.run("template", RELEASE, str(CHART), "-n", NAMESPACE, *args).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]
