"""Shared test data for the CRDs and their pydantic models: the CRD YAML, structural defaulting,
fully populated objects of every kind, and a table of invalid objects with the field each must be
refused on. The API-server tests (tests/integration/test_crds.py) and the model tests
(tests/controller/test_models.py) use the same table, so both enforce the same API.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.support.prereq import REPO_ROOT

if TYPE_CHECKING:
    from tests.support.apiserver import ApiServer

CRD_DIR = REPO_ROOT / "crds"
EXAMPLES_DIR = CRD_DIR / "examples"
API_VERSION = "routeserver.dev/v1alpha1"
KINDS = ("RouteServer", "RouteServerPeer", "RouteTableAssociation", "RouteServerSession")


def crd_files() -> list[Path]:
    return sorted(CRD_DIR.glob("*.yaml"))


def load_crds() -> dict[str, dict[str, Any]]:
    """kind -> CustomResourceDefinition."""
    crds = {}
    for path in crd_files():
        crd = yaml.safe_load(path.read_text())
        crds[crd["spec"]["names"]["kind"]] = crd
    return crds


def install_crds(server: ApiServer) -> None:
    """Apply crds/ to a test API server and wait until every CRD is Established."""
    server.kubectl("apply", "-f", str(CRD_DIR))
    names = [f"crd/{crd['spec']['names']['plural']}.routeserver.dev" for crd in load_crds().values()]
    server.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


def schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of the single version of a kind."""
    (version,) = load_crds()[kind]["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def apply_defaults(value: Any, node: Mapping[str, Any]) -> Any:
    """Structural defaulting as the API server does it: null values are dropped, absent properties
    with a default get it, and defaulted objects are defaulted in turn (`default: {}` fills in)."""
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if v is not None}  # nulls are pruned first
        properties = node.get("properties")
        if properties:
            out = dict(value)
            for name, sub in properties.items():
                if name not in out and "default" in sub:
                    out[name] = copy.deepcopy(sub["default"])
                if name in out:
                    out[name] = apply_defaults(out[name], sub)
            return out
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            return {k: apply_defaults(v, extra) for k, v in value.items()}
        return dict(value)
    if isinstance(value, list) and "items" in node:
        return [apply_defaults(v, node["items"]) for v in value]
    return value


def examples() -> list[dict[str, Any]]:
    """Every object in crds/examples (recursively), in file order."""
    objects: list[dict[str, Any]] = []
    for path in sorted(EXAMPLES_DIR.rglob("*.yaml")):
        objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return objects


def merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386): nested dicts merge, None deletes."""
    out = copy.deepcopy(dict(base))
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def obj(kind: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": dict(spec)}


# -- minimal and fully populated objects --------------------------------------------------------

MIN_SERVER = obj("RouteServer", "min-server", {"asn": 64512})
MIN_PEER = obj(
    "RouteServerPeer",
    "min-peer",
    {"routeServerRef": {"name": "min-server"}, "peerAddress": "198.51.100.10", "peerASN": 65001},
)
MIN_ASSOCIATION = obj(
    "RouteTableAssociation",
    "min-assoc",
    {"routeServerRef": {"name": "min-server"}, "target": {"node": {"table": 100}}},
)
MIN_SESSION = obj(
    "RouteServerSession", "min-peer.node-a", {"node": "node-a", "peerRef": {"name": "min-peer"}}
)

FULL_SERVER = obj(
    "RouteServer",
    "full-server",
    {
        "asn": 4200000001,
        "routerID": "10.255.0.1",
        "listenPort": 1179,
        "listenAddresses": ["10.0.0.1", "2001:db8::1"],
        "nodeSelector": {
            "matchLabels": {"routeserver.dev/endpoint": "true"},
            "matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]},
                {"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"},
            ],
        },
        "routeSelection": {"mode": "ECMP", "maxPaths": 16, "alwaysCompareMED": True},
        "persistRoutes": {"enabled": True, "durationSeconds": 300},
        "importPolicy": {
            "allowedPrefixes": [
                {"prefix": "203.0.113.0/24", "ge": 25, "le": 32},
                {"prefix": "2001:db8:1::/48", "le": 64},
                {"prefix": "198.51.100.0/24"},
            ]
        },
        "bfdProfile": {
            "minTxIntervalMilliseconds": 50,
            "minRxIntervalMilliseconds": 100,
            "detectMultiplier": 5,
            "passive": True,
        },
        "gracefulRestart": {"restartTimeSeconds": 60},
    },
)
FULL_PEER = obj(
    "RouteServerPeer",
    "full-peer",
    {
        "routeServerRef": {"name": "full-server"},
        "peerAddress": "2001:db8::10",
        "peerASN": 4200000002,
        "localAddress": "2001:db8::1",
        "port": 1179,
        "passive": True,
        "liveness": "BFD",
        "timers": {"holdTimeSeconds": 9, "keepaliveTimeSeconds": 3, "connectRetryTimeSeconds": 5},
        "bfd": {
            "minTxIntervalMilliseconds": 50,
            "minRxIntervalMilliseconds": 60,
            "detectMultiplier": 4,
            "passive": False,
            "multihop": True,
            "auth": {
                "type": "MeticulousKeyedSHA1",
                "keyID": 7,
                "secretRef": {"name": "bfd-keys", "namespace": "routing", "key": "fw"},
            },
        },
        "authSecretRef": {"name": "md5", "namespace": "routing", "key": "fw"},
        "ebgpMultihopTTL": 3,
        "allowedPrefixes": [{"prefix": "2001:db8:1::/48", "ge": 64, "le": 128}],
        "maxPrefixes": {"limit": 500, "action": "Warn", "warningThresholdPercent": 90},
        "gracefulRestart": {"enabled": True, "staleRoutesTimeSeconds": 120},
        "addPath": {"receive": True},
    },
)
GTSM_PEER = obj(
    "RouteServerPeer",
    "gtsm-peer",
    {
        "routeServerRef": {"name": "full-server"},
        "peerAddress": "198.51.100.20",
        "peerASN": 65002,
        "liveness": "BGPKeepalive",
        "ttlSecurity": {"hops": 2},
        "allowedPrefixes": [],
    },
)
# Teardown with a timed restart; Reject (the third max-prefix action) is FULL_PEER's neighbour.
RESTART_PEER = obj(
    "RouteServerPeer",
    "restart-peer",
    {
        "routeServerRef": {"name": "full-server"},
        "peerAddress": "198.51.100.21",
        "peerASN": 65003,
        "maxPrefixes": {"limit": 100, "action": "Teardown", "restartAfterSeconds": 300},
    },
)
REJECT_PEER = obj(
    "RouteServerPeer",
    "reject-peer",
    {
        "routeServerRef": {"name": "full-server"},
        "peerAddress": "198.51.100.22",
        "peerASN": 65004,
        "maxPrefixes": {"limit": 100, "action": "Reject"},
    },
)
FULL_NODE_ASSOCIATION = obj(
    "RouteTableAssociation",
    "full-node-assoc",
    {
        "routeServerRef": {"name": "full-server"},
        "target": {
            "node": {
                "table": 254,
                "metric": 100,
                "nodeSelector": {"matchLabels": {"routeserver.dev/writer": "true"}},
            }
        },
        "prefixFilter": [{"prefix": "203.0.113.0/24", "le": 32}, {"prefix": "2001:db8::/32", "ge": 48}],
    },
)
NAMED_TABLE_ASSOCIATION = obj(
    "RouteTableAssociation",
    "named-table-assoc",
    {"routeServerRef": {"name": "full-server"}, "target": {"node": {"tableName": "vips"}}},
)
FULL_AWS_ASSOCIATION = obj(
    "RouteTableAssociation",
    "full-aws-assoc",
    {
        "routeServerRef": {"name": "full-server"},
        "target": {
            "aws": {
                "routeTableID": "rtb-0123456789abcdef0",
                "region": "us-gov-west-1",
                "endpointURL": "http://127.0.0.1:5000",
                "credentialsSecretRef": {"name": "aws", "namespace": "routing"},
            }
        },
    },
)
# Explicit nulls (an empty key in YAML) are pruned by the API server, then defaulted.
NULL_FIELDS_SERVER = obj(
    "RouteServer",
    "null-fields",
    {"asn": 64512, "listenPort": None, "routerID": None, "routeSelection": None, "importPolicy": None},
)
VALID_OBJECTS = (
    MIN_SERVER,
    NULL_FIELDS_SERVER,
    MIN_PEER,
    MIN_ASSOCIATION,
    MIN_SESSION,
    FULL_SERVER,
    FULL_PEER,
    GTSM_PEER,
    RESTART_PEER,
    REJECT_PEER,
    FULL_NODE_ASSOCIATION,
    NAMED_TABLE_ASSOCIATION,
    FULL_AWS_ASSOCIATION,
)

# Status of each kind as an agent writes it (through the status subresource).
CONDITION_READY = {
    "type": "Ready",
    "status": "True",
    "observedGeneration": 1,
    "lastTransitionTime": "2025-01-02T03:04:05Z",
    "reason": "AllSessionsEstablished",
    "message": "2 of 2 endpoints serving",
}
STATUSES: dict[str, dict[str, Any]] = {
    "RouteServer": {
        "observedGeneration": 1,
        "conditions": [CONDITION_READY],
        "endpoints": 2,
        "peers": 2,
        "peersUp": 2,
        "routes": 5,
        "persistState": "Live",
        "leaseHolder": "node-a",
    },
    "RouteServerPeer": {
        "observedGeneration": 1,
        "conditions": [CONDITION_READY],
        "sessions": 2,
        "sessionsEstablished": 2,
        "bfdSessionsUp": 2,
        "prefixesAccepted": 3,
    },
    "RouteTableAssociation": {
        "observedGeneration": 1,
        "conditions": [CONDITION_READY],
        "targets": 2,
        "targetsInSync": 1,
        "routesDesired": 4,
        "routesInstalled": 3,
        "routesRejected": 1,
        "rejectedRoutes": [
            {
                "prefix": "203.0.113.7/32",
                "node": "node-b",
                "reason": "ConflictsWithForeignRoute",
                "message": "table 100 holds a route for 203.0.113.7/32 we do not own",
            }
        ],
        "lastSyncTime": "2025-01-02T03:04:05Z",
    },
    "RouteServerSession": {
        "bgpState": "Established",
        "bfdState": "Up",
        "establishedTime": "2025-01-02T03:04:05Z",
        "lastTransitionTime": "2025-01-02T03:04:05Z",
        "lastTransitionReason": "KeepaliveReceived",
        "lastTransitionMessage": "OPEN accepted, hold time 30 s",
        "establishedTransitions": 4,
        "negotiated": {
            "holdTimeSeconds": 30,
            "keepaliveTimeSeconds": 10,
            "peerRouterID": "198.51.100.11",
            "fourOctetASN": True,
            "addressFamilies": ["IPv4Unicast", "IPv6Unicast"],
            "addPathReceive": False,
            "gracefulRestart": False,
            "bfdTransmitIntervalMilliseconds": 300,
            "bfdDetectionTimeMilliseconds": 900,
        },
        "prefixesReceived": 3,
        "prefixesAccepted": 2,
        "prefixesRejected": 1,
        "prefixesInstalled": 2,
        "lastUpdateTime": "2025-01-02T03:04:06Z",
    },
}


# -- invalid objects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Invalid:
    """An object the API refuses: `path` is the field the API server names, `api_text` a piece
    of its message; the models must refuse it at `path` (or a parent) with `model_text`."""

    id: str
    base: Mapping[str, Any]
    patch: Mapping[str, Any]
    path: str
    api_text: str
    model_text: str = ""
    obj: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "obj", merge(self.base, {"spec": self.patch}))

    @property
    def expected_model_text(self) -> str:
        return self.model_text or self.api_text


def _prefix(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {"importPolicy": {"allowedPrefixes": [entry]}}


GE = "greater than or equal to"
LE = "less than or equal to"

INVALID: tuple[Invalid, ...] = (
    # RouteServer
    Invalid("asn-zero", MIN_SERVER, {"asn": 0}, "spec.asn", f"{GE} 1"),
    Invalid("asn-too-big", MIN_SERVER, {"asn": 4294967296}, "spec.asn", f"{LE} 4294967295"),
    Invalid("asn-as-trans", MIN_SERVER, {"asn": 23456}, "spec.asn", "AS_TRANS"),
    Invalid("router-id-not-ipv4", MIN_SERVER, {"routerID": "2001:db8::1"}, "spec.routerID", "non-zero IPv4"),
    Invalid("router-id-zero", MIN_SERVER, {"routerID": "0.0.0.0"}, "spec.routerID", "non-zero IPv4"),
    Invalid("listen-port-zero", MIN_SERVER, {"listenPort": 0}, "spec.listenPort", f"{GE} 1"),
    Invalid(
        "listen-address-not-ip",
        MIN_SERVER,
        {"listenAddresses": ["eth0"]},
        "spec.listenAddresses[0]",
        "IPv4 or IPv6",
    ),
    Invalid(
        "mode-unknown", MIN_SERVER, {"routeSelection": {"mode": "Random"}}, "spec.routeSelection.mode", "ECMP"
    ),
    Invalid(
        "max-paths-65", MIN_SERVER, {"routeSelection": {"maxPaths": 65}}, "spec.routeSelection.maxPaths", LE
    ),
    Invalid(
        "persist-duration-30",
        MIN_SERVER,
        {"persistRoutes": {"durationSeconds": 30}},
        "spec.persistRoutes.durationSeconds",
        f"{GE} 60",
    ),
    Invalid(
        "persist-duration-301",
        MIN_SERVER,
        {"persistRoutes": {"durationSeconds": 301}},
        "spec.persistRoutes.durationSeconds",
        f"{LE} 300",
    ),
    Invalid(
        "prefix-host-bits",
        MIN_SERVER,
        _prefix({"prefix": "203.0.113.1/24"}),
        "spec.importPolicy.allowedPrefixes[0].prefix",
        "no host bits set",
    ),
    Invalid(
        "prefix-without-length",
        MIN_SERVER,
        _prefix({"prefix": "203.0.113.1"}),
        "spec.importPolicy.allowedPrefixes[0].prefix",
        "CIDR notation",
    ),
    Invalid(
        "prefix-ge-above-le",
        MIN_SERVER,
        _prefix({"prefix": "203.0.113.0/24", "ge": 30, "le": 28}),
        "spec.importPolicy.allowedPrefixes[0].le",
        "le must be greater than or equal to ge",
    ),
    Invalid(
        "prefix-ge-below-length",
        MIN_SERVER,
        _prefix({"prefix": "203.0.113.0/24", "ge": 16}),
        "spec.importPolicy.allowedPrefixes[0].ge",
        "ge must be at least the prefix length",
    ),
    Invalid(
        "prefix-le-below-length",
        MIN_SERVER,
        _prefix({"prefix": "203.0.113.0/24", "le": 20}),
        "spec.importPolicy.allowedPrefixes[0].le",
        "le must be at least the prefix length",
    ),
    Invalid(
        "prefix-ipv4-le-33",
        MIN_SERVER,
        _prefix({"prefix": "203.0.113.0/24", "le": 33}),
        "spec.importPolicy.allowedPrefixes[0].le",
        "at most 32 for an IPv4 prefix",
    ),
    Invalid(
        "prefix-ipv6-le-129",
        MIN_SERVER,
        _prefix({"prefix": "2001:db8::/32", "le": 129}),
        "spec.importPolicy.allowedPrefixes[0].le",
        f"{LE} 128",
    ),
    Invalid(
        "bfd-min-tx-5",
        MIN_SERVER,
        {"bfdProfile": {"minTxIntervalMilliseconds": 5}},
        "spec.bfdProfile.minTxIntervalMilliseconds",
        f"{GE} 10",
    ),
    Invalid(
        "bfd-multiplier-zero",
        MIN_SERVER,
        {"bfdProfile": {"detectMultiplier": 0}},
        "spec.bfdProfile.detectMultiplier",
        f"{GE} 1",
    ),
    Invalid(
        "restart-time-4096",
        MIN_SERVER,
        {"gracefulRestart": {"restartTimeSeconds": 4096}},
        "spec.gracefulRestart.restartTimeSeconds",
        f"{LE} 4095",
    ),
    Invalid(
        "selector-in-without-values",
        MIN_SERVER,
        {"nodeSelector": {"matchExpressions": [{"key": "zone", "operator": "In"}]}},
        "spec.nodeSelector.matchExpressions[0]",
        "values must be non-empty for In",
    ),
    Invalid(
        "unknown-field",
        MIN_SERVER,
        {"routerId": "10.0.0.1"},
        "spec",
        'unknown field "spec.routerId"',
        "Extra",
    ),
    # RouteServerPeer
    Invalid(
        "peer-missing-route-server",
        MIN_PEER,
        {"routeServerRef": None},
        "spec.routeServerRef",
        "Required value",
        "Field required",
    ),
    Invalid(
        "peer-address-not-ip", MIN_PEER, {"peerAddress": "10.0.0.300"}, "spec.peerAddress", "unicast IPv4"
    ),
    Invalid(
        "peer-address-multicast", MIN_PEER, {"peerAddress": "224.0.0.5"}, "spec.peerAddress", "unicast IPv4"
    ),
    Invalid(
        "peer-address-link-local", MIN_PEER, {"peerAddress": "fe80::1"}, "spec.peerAddress", "unicast IPv4"
    ),
    Invalid("peer-address-unspecified", MIN_PEER, {"peerAddress": "::"}, "spec.peerAddress", "unicast IPv4"),
    Invalid("peer-asn-zero", MIN_PEER, {"peerASN": 0}, "spec.peerASN", f"{GE} 1"),
    Invalid(
        "local-address-other-family",
        MIN_PEER,
        {"localAddress": "2001:db8::1"},
        "spec.localAddress",
        "same address family",
    ),
    Invalid("liveness-unknown", MIN_PEER, {"liveness": "Ping"}, "spec.liveness", "BGPKeepalive"),
    Invalid(
        "hold-time-2",
        MIN_PEER,
        {"timers": {"holdTimeSeconds": 2}},
        "spec.timers.holdTimeSeconds",
        "0 or at least 3",
    ),
    Invalid(
        "hold-time-1",
        MIN_PEER,
        {"timers": {"holdTimeSeconds": 1}},
        "spec.timers.holdTimeSeconds",
        "0 or at least 3",
    ),
    Invalid(
        "keepalive-not-below-hold",
        MIN_PEER,
        {"timers": {"holdTimeSeconds": 9, "keepaliveTimeSeconds": 9}},
        "spec.timers.keepaliveTimeSeconds",
        "less than holdTimeSeconds",
    ),
    Invalid(
        "keepalive-liveness-without-hold-time",
        MIN_PEER,
        {"liveness": "BGPKeepalive", "timers": {"holdTimeSeconds": 0}},
        "spec.timers.holdTimeSeconds",
        "must not be 0 when liveness is BGPKeepalive",
    ),
    Invalid(
        "bfd-overrides-without-bfd",
        MIN_PEER,
        {"liveness": "BGPKeepalive", "bfd": {"multihop": True}},
        "spec.bfd",
        "require liveness BFD",
    ),
    Invalid(
        "bfd-auth-key-id-256",
        MIN_PEER,
        {"bfd": {"auth": {"type": "KeyedMD5", "keyID": 256, "secretRef": {"name": "k"}}}},
        "spec.bfd.auth.keyID",
        f"{LE} 255",
    ),
    Invalid(
        "bfd-auth-type-unknown",
        MIN_PEER,
        {"bfd": {"auth": {"type": "Kerberos", "keyID": 1, "secretRef": {"name": "k"}}}},
        "spec.bfd.auth.type",
        "MeticulousKeyedSHA1",
    ),
    Invalid(
        "auth-secret-without-name",
        MIN_PEER,
        {"authSecretRef": {"key": "password"}},
        "spec.authSecretRef.name",
        "Required value",
        "Field required",
    ),
    Invalid(
        "multihop-with-ttl-security",
        MIN_PEER,
        {"ebgpMultihopTTL": 2, "ttlSecurity": {}},
        "spec.ttlSecurity",
        "mutually exclusive",
    ),
    Invalid("multihop-ttl-zero", MIN_PEER, {"ebgpMultihopTTL": 0}, "spec.ebgpMultihopTTL", f"{GE} 1"),
    Invalid("ttl-security-hops-255", MIN_PEER, {"ttlSecurity": {"hops": 255}}, "spec.ttlSecurity.hops", LE),
    Invalid(
        "max-prefix-action-unknown",
        MIN_PEER,
        {"maxPrefixes": {"action": "Drop"}},
        "spec.maxPrefixes.action",
        "Teardown",
    ),
    Invalid(
        "max-prefix-limit-zero", MIN_PEER, {"maxPrefixes": {"limit": 0}}, "spec.maxPrefixes.limit", f"{GE} 1"
    ),
    Invalid(
        "max-prefix-restart-with-reject",
        MIN_PEER,
        {"maxPrefixes": {"action": "Reject", "restartAfterSeconds": 60}},
        "spec.maxPrefixes.restartAfterSeconds",
        "only applies to action Teardown",
    ),
    Invalid(
        "max-prefix-restart-with-warn",
        MIN_PEER,
        {"maxPrefixes": {"action": "Warn", "restartAfterSeconds": 60}},
        "spec.maxPrefixes.restartAfterSeconds",
        "only applies to action Teardown",
    ),
    Invalid(
        "max-prefix-restart-below-5",
        MIN_PEER,
        {"maxPrefixes": {"restartAfterSeconds": 4}},
        "spec.maxPrefixes.restartAfterSeconds",
        f"{GE} 5",
    ),
    Invalid(
        "max-prefix-restart-above-a-day",
        MIN_PEER,
        {"maxPrefixes": {"restartAfterSeconds": 86401}},
        "spec.maxPrefixes.restartAfterSeconds",
        f"{LE} 86400",
    ),
    Invalid(
        "peer-prefix-le-33",
        MIN_PEER,
        {"allowedPrefixes": [{"prefix": "0.0.0.0/0", "le": 33}]},
        "spec.allowedPrefixes[0].le",
        "at most 32 for an IPv4 prefix",
    ),
    # RouteTableAssociation
    Invalid(
        "target-node-and-aws",
        MIN_ASSOCIATION,
        {"target": {"aws": {"routeTableID": "rtb-12345678"}}},
        "spec.target",
        "mutually exclusive",
    ),
    Invalid(
        "target-neither", MIN_ASSOCIATION, {"target": {"node": None}}, "spec.target", "one of target.node"
    ),
    Invalid(
        "table-local",
        MIN_ASSOCIATION,
        {"target": {"node": {"table": 255}}},
        "spec.target.node.table",
        "local table",
    ),
    Invalid(
        "table-unspec",
        MIN_ASSOCIATION,
        {"target": {"node": {"table": 0}}},
        "spec.target.node.table",
        f"{GE} 1",
    ),
    Invalid(
        "table-and-table-name",
        MIN_ASSOCIATION,
        {"target": {"node": {"tableName": "main"}}},
        "spec.target.node",
        "exactly one of table or tableName",
    ),
    Invalid(
        "table-name-local",
        MIN_ASSOCIATION,
        {"target": {"node": {"table": None, "tableName": "local"}}},
        "spec.target.node.tableName",
        "must not be local",
    ),
    Invalid(
        "route-table-id-bad",
        MIN_ASSOCIATION,
        {"target": {"node": None, "aws": {"routeTableID": "rtb-xyz"}}},
        "spec.target.aws.routeTableID",
        "should match",
    ),
    Invalid(
        "region-bad",
        MIN_ASSOCIATION,
        {"target": {"node": None, "aws": {"routeTableID": "rtb-12345678", "region": "Mars"}}},
        "spec.target.aws.region",
        "should match",
    ),
    Invalid(
        "filter-ipv6-ge-above-le",
        MIN_ASSOCIATION,
        {"prefixFilter": [{"prefix": "2001:db8::/32", "ge": 64, "le": 48}]},
        "spec.prefixFilter[0].le",
        "le must be greater than or equal to ge",
    ),
)


def model_error_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location in the API server's notation: spec.a.b[0].c (without the kind
    that a discriminated union puts first)."""
    if loc and loc[0] in KINDS:
        loc = loc[1:]
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def related(path: str, other: str) -> bool:
    """One field path is the other or contains it (a rule on a parent reports the parent)."""
    if path == other:
        return True
    return any(a.startswith(b + sep) for a, b in ((path, other), (other, path)) for sep in ".[")
