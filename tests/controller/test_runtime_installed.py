"""`prefixesInstalled` per peer: counted from the Loc-RIB changes, recounted when the selection changes."""

from __future__ import annotations

from controller.status import AgentStatus
from tests.controller.builders import association, desired, peer, server
from tests.controller.test_runtime import ALLOW, Harness, harness, two_firewalls

__all__ = ["harness"]  # the fixture


def installed(status: AgentStatus) -> dict[str, int | None]:
    return {p.name: p.prefixes_installed for rs in status.route_servers for p in rs.peers}


async def test_active_passive_counts_the_best_paths_and_follows_a_failover(harness: Harness) -> None:
    await harness.runtime.apply(two_firewalls())
    speaker = harness.speaker
    speaker.establish("fw-a")
    speaker.establish("fw-b")
    speaker.announce("fw-a", "203.0.113.10/32", path_length=1)
    speaker.announce("fw-b", "203.0.113.10/32", path_length=3)
    speaker.announce("fw-a", "203.0.113.20/32")
    await harness.settle()
    assert installed(harness.runtime.status()) == {"fw-a": 2, "fw-b": 0}
    speaker.withdraw("fw-a", "203.0.113.10/32")
    await harness.settle()
    assert installed(harness.runtime.status()) == {"fw-a": 1, "fw-b": 1}


async def test_ecmp_counts_every_path_of_the_installed_set_and_a_selection_change_recounts(
    harness: Harness,
) -> None:
    peers = [peer(n, a, liveness="BGPKeepalive") for n, a in (("a", "10.0.0.2"), ("b", "10.0.0.3"))]
    await harness.runtime.apply(desired([server(**ALLOW)], peers, [association("t")]))
    speaker = harness.speaker
    for name in ("a", "b"):
        speaker.establish(name)
        speaker.announce(name, "203.0.113.10/32")
    await harness.settle()
    assert sorted(installed(harness.runtime.status()).items(), key=lambda item: item[0]) in (
        [("a", 1), ("b", 0)],
        [("a", 0), ("b", 1)],
    )
    ecmp = desired(
        [server(**ALLOW, routeSelection={"mode": "ECMP", "maxPaths": 4})], peers, [association("t")]
    )
    await harness.runtime.apply(ecmp)
    await harness.settle()
    assert installed(harness.runtime.status()) == {"a": 1, "b": 1}
    speaker.withdraw("a", "203.0.113.10/32")
    await harness.settle()
    assert installed(harness.runtime.status()) == {"a": 0, "b": 1}
