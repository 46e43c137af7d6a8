"""Prerequisite checks that skip locally but fail under `make test`/CI.

A missing daemon or binary must never turn a CI run green by skipping: when KRS_REQUIRE_ALL=1
(set by the Makefile) or CI=true, a missing prerequisite is a test failure.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def strict() -> bool:
    """True when prerequisites are mandatory (CI, or the Makefile's test target)."""
    return os.environ.get("KRS_REQUIRE_ALL") == "1" or os.environ.get("CI", "").lower() == "true"


def missing(reason: str) -> NoReturn:
    """Fail in strict mode, skip otherwise."""
    if strict():
        pytest.fail(f"missing prerequisite: {reason}", pytrace=False)
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        missing("needs root (network namespaces)")


def bin_dir() -> Path:
    """Where the Go-built binaries live (see .ci/build-go-tools.sh)."""
    return Path(os.environ.get("KRS_BIN_DIR", REPO_ROOT / ".cache" / "bin"))


def require_binary(name: str) -> str:
    """Absolute path of a program, from the project's binary cache first, then PATH."""
    cached = bin_dir() / name
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    venv_bin = str(Path(sys.executable).parent)  # console scripts of our virtualenv (exabgp)
    found = shutil.which(name) or shutil.which(name, path=f"{venv_bin}:/usr/sbin:/usr/lib/frr:/sbin")
    if found is None:
        missing(f"program {name!r} not found (run `make test` to install it)")
    return found
