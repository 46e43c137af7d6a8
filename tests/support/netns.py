"""Network-namespace labs for tests: a re-export of lab/netlab.py (one implementation).

The demo (`routeserver demo`) builds its lab with the same code; see lab/netlab.py for the
safety rules (root namespace untouched, lab address ranges only, teardown by PID).
"""

from __future__ import annotations

from lab.netlab import (
    ALLOWED_NETWORKS,
    LAB_ENV,
    PREFIX_RE,
    Host,
    Lab,
    LabError,
    Link,
    ManagedProcess,
    check_address,
    close_all_labs,
    sweep_stale_labs,
    wait_until,
)

__all__ = [
    "ALLOWED_NETWORKS",
    "LAB_ENV",
    "PREFIX_RE",
    "Host",
    "Lab",
    "LabError",
    "Link",
    "ManagedProcess",
    "check_address",
    "close_all_labs",
    "sweep_stale_labs",
    "wait_until",
]
