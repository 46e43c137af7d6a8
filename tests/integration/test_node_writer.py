"""NodeTableWriter against the real kernel, inside lab namespaces only.

The writer runs in `tests.support.writer_proc`, a process started inside the lab host `node`
(`ip netns exec`), so its netlink sockets can only ever see that namespace. Kernel state is read
back with iproute2 (`ip -j route`, `ip -j nexthop`, `ip monitor`) in the same namespace. `node` has
two links to `peer`: next hop A = 10.0.1.2 / 2001:db8:1::2, next hop B = 10.0.2.2 / 2001:db8:2::2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_network
from pathlib import Path
from typing import Any

import pytest

from tests.support.netns import Host, Lab, ManagedProcess, wait_until
from tests.support.prereq import REPO_ROOT
from tests.support.writer_proc import WriterClient

pytestmark = pytest.mark.netns

TABLE = 100
METRIC = 50
PROTO = 245
A, B = "10.0.1.2", "10.0.2.2"
A6, B6 = "2001:db8:1::2", "2001:db8:2::2"
UNREACHABLE = "10.99.0.1"


@dataclass
class NodeLab:
    lab: Lab
    node: Host

    def writer(self, name: str = "writer") -> tuple[ManagedProcess, WriterClient]:
        """A writer_proc inside `node`, connected."""
        control = self.node.workdir / f"{name}.sock"
        proc = self.node.popen(
            [sys.executable, "-m", "tests.support.writer_proc", "--control", str(control)],
            name=name,
            cwd=REPO_ROOT,
        )
        wait_until(lambda: control.exists() or not proc.alive(), 30, what=f"{name} control socket")
        assert proc.alive(), proc.log_text()
        return proc, WriterClient(control)

    def ip(self, *args: str) -> str:
        return self.node.run("ip", *args).stdout

    def routes(self, table: int = TABLE) -> dict[tuple[str, int], dict[str, Any]]:
        """(prefix, metric) -> {protocol, gateways (sorted), nhid} for IPv4 and IPv6 of `table`."""
        out: dict[tuple[str, int], dict[str, Any]] = {}
        for family in ("-4", "-6"):
            shown = self.node.run("ip", "-j", family, "route", "show", "table", str(table), check=False)
            if shown.returncode != 0:
                assert "FIB table does not exist" in shown.stderr, shown.stderr
                continue
            for route in json.loads(shown.stdout or "[]"):
                dst = route["dst"]
                if "/" not in dst and dst != "default":
                    dst = str(ip_network(dst))
                hops = route.get("nexthops") or ([route] if "gateway" in route else [])
                out[(dst, route.get("metric", 0))] = {
                    "protocol": str(route.get("protocol", "boot")),
                    "gateways": sorted(h["gateway"] for h in hops),
                    "nhid": route.get("nhid"),
                    "type": route.get("type", "unicast"),
                }
        return out

    def nexthops(self) -> dict[int, dict[str, Any]]:
        return {nh["id"]: nh for nh in json.loads(self.ip("-j", "nexthop", "show") or "[]")}


@pytest.fixture
def node_lab(lab: Lab) -> Iterator[NodeLab]:
    node = lab.host("node")
    peer = lab.host("peer")
    lab.link(node, peer, ["10.0.1.1/24", "2001:db8:1::1/64"], ["10.0.1.2/24", "2001:db8:1::2/64"])
    lab.link(node, peer, ["10.0.2.1/24", "2001:db8:2::1/64"], ["10.0.2.2/24", "2001:db8:2::2/64"])
    yield NodeLab(lab, node)


def open_writer(client: WriterClient, name: str = "w", **options: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"table": TABLE, "metric": METRIC, "protocol": PROTO, "watch": False}
    settings.update(options)
    client.call("open", name=name, **settings)
    return client.call("start", name=name)


def vips(count: int, base: str = "203.0.113.0") -> list[str]:
    """`count` host prefixes: 203.0.113.x, then on into 10.200.0.0/16 for large counts."""
    first = IPv4Address(base) if count <= 250 else IPv4Address("10.200.0.0")
    return [f"{first + i}/32" for i in range(count)]


def rejected(report: dict[str, Any]) -> dict[str, str]:
    return {r["prefix"]: r["reason"] for r in report["rejected"]}


MODES = [pytest.param(True, id="nexthop-objects"), pytest.param(False, id="explicit-gateways")]


@pytest.mark.parametrize("objects", MODES)
def test_installs_ipv4_and_ipv6_into_numbered_table_with_metric(node_lab: NodeLab, objects: bool) -> None:
    _proc, client = node_lab.writer()
    started = open_writer(client, nexthop_objects=objects)
    assert started["nexthop_objects"] is objects

    report = client.call(
        "apply",
        name="w",
        changes={"203.0.113.10/32": [A], "203.0.113.11/32": [B], "2001:db8:ff::10/128": [A6]},
    )["report"]

    assert report["installed"] == 3
    assert report["rejected"] == []
    routes = node_lab.routes()
    assert routes[("203.0.113.10/32", METRIC)] == {
        "protocol": str(PROTO),
        "gateways": [A],
        "nhid": routes[("203.0.113.10/32", METRIC)]["nhid"],
        "type": "unicast",
    }
    assert routes[("203.0.113.11/32", METRIC)]["gateways"] == [B]
    assert routes[("2001:db8:ff::10/128", METRIC)]["gateways"] == [A6]
    assert routes[("2001:db8:ff::10/128", METRIC)]["protocol"] == str(PROTO)
    assert all((r["nhid"] is not None) is objects for r in routes.values())
    assert "203.0.113.10" not in node_lab.ip("route", "show", "table", "main")
    installed = client.call("installed", name="w")["routes"]
    assert installed == {"203.0.113.10/32": [A], "203.0.113.11/32": [B], "2001:db8:ff::10/128": [A6]}


def test_table_by_name_resolved_from_injected_rt_tables(node_lab: NodeLab, tmp_path: Path) -> None:
    rt_tables = tmp_path / "rt_tables.d"
    rt_tables.mkdir()
    (rt_tables / "krs.conf").write_text("# test tables\n123\tvips\n")
    _proc, client = node_lab.writer()
    open_writer(client, table="vips", rt_tables=[str(rt_tables)])

    client.call("apply", name="w", changes={"203.0.113.20/32": [A]})

    assert ("203.0.113.20/32", METRIC) in node_lab.routes(123)
    assert node_lab.routes(TABLE) == {}


@pytest.mark.parametrize("objects", MODES)
def test_ecmp_installs_one_multipath_route(node_lab: NodeLab, objects: bool) -> None:
    _proc, client = node_lab.writer()
    open_writer(client, nexthop_objects=objects)

    report = client.call(
        "apply", name="w", changes={"198.51.100.0/24": [B, A], "2001:db8:ee::/64": [A6, B6]}
    )["report"]

    assert report["installed"] == 2
    routes = node_lab.routes()
    assert routes[("198.51.100.0/24", METRIC)]["gateways"] == [A, B]
    assert routes[("2001:db8:ee::/64", METRIC)]["gateways"] == [A6, B6]
    if objects:
        group = node_lab.nexthops()[routes[("198.51.100.0/24", METRIC)]["nhid"]]
        assert len(group["group"]) == 2

    # One member leaves the set: still one route, now single-path.
    client.call("apply", name="w", changes={"198.51.100.0/24": [B]})
    assert node_lab.routes()[("198.51.100.0/24", METRIC)]["gateways"] == [B]


def test_failover_with_nexthop_groups_is_constant_messages(node_lab: NodeLab) -> None:
    _proc, client = node_lab.writer()
    open_writer(client, nexthop_objects=True)
    counts = {}
    for count in (10, 1000):
        prefixes = vips(count)
        install = client.call("apply", name="w", changes={p: [A] for p in prefixes})["report"]
        assert install["installed"] == count
        before = node_lab.routes()
        nhid_before = {before[(p, METRIC)]["nhid"] for p in prefixes}
        assert len(nhid_before) == 1

        failover = client.call("apply", name="w", changes={p: [B] for p in prefixes})["report"]

        assert failover["installed"] == count
        assert failover["rejected"] == []
        counts[count] = failover["netlink_messages"]
        after = node_lab.routes()
        assert {tuple(after[(p, METRIC)]["gateways"]) for p in prefixes} == {(B,)}
        assert {after[(p, METRIC)]["nhid"] for p in prefixes} == nhid_before  # routes untouched
        client.call("withdraw_all", name="w")
        assert node_lab.routes() == {}
    assert counts[10] == counts[1000] <= 3


def test_failover_without_nexthop_objects_is_one_batch_of_replaces(node_lab: NodeLab) -> None:
    _proc, client = node_lab.writer()
    open_writer(client, nexthop_objects=False)
    prefixes = vips(1000)
    client.call("apply", name="w", changes={p: [A] for p in prefixes})

    failover = client.call("apply", name="w", changes={p: [B] for p in prefixes})["report"]

    assert failover["installed"] == 1000
    assert failover["netlink_messages"] == 1000
    after = node_lab.routes()
    assert {tuple(after[(p, METRIC)]["gateways"]) for p in prefixes} == {(B,)}
    assert not any(nh.get("protocol") == str(PROTO) for nh in node_lab.nexthops().values())


def test_foreign_route_in_our_table_is_never_modified_or_deleted(node_lab: NodeLab) -> None:
    node = node_lab.node
    # Before the writer starts (it learns them when it adopts the table) ...
    node.run("ip", "route", "add", "203.0.113.50/32", "via", A, "table", str(TABLE), "metric", str(METRIC))
    node.run(
        "ip", "-6", "route", "add", "2001:db8:ff::50/128", "via", A6, "table", str(TABLE), "metric", "50"
    )
    node.run("ip", "route", "add", "203.0.113.52/32", "via", A, "table", str(TABLE), "metric", "7")
    node.run("ip", "route", "add", "203.0.113.53/32", "via", A, "table", "main")
    _proc, client = node_lab.writer()
    open_writer(client, nexthop_objects=True)
    # ... and after (the kernel refuses our exclusive create).
    node.run("ip", "route", "add", "203.0.113.51/32", "via", A, "table", str(TABLE), "metric", str(METRIC))
    foreign_before = {k: v for k, v in node_lab.routes().items() if v["protocol"] != str(PROTO)}

    wanted = [
        "203.0.113.50/32",
        "2001:db8:ff::50/128",
        "203.0.113.51/32",
        "203.0.113.52/32",
        "203.0.113.53/32",
    ]
    report = client.call(
        "apply", name="w", changes={**{p: [B6 if ":" in p else B] for p in wanted}, "203.0.113.60/32": [B]}
    )["report"]

    assert rejected(report) == {
        "203.0.113.50/32": "ConflictsWithForeignRoute",
        "2001:db8:ff::50/128": "ConflictsWithForeignRoute",
        "203.0.113.51/32": "ConflictsWithForeignRoute",
    }
    assert report["installed"] == 3  # .52 (theirs is at another metric), .53 (theirs is in main), .60
    routes = node_lab.routes()
    assert {k: v for k, v in routes.items() if v["protocol"] != str(PROTO)} == foreign_before
    assert routes[("203.0.113.52/32", METRIC)]["gateways"] == [B]
    assert node_lab.ip("route", "show", "203.0.113.53/32").strip().startswith("203.0.113.53 via 10.0.1.2")

    # Removing and withdrawing never touch them either.
    client.call("apply", name="w", changes={"203.0.113.50/32": None, "203.0.113.51/32": None})
    withdrawn = client.call("withdraw_all", name="w")["report"]
    assert withdrawn["removed"] == 3
    assert node_lab.routes() == foreign_before
    assert "203.0.113.53" in node_lab.ip("route", "show", "table", "main")


@pytest.mark.parametrize("objects", MODES)
def test_restart_adopts_routes_without_rewriting_and_removes_stale(node_lab: NodeLab, objects: bool) -> None:
    first, client = node_lab.writer("first")
    open_writer(client, nexthop_objects=objects)
    prefixes = vips(20)
    desired = {p: [A] for p in prefixes} | {"198.51.100.0/24": [A, B], "2001:db8:ff::1/128": [B6]}
    client.call("resync", name="w", desired=desired)
    routes_before = node_lab.routes()
    nexthops_before = node_lab.nexthops()
    client.close()
    first.stop()
    assert node_lab.routes() == routes_before  # stopping never withdraws

    monitor = node_lab.node.popen(
        ["stdbuf", "-oL", "ip", "-ts", "monitor", "route", "nexthop"], name="monitor"
    )
    marks = iter(range(1, 250))

    def monitor_sees_a_mark() -> bool:
        """A route added to table 999 shows in the log: the monitor is listening (it has no ready signal)."""
        node_lab.node.run("ip", "route", "replace", f"10.250.0.{next(marks)}/32", "dev", "lo", "table", "999")
        return "table 999" in monitor.log_text()

    wait_until(monitor_sees_a_mark, 10, interval=0.2, what="ip monitor to start")
    _second, client = node_lab.writer("second")
    open_writer(client, nexthop_objects=objects)
    assert client.call("installed", name="w")["routes"] == {
        str(ip_network(p)): sorted(g) for p, g in desired.items()
    }
    stale = prefixes[:5]
    kept = {p: g for p, g in desired.items() if p not in stale}

    report = client.call("resync", name="w", desired=kept)["report"]

    assert report["installed"] == 0
    assert report["removed"] == 5
    assert report["rejected"] == []
    routes_after = node_lab.routes()
    assert routes_after == {k: v for k, v in routes_before.items() if k[0] not in stale}
    assert node_lab.nexthops() == nexthops_before  # same ids, same members: adopted, not re-created
    node_lab.node.run("ip", "route", "add", "10.250.1.1/32", "dev", "lo", "table", "999")
    wait_until(lambda: "10.250.1.1" in monitor.log_text(), 10, what="ip monitor to catch up")
    log = [line for line in monitor.log_text().splitlines() if "table 999" not in line]
    deleted = {line.split()[2] for line in log if line.split()[1:2] == ["Deleted"] and "203.0.113" in line}
    assert deleted == {p.removesuffix("/32") for p in stale}
    assert not [line for line in log if "Deleted" not in line and ("nhid" in line or "proto 245" in line)]


def test_resync_restores_routes_deleted_or_changed_by_hand(node_lab: NodeLab) -> None:
    _proc, client = node_lab.writer()
    open_writer(client, nexthop_objects=True)
    desired = {"203.0.113.5/32": [A], "203.0.113.6/32": [A], "2001:db8:ff::5/128": [A6]}
    client.call("resync", name="w", desired=desired)
    node = node_lab.node
    node.run("ip", "route", "del", "203.0.113.5/32", "table", str(TABLE), "metric", str(METRIC))
    node.run("ip", "-6", "route", "del", "2001:db8:ff::5/128", "table", str(TABLE), "metric", str(METRIC))
    node.run(
        "ip", "route", "replace", "203.0.113.6/32", "via", B, "table", str(TABLE),
        "metric", str(METRIC), "proto", str(PROTO),
    )  # fmt: skip

    report = client.call("resync", name="w", desired=desired)["report"]

    assert report["installed"] == 3
    routes = node_lab.routes()
    assert {p: routes[(p, METRIC)]["gateways"] for p in desired} == desired
    assert all(routes[(p, METRIC)]["protocol"] == str(PROTO) for p in desired)


def test_watcher_restores_deleted_route_and_nexthop_without_a_resync_call(node_lab: NodeLab) -> None:
    _proc, client = node_lab.writer()
    open_writer(client, nexthop_objects=True, watch=True, resync_interval=None, debounce=0.02)
    desired = {"203.0.113.7/32": [A], "203.0.113.8/32": [A], "2001:db8:ff::7/128": [A6]}
    client.call("resync", name="w", desired=desired)
    node = node_lab.node

    node.run("ip", "route", "del", "203.0.113.7/32", "table", str(TABLE), "metric", str(METRIC))
    node.run("ip", "-6", "route", "del", "2001:db8:ff::7/128", "table", str(TABLE), "metric", str(METRIC))
    wait_until(
        lambda: {("203.0.113.7/32", METRIC), ("2001:db8:ff::7/128", METRIC)} <= node_lab.routes().keys(),
        5,
        what="the watcher to restore deleted routes",
    )
    assert client.call("background", name="w")["reports"][0]["installed"] >= 1

    # Deleting our shared hop object takes the IPv4 routes with it, without route notifications.
    hop = next(
        i for i, nh in node_lab.nexthops().items() if nh.get("gateway") == A and nh["protocol"] == str(PROTO)
    )
    node.run("ip", "nexthop", "del", "id", str(hop))
    wait_until(
        lambda: {("203.0.113.7/32", METRIC), ("203.0.113.8/32", METRIC)} <= node_lab.routes().keys(),
        5,
        what="the watcher to restore routes behind a deleted nexthop",
    )
    routes = node_lab.routes()
    assert routes[("203.0.113.8/32", METRIC)]["gateways"] == [A]

    # Someone else's route replacing ours is theirs: reported, never overwritten.
    node.run("ip", "route", "replace", "203.0.113.8/32", "via", B, "table", str(TABLE), "metric", str(METRIC))

    def reported_foreign() -> bool:
        reports = client.call("background", name="w")["reports"]
        return any(
            (r["prefix"], r["reason"]) == ("203.0.113.8/32", "ConflictsWithForeignRoute")
            for report in reports
            for r in report["rejected"]
        )

    wait_until(reported_foreign, 5, what="a FOREIGN_ROUTE report from the watcher")
    assert node_lab.routes()[("203.0.113.8/32", METRIC)] == {
        "protocol": "boot", "gateways": [B], "nhid": None, "type": "unicast",
    }  # fmt: skip


def test_unreachable_next_hop_and_missing_table_rejected_while_others_install(node_lab: NodeLab) -> None:
    # Table 300 exists for IPv4 only (someone else's route); the writer may not create tables.
    node_lab.node.run("ip", "route", "add", "198.51.100.200/32", "via", A, "table", "300")
    _proc, client = node_lab.writer()
    open_writer(client, table=300, nexthop_objects=True, require_table=True)

    report = client.call(
        "apply",
        name="w",
        changes={
            "203.0.113.1/32": [A],
            "203.0.113.2/32": [UNREACHABLE],
            "203.0.113.3/32": [UNREACHABLE, B],
            "2001:db8:ff::1/128": [A6],
            "2001:db8:ff::2/128": [UNREACHABLE],
        },
    )["report"]

    assert rejected(report) == {
        "203.0.113.2/32": "UnreachableNextHop",
        "2001:db8:ff::1/128": "TableMissing",
        "2001:db8:ff::2/128": "TableMissing",
    }
    assert report["installed"] == 2
    routes = node_lab.routes(300)
    assert routes[("203.0.113.1/32", METRIC)]["gateways"] == [A]
    assert routes[("203.0.113.3/32", METRIC)]["gateways"] == [B]  # the reachable member of its set
    assert ("203.0.113.2/32", METRIC) not in routes


def test_withdraw_all_removes_only_our_table_and_objects(node_lab: NodeLab) -> None:
    _proc, client = node_lab.writer()
    open_writer(client, name="t100", nexthop_objects=True)
    open_writer(client, name="t101", table=101, nexthop_objects=True)
    client.call("apply", name="t100", changes={"203.0.113.1/32": [A], "198.51.100.0/24": [A, B]})
    client.call("apply", name="t101", changes={"203.0.113.1/32": [A], "198.51.100.0/24": [A, B]})
    node_lab.node.run("ip", "route", "add", "203.0.113.99/32", "via", B, "table", str(TABLE))
    t101_routes = node_lab.routes(101)
    t101_objects = {i for r in t101_routes.values() for i in [r["nhid"]]}

    report = client.call("withdraw_all", name="t100")["report"]

    assert report["removed"] == 2
    assert node_lab.routes(TABLE) == {
        ("203.0.113.99/32", 0): {"protocol": "boot", "gateways": [B], "nhid": None, "type": "unicast"}
    }
    assert node_lab.routes(101) == t101_routes
    remaining = node_lab.nexthops()
    assert t101_objects <= remaining.keys()
    assert all(i >> 16 == 0x8000 | 101 for i in remaining)  # table 100's block is empty


def test_fail_over_rewrites_each_group_to_its_backup_in_messages_independent_of_routes(
    node_lab: NodeLab,
) -> None:
    _proc, client = node_lab.writer()
    open_writer(client, nexthop_objects=True)
    plain, ecmp = vips(3, base="203.0.113.200"), vips(2, base="203.0.113.210")
    messages: dict[int, tuple[int, int]] = {}
    for count in (10, 1000):
        backed = vips(count)
        changes: dict[str, Any] = {p: {"hops": [A], "backup": [B]} for p in backed}
        changes.update({p: [A] for p in plain})  # no backup: nowhere to go
        changes.update({p: [A, B] for p in ecmp})
        install = client.call("apply", name="w", changes=changes)["report"]
        assert install["installed"] == count + 5 and install["rejected"] == []
        before = node_lab.routes()
        nhids = {before[(p, METRIC)]["nhid"] for p in backed}
        assert len(nhids) == 1 and before[(plain[0], METRIC)]["nhid"] not in nhids

        failed = client.call("fail_over", name="w", gateways=[A])["report"]
        assert failed["installed"] == count + 2 and failed["rejected"] == []  # the routes moved

        after = node_lab.routes()
        assert {tuple(after[(p, METRIC)]["gateways"]) for p in backed + ecmp} == {(B,)}
        assert {after[(p, METRIC)]["nhid"] for p in backed} == nhids  # the group moved, not the routes
        assert {tuple(after[(p, METRIC)]["gateways"]) for p in plain} == {(A,)}
        installed = client.call("installed", name="w")["routes"]
        assert {tuple(installed[p]) for p in backed + ecmp} == {(B,)}
        # The RIB's changes follow: the routes are where they should be already.
        confirm = {p: [B] for p in backed + ecmp} | dict.fromkeys(plain)
        settled = client.call("apply", name="w", changes=confirm)["report"]
        assert settled["rejected"] == [] and settled["removed"] == 3
        assert {tuple(node_lab.routes()[(p, METRIC)]["gateways"]) for p in backed + ecmp} == {(B,)}
        messages[count] = (failed["netlink_messages"], settled["netlink_messages"])
        client.call("withdraw_all", name="w")
        assert node_lab.routes() == {}
    # One group rewrite each for the backed group and the ECMP group, whatever the route count; the
    # confirming pass only deletes what had nowhere to go (and its objects).
    assert messages[10] == messages[1000]
    assert messages[10][0] == 2 and messages[10][1] <= 3 + 3
    assert client.call("fail_over", name="w", gateways=[A])["report"] is None  # nothing left of ours


def test_without_nexthop_compat_mode_adoption_and_fail_over_work_from_the_objects(node_lab: NodeLab) -> None:
    """net.ipv4.nexthop_compat_mode=0 (the kernel's advice for software that knows nexthop objects, and
    what makes a group rewrite cost the kernel nothing per route): dumps and notifications then carry
    the nexthop id only. A restarted writer still adopts what it wrote, and fails over."""
    node_lab.node.run("sysctl", "-q", "-w", "net.ipv4.nexthop_compat_mode=0")
    first, client = node_lab.writer("first")
    open_writer(client, nexthop_objects=True)
    backed, plain = vips(20), vips(3, base="203.0.113.200")
    desired: dict[str, Any] = {p: {"hops": [A], "backup": [B]} for p in backed} | {p: [A] for p in plain}
    assert client.call("resync", name="w", desired=desired)["report"]["installed"] == 23
    client.close()
    first.stop()

    _second, client = node_lab.writer("second")
    open_writer(client, nexthop_objects=True)
    installed = client.call("installed", name="w")["routes"]
    assert {p: installed[str(ip_network(p))] for p in backed + plain} == {p: [A] for p in backed + plain}
    again = client.call("resync", name="w", desired=desired)["report"]
    assert again["rejected"] == [] and again["removed"] == 0
    failed = client.call("fail_over", name="w", gateways=[A])["report"]
    assert failed["installed"] == 20 and failed["netlink_messages"] == 1
    nexthops = node_lab.nexthops()
    routes = node_lab.routes()

    def gateways(prefix: str) -> set[str]:
        group = nexthops[routes[(prefix, METRIC)]["nhid"]]
        return {nexthops[member["id"]]["gateway"] for member in group["group"]}

    assert {frozenset(gateways(p)) for p in backed} == {frozenset({B})}
    assert {frozenset(gateways(p)) for p in plain} == {frozenset({A})}


@pytest.mark.parametrize("restart", [False, True], ids=["same-writer", "after-restart"])
def test_a_backup_arriving_changes_nothing_in_the_kernel(node_lab: NodeLab, restart: bool) -> None:
    """The standby's path arriving (or leaving) changes a route's backup only: the writer re-keys its
    group, and neither the route nor the group it points at is written."""
    proc, client = node_lab.writer("first")
    open_writer(client, nexthop_objects=True)
    prefixes = vips(5)
    client.call("apply", name="w", changes={p: [A] for p in prefixes})
    before, nexthops = node_lab.routes(), node_lab.nexthops()
    if restart:
        client.close()
        proc.stop()
        _proc, client = node_lab.writer("second")
        open_writer(client, nexthop_objects=True)

    backed = client.call("apply", name="w", changes={p: {"hops": [A], "backup": [B]} for p in prefixes})
    report = backed["report"]
    assert report["rejected"] == [] and report["installed"] == 5
    after = node_lab.routes()
    assert after == before  # same routes, same group
    group = {i: nh for i, nh in node_lab.nexthops().items() if i in nexthops}
    assert group == nexthops  # the group is untouched; only B's hop object was added, ready
    assert report["netlink_messages"] == 1
    # And back: the standby leaves, the backup goes, the kernel is not touched at all.
    plain = client.call("apply", name="w", changes={p: [A] for p in prefixes})["report"]
    assert plain["installed"] == 5 and node_lab.routes() == before
    # Without a backup a dead next hop's group has nowhere to go: the RIB's changes remove its routes.
    assert client.call("fail_over", name="w", gateways=[A])["report"]["netlink_messages"] == 0
    assert node_lab.routes() == before
