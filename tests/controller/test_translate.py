"""translate(): CRD objects -> the frozen desired state (speaker, peers, BFD, FIB selection, tables)."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address, ip_network

import pytest

from bfd.codec import AuthType
from bgp.rib.policy import MaxPrefixAction, PrefixRule
from bgp.types import IPV4_UNICAST, IPV6_UNICAST, prefix_key
from controller.desired import (
    WILDCARDS,
    AwsTable,
    BfdSettings,
    Liveness,
    NodeContext,
    NodeTable,
    PersistConfig,
    ProblemReason,
    SelectionMode,
)
from controller.models.resources import (
    RouteServer,
    RouteServerPeer,
    RouteTableAssociation,
    parse_resource,
)
from controller.translate import translate
from tests.controller.builders import NODE, association, peer, server
from tests.support.crd_cases import examples


def test_examples_translate_without_problems() -> None:
    objects = [parse_resource(o) for o in examples()]
    state = translate(
        [o for o in objects if isinstance(o, RouteServer)],
        [o for o in objects if isinstance(o, RouteServerPeer)],
        [o for o in objects if isinstance(o, RouteTableAssociation)],
        node=NODE,
    )
    assert state.problems == ()
    (rs,) = state.route_servers
    assert rs.name == "vip"
    assert rs.speaker.asn == 64512
    assert rs.speaker.router_id == IPv4Address("10.0.0.1")  # the node's, routerID being omitted
    assert rs.speaker.listen_addresses == WILDCARDS
    assert rs.selection.mode is SelectionMode.ACTIVE_PASSIVE
    assert rs.selection.rib_max_paths == 1
    assert rs.persist == PersistConfig(enabled=True, duration_seconds=120)
    assert [p.name for p in rs.peers] == ["fw-a", "fw-b"]
    fw_b = rs.peer("fw-b")
    assert fw_b is not None
    # fw-b overrides minTx only: minRx follows it, the multiplier is the route server's.
    assert fw_b.bfd == BfdSettings(min_tx_ms=100, min_rx_ms=100, detect_multiplier=3)
    assert fw_b.config.peer_id == "fw-b"
    assert fw_b.config.hold_time == 30
    assert fw_b.config.max_prefix is not None and fw_b.config.max_prefix.limit == 100
    assert fw_b.config.max_prefix.action is MaxPrefixAction.TEARDOWN
    # The route server's allow-list applies: /32s inside 203.0.113.0/24 only (RFC 8212 otherwise).
    policy = fw_b.config.import_policy
    assert policy.check_prefix(prefix_key(ip_network("203.0.113.10/32"))) is None
    assert policy.check_prefix(prefix_key(ip_network("203.0.113.0/24"))) is not None
    assert policy.check_prefix(prefix_key(ip_network("198.51.100.1/32"))) is not None
    assert policy.forbidden_next_hops == frozenset({ip_address("10.0.0.1")})
    # Two associations: the node table and the AWS one (kept in a subdirectory of the examples).
    targets = {t.name: t.target for t in rs.tables}
    assert targets["vip-table-100"] == NodeTable(100)
    assert targets["vip-aws"] == AwsTable("rtb-0123456789abcdef0", "eu-west-1")


def test_peer_settings_map_onto_the_speaker_peer_config() -> None:
    state = translate(
        [server(gracefulRestart={"restartTimeSeconds": 90})],
        [
            peer(
                "fw",
                "10.0.0.2",
                localAddress="10.0.0.1",
                port=1179,
                passive=True,
                liveness="BGPKeepalive",
                timers={"holdTimeSeconds": 9, "keepaliveTimeSeconds": 3, "connectRetryTimeSeconds": 2},
                authSecretRef={"name": "md5"},
                ttlSecurity={"hops": 1},
                allowedPrefixes=[{"prefix": "10.1.0.0/16", "le": 24}],
                maxPrefixes={"limit": 5, "action": "Warn", "warningThresholdPercent": 50},
                gracefulRestart={"enabled": True, "staleRoutesTimeSeconds": 30},
                addPath={"receive": True},
            )
        ],
        [],
        node=NODE,
        secrets={("default", "md5"): {"password": b"s3cret"}},
    )
    assert state.problems == ()
    (desired,) = state.route_servers[0].peers
    config = desired.config
    assert desired.liveness is Liveness.BGP_KEEPALIVE and desired.bfd is None
    assert config.local_address == ip_address("10.0.0.1")
    assert (config.port, config.passive) == (1179, True)
    assert (config.hold_time, config.keepalive_time, config.connect_retry_time) == (9, 3, 2.0)
    assert config.password == "s3cret"
    assert (config.ttl_security_hops, config.multihop_ttl) == (1, None)  # GTSM replaces the TTL default
    assert config.import_policy.allowed == (PrefixRule(ip_network("10.1.0.0/16"), None, 24),)
    assert config.max_prefix is not None
    assert (config.max_prefix.limit, config.max_prefix.action) == (5, MaxPrefixAction.WARN)
    assert config.max_prefix.warn_threshold_percent == 50
    assert (config.graceful_restart, config.graceful_restart_time, config.stale_path_time) == (True, 90, 30.0)
    assert config.add_path_receive == (IPV4_UNICAST, IPV6_UNICAST)


def test_max_prefix_actions_and_restart_interval_map_onto_the_speaker_limit() -> None:
    state = translate(
        [server()],
        [
            peer("warn", "10.0.0.2", maxPrefixes={"limit": 100, "action": "Warn"}),
            peer("reject", "10.0.0.3", maxPrefixes={"limit": 100, "action": "Reject"}),
            peer("hold", "10.0.0.4", maxPrefixes={"limit": 100}),
            peer("restart", "10.0.0.5", maxPrefixes={"limit": 100, "restartAfterSeconds": 30}),
        ],
        [],
        node=NODE,
    )
    assert state.problems == ()
    limits = {p.name: p.config.max_prefix for p in state.route_servers[0].peers}
    assert {name: (m.action, m.restart_after) for name, m in limits.items() if m is not None} == {
        "warn": (MaxPrefixAction.WARN, None),
        "reject": (MaxPrefixAction.REJECT, None),
        "hold": (MaxPrefixAction.TEARDOWN, None),  # held Idle until the spec changes
        "restart": (MaxPrefixAction.TEARDOWN, 30.0),
    }


@pytest.mark.parametrize(("peer_asn", "ttl"), [(65001, 1), (64512, 255)])
def test_outgoing_ttl_defaults_to_one_for_ebgp_and_255_for_ibgp(peer_asn: int, ttl: int) -> None:
    state = translate([server()], [peer("fw", "10.0.0.2", peerASN=peer_asn)], [], node=NODE)
    assert state.route_servers[0].peers[0].config.multihop_ttl == ttl


def test_peer_allow_list_replaces_the_route_servers_even_when_empty() -> None:
    rs = server(importPolicy={"allowedPrefixes": [{"prefix": "203.0.113.0/24", "le": 32}]})
    state = translate([rs], [peer("a", "10.0.0.2"), peer("b", "10.0.0.3", allowedPrefixes=[])], [], node=NODE)
    a, b = state.route_servers[0].peers
    vip = prefix_key(ip_network("203.0.113.10/32"))
    assert a.config.import_policy.check_prefix(vip) is None
    assert b.config.import_policy.check_prefix(vip) is not None  # [] accepts nothing


def test_no_policy_anywhere_accepts_nothing() -> None:
    state = translate([server()], [peer("a", "10.0.0.2")], [], node=NODE)
    policy = state.route_servers[0].peers[0].config.import_policy
    assert policy.allowed == ()
    assert policy.check_prefix(prefix_key(ip_network("203.0.113.10/32"))) is not None


def test_bfd_auth_key_comes_from_the_secret() -> None:
    bfd = {"auth": {"type": "MeticulousKeyedSHA1", "keyID": 7, "secretRef": {"name": "bfd", "key": "k"}}}
    state = translate(
        [server()],
        [peer("fw", "10.0.0.2", bfd=bfd)],
        [],
        node=NODE,
        secrets={("default", "bfd"): {"k": b"x" * 20}},
    )
    settings = state.route_servers[0].peers[0].bfd
    assert settings is not None and settings.auth is not None
    assert settings.auth.auth_type is AuthType.METICULOUS_KEYED_SHA1
    assert (settings.auth.key_id, settings.auth.secret) == (7, b"x" * 20)


def test_selection_ecmp_widens_the_rib_to_max_paths() -> None:
    state = translate(
        [server(routeSelection={"mode": "ECMP", "maxPaths": 4, "alwaysCompareMED": True})], [], []
    )
    assert state.problems[0].reason is ProblemReason.NO_ROUTER_ID  # no node router ID given
    state = translate(
        [
            server(
                routerID="10.9.9.9", routeSelection={"mode": "ECMP", "maxPaths": 4, "alwaysCompareMED": True}
            )
        ],
        [],
        [],
    )
    selection = state.route_servers[0].selection
    assert (selection.mode, selection.max_paths, selection.rib_max_paths) == (SelectionMode.ECMP, 4, 4)
    assert selection.always_compare_med
    assert state.route_servers[0].speaker.router_id == IPv4Address("10.9.9.9")


def test_missing_references_and_secrets_are_problems_naming_object_and_field() -> None:
    state = translate(
        [server()],
        [
            peer("orphan", "10.0.0.2", rs="nope"),
            peer("locked", "10.0.0.3", authSecretRef={"name": "absent"}),
            peer("wrong-key", "10.0.0.4", authSecretRef={"name": "md5", "key": "other"}),
            peer("fine", "10.0.0.5"),
        ],
        [association("lost", rs="nope")],
        node=NODE,
        secrets={("default", "md5"): {"password": b"x"}},
    )
    found = {(p.kind, p.name, p.field, p.reason) for p in state.problems}
    assert found == {
        ("RouteServerPeer", "orphan", "spec.routeServerRef.name", ProblemReason.MISSING_ROUTE_SERVER),
        ("RouteServerPeer", "locked", "spec.authSecretRef", ProblemReason.MISSING_SECRET),
        ("RouteServerPeer", "wrong-key", "spec.authSecretRef", ProblemReason.MISSING_SECRET),
        ("RouteTableAssociation", "lost", "spec.routeServerRef.name", ProblemReason.MISSING_ROUTE_SERVER),
    }
    assert "Secret default/absent not found" in str(next(p for p in state.problems if p.name == "locked"))
    # The others still run.
    assert [p.name for p in state.route_servers[0].peers] == ["fine"]


def test_secret_namespace_defaults_to_the_nodes_namespace() -> None:
    node = NodeContext.of("n", router_id=IPv4Address("10.0.0.1"), namespace="routing")
    ref = {"name": "md5", "namespace": "other"}
    state = translate(
        [server()],
        [peer("a", "10.0.0.2", authSecretRef={"name": "md5"}), peer("b", "10.0.0.3", authSecretRef=ref)],
        [],
        node=node,
        secrets={("routing", "md5"): {"password": b"one"}, ("other", "md5"): {"password": b"two"}},
    )
    a, b = state.route_servers[0].peers
    assert (a.config.password, b.config.password) == ("one", "two")


def test_tcp_md5_password_longer_than_80_bytes_is_refused() -> None:
    state = translate(
        [server()],
        [peer("a", "10.0.0.2", authSecretRef={"name": "md5"})],
        [],
        node=NODE,
        secrets={("default", "md5"): {"password": b"p" * 81}},
    )
    assert [(p.field, p.reason) for p in state.problems] == [
        ("spec.authSecretRef", ProblemReason.INVALID_SECRET)
    ]


def test_bfd_key_of_the_wrong_length_is_refused() -> None:
    bfd = {"auth": {"type": "KeyedMD5", "keyID": 1, "secretRef": {"name": "bfd"}}}
    state = translate(
        [server()],
        [peer("a", "10.0.0.2", bfd=bfd)],
        [],
        node=NODE,
        secrets={("default", "bfd"): {"password": b"k" * 17}},
    )
    assert [(p.field, p.reason) for p in state.problems] == [
        ("spec.bfd.auth.secretRef", ProblemReason.INVALID_SECRET)
    ]


def test_duplicate_peer_address_in_one_route_server_keeps_the_first_by_name() -> None:
    state = translate([server()], [peer("b", "10.0.0.2"), peer("a", "10.0.0.2")], [], node=NODE)
    assert [p.name for p in state.route_servers[0].peers] == ["a"]
    (problem,) = state.problems
    assert (problem.name, problem.field, problem.reason) == (
        "b",
        "spec.peerAddress",
        ProblemReason.DUPLICATE_PEER,
    )


def test_the_same_peer_address_in_two_route_servers_is_fine() -> None:
    state = translate(
        [server("one"), server("two", listenPort=1179)],
        [peer("a", "10.0.0.2", rs="one"), peer("b", "10.0.0.2", rs="two")],
        [],
        node=NODE,
    )
    assert state.problems == ()
    assert [len(rs.peers) for rs in state.route_servers] == [1, 1]


def test_route_servers_may_not_share_a_listen_socket() -> None:
    state = translate(
        [
            server("a"),
            server("b"),  # wildcard, same port: conflict
            server("c", listenPort=1179, listenAddresses=["10.0.0.1"]),
            server(
                "d", listenPort=1179, listenAddresses=["10.0.0.2", "2001:db8::1"]
            ),  # other addresses: fine
            server("e", listenPort=1179, listenAddresses=["0.0.0.0"]),  # the IPv4 wildcard overlaps c and d
        ],
        [peer("p", "10.0.0.9", rs="b")],
        [],
        node=NODE,
    )
    assert [rs.name for rs in state.route_servers] == ["a", "c", "d"]
    assert {(p.name, p.reason) for p in state.problems} == {
        ("b", ProblemReason.LISTEN_CONFLICT),
        ("e", ProblemReason.LISTEN_CONFLICT),
    }


def test_node_selectors_skip_what_is_not_for_this_node() -> None:
    state = translate(
        [
            server("here", nodeSelector={"matchLabels": {"role": "edge"}}),
            server("there", listenPort=1179, nodeSelector={"matchLabels": {"role": "core"}}),
        ],
        [peer("p", "10.0.0.2", rs="there")],
        [
            association("t1", rs="here"),
            association(
                "t2", rs="here", target={"node": {"table": 101, "nodeSelector": {"matchLabels": {"x": "y"}}}}
            ),
        ],
        node=NODE,
    )
    assert state.problems == ()
    assert [rs.name for rs in state.route_servers] == ["here"]
    assert [t.name for t in state.route_servers[0].tables] == ["t1"]
    assert {(s.kind, s.name, s.reason) for s in state.skipped} == {
        ("RouteServer", "there", ProblemReason.NOT_SELECTED),
        ("RouteTableAssociation", "t2", ProblemReason.NOT_SELECTED),
    }


def test_two_associations_may_not_write_the_same_table_and_metric() -> None:
    state = translate(
        [server("a"), server("b", listenPort=1179)],
        [],
        [
            association("first", rs="a"),
            association("second", rs="b"),  # table 100, metric 0 again
            association("third", rs="b", target={"node": {"table": 100, "metric": 50}}),
            association(
                "named",
                rs="b",
                target={"node": {"tableName": "vips"}},
                prefixFilter=[{"prefix": "203.0.113.0/24", "le": 32}],
            ),
        ],
        node=NODE,
    )
    assert [(p.name, p.reason) for p in state.problems] == [("second", ProblemReason.TABLE_CONFLICT)]
    tables = {t.name: t for rs in state.route_servers for t in rs.tables}
    assert tables["third"].target == NodeTable(100, 50)
    named = tables["named"]
    assert named.target == NodeTable("vips")
    policy = named.filter_policy()
    assert policy is not None
    assert policy.check_prefix(prefix_key(ip_network("203.0.113.7/32"))) is None
    assert policy.check_prefix(prefix_key(ip_network("198.51.100.7/32"))) is not None
    assert tables["first"].filter_policy() is None


def test_translation_is_deterministic_and_comparable() -> None:
    servers, peers, tables = [server()], [peer("b", "10.0.0.3"), peer("a", "10.0.0.2")], [association("t")]
    one = translate(servers, peers, tables, node=NODE)
    two = translate(servers, list(reversed(peers)), tables, node=NODE)
    assert one == two
    assert [p.name for p in one.route_servers[0].peers] == ["a", "b"]
    # A changed field makes exactly that peer differ.
    changed = translate(servers, [peer("b", "10.0.0.3"), peer("a", "10.0.0.2", port=1179)], tables, node=NODE)
    old, new = one.route_servers[0], changed.route_servers[0]
    assert old.peer("b") == new.peer("b")
    assert old.peer("a") != new.peer("a")
