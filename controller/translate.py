"""RouteServer, RouteServerPeer and RouteTableAssociation objects -> the frozen desired state of one agent.

Owns: `translate()` and the decisions listed below. The types it produces live in
controller/desired.py.
May not touch: I/O, the clock, asyncio or any runtime object; it imports the API models, the
desired-state types and the protocol packages' pure configuration (bgp.api, never bgp.speaker).

Pure: no I/O, no clock. The same function serves the standalone mode (objects from YAML files) and
the operator (objects from the API server), so both run identical settings. Its output is what the
runtime (controller/runtime/) reconciles against: per route server the speaker settings, the FIB
selection and persist settings, per peer the speaker's `PeerConfig` plus liveness and BFD
parameters, and per association the table to write.

What cannot be applied is reported, never raised: every `Problem` names the object, the field and
why, and only the objects concerned are left out (a peer with a missing Secret does not stop its
route server). The standalone mode refuses to start on problems; the operator turns them into
status conditions. Objects that are valid but not meant for this node (a nodeSelector that does not
select it) are listed in `skipped`.

Decisions taken here (the CRD descriptions are the contract):

- Every route server gets its own speaker: its own ASN, router ID, listener and Loc-RIB, so best
  paths are chosen per route server. Two selected route servers may not share a listen socket.
- The peer's name is its speaker peer id (bounded: one metric label value per configured peer).
- routerID omitted: the node's router ID (its first IPv4 address); none known is a problem.
- The Loc-RIB keeps one best path in ActivePassive mode and up to maxPaths in ECMP mode.
- ebgpMultihopTTL omitted: TTL 1 for eBGP (directly connected) and 255 for iBGP, as the CRD says;
  ttlSecurity (GTSM, RFC 5082) replaces both.
- Import policy (RFC 8212): the peer's allowedPrefixes, else the route server's, else nothing; a
  route whose next hop is one of this node's own addresses is never accepted (it would loop).
- Two associations may not write the same (table, metric): a writer owns every route of our
  protocol there and would remove the other's.
"""

from __future__ import annotations

from collections.abc import Iterable

from bfd.auth import AuthConfig
from bfd.codec import AuthType
from bgp.api import PeerConfig
from bgp.rib.policy import ImportPolicy, MaxPrefix, MaxPrefixAction, PrefixRule
from bgp.types import IPV4_UNICAST, IPV6_UNICAST, IPAddress
from controller.desired import (
    WILDCARDS,
    AwsTable,
    BfdSettings,
    DesiredState,
    Liveness,
    NodeContext,
    NodeTable,
    PeerDesired,
    PersistConfig,
    Problem,
    ProblemReason,
    RouteServerDesired,
    Secrets,
    SelectionMode,
    SelectionSettings,
    SpeakerSettings,
    TableDesired,
)
from controller.models.common import PrefixMatch, SecretKeyRef, selects
from controller.models.resources import (
    BfdAuthType,
    RouteSelectionMode,
    RouteServer,
    RouteServerPeer,
    RouteTableAssociation,
)
from controller.models.resources import MaxPrefixAction as ApiMaxPrefixAction

TCP_MD5_MAX_KEY = 80  # TCP_MD5SIG_MAXKEYLEN (linux/tcp.h)

_BFD_AUTH_TYPES = {
    BfdAuthType.SIMPLE_PASSWORD: AuthType.SIMPLE_PASSWORD,
    BfdAuthType.KEYED_MD5: AuthType.KEYED_MD5,
    BfdAuthType.METICULOUS_KEYED_MD5: AuthType.METICULOUS_KEYED_MD5,
    BfdAuthType.KEYED_SHA1: AuthType.KEYED_SHA1,
    BfdAuthType.METICULOUS_KEYED_SHA1: AuthType.METICULOUS_KEYED_SHA1,
}


# -- translation --------------------------------------------------------------------------------


def translate(
    route_servers: Iterable[RouteServer],
    peers: Iterable[RouteServerPeer],
    associations: Iterable[RouteTableAssociation],
    *,
    node: NodeContext | None = None,
    secrets: Secrets | None = None,
) -> DesiredState:
    """The desired state of this node's agent. Deterministic: inputs are processed sorted by name."""
    ctx = _Context(node or NodeContext(), secrets or {})
    servers = {rs.metadata.name: rs for rs in sorted(route_servers, key=lambda r: r.metadata.name)}
    selected: dict[str, tuple[RouteServer, SpeakerSettings]] = {}
    for name, rs in servers.items():
        if not selects(rs.spec.node_selector, ctx.node.label_map()):
            ctx.skip("RouteServer", name, "spec.nodeSelector", f"does not select node {ctx.node.name}")
            continue
        settings = ctx.speaker_settings(rs)
        if settings is not None and ctx.listen_free(rs, settings, [s for _, s in selected.values()]):
            selected[name] = (rs, settings)

    peers_by_server: dict[str, list[PeerDesired]] = {name: [] for name in selected}
    addresses: dict[tuple[str, IPAddress], str] = {}
    for peer in sorted(peers, key=lambda p: p.metadata.name):
        ref = peer.spec.route_server_ref.name
        if ref not in servers:
            ctx.problem(peer, "spec.routeServerRef.name", ProblemReason.MISSING_ROUTE_SERVER, _missing(ref))
            continue
        if ref not in selected:
            continue  # not served here (or the route server itself has a problem)
        key = (ref, peer.spec.peer_address)
        if key in addresses:
            ctx.problem(
                peer,
                "spec.peerAddress",
                ProblemReason.DUPLICATE_PEER,
                f"RouteServerPeer {addresses[key]} already peers with {peer.spec.peer_address}",
            )
            continue
        desired = ctx.peer(peer, selected[ref][0])
        if desired is not None:
            addresses[key] = peer.metadata.name
            peers_by_server[ref].append(desired)

    tables_by_server: dict[str, list[TableDesired]] = {name: [] for name in selected}
    owners: dict[tuple[int | str, int], str] = {}
    for assoc in sorted(associations, key=lambda a: a.metadata.name):
        ref = assoc.spec.route_server_ref.name
        if ref not in servers:
            ctx.problem(assoc, "spec.routeServerRef.name", ProblemReason.MISSING_ROUTE_SERVER, _missing(ref))
            continue
        if ref not in selected:
            continue
        table = ctx.table(assoc, owners)
        if table is not None:
            tables_by_server[ref].append(table)

    result = tuple(
        RouteServerDesired(
            name=name,
            speaker=settings,
            selection=_selection(rs),
            persist=PersistConfig(rs.spec.persist_routes.enabled, rs.spec.persist_routes.duration_seconds),
            peers=tuple(peers_by_server[name]),
            tables=tuple(tables_by_server[name]),
        )
        for name, (rs, settings) in selected.items()
    )
    return DesiredState(ctx.node, result, tuple(ctx.problems), tuple(ctx.skipped))


def _missing(name: str) -> str:
    return f"RouteServer {name!r} does not exist"


def _selection(rs: RouteServer) -> SelectionSettings:
    sel = rs.spec.route_selection
    mode = SelectionMode.ECMP if sel.mode is RouteSelectionMode.ECMP else SelectionMode.ACTIVE_PASSIVE
    return SelectionSettings(mode, sel.max_paths, sel.always_compare_med)


def prefix_rules(matches: Iterable[PrefixMatch]) -> tuple[PrefixRule, ...]:
    """API prefix matches as RIB prefix rules (identical ge/le semantics)."""
    return tuple(PrefixRule(m.prefix, m.ge, m.le) for m in matches)


def _overlaps(a: IPAddress, b: IPAddress) -> bool:
    """Whether two listen addresses of the same port collide (a wildcard takes its whole family)."""
    if a.version != b.version:
        return False
    return a == b or a.is_unspecified or b.is_unspecified


class _Context:
    def __init__(self, node: NodeContext, secrets: Secrets) -> None:
        self.node = node
        self.secrets = secrets
        self.problems: list[Problem] = []
        self.skipped: list[Problem] = []

    def problem(
        self,
        obj: RouteServer | RouteServerPeer | RouteTableAssociation,
        path: str,
        reason: ProblemReason,
        message: str,
    ) -> None:
        self.problems.append(Problem(obj.kind, obj.metadata.name, path, reason, message))

    def skip(self, kind: str, name: str, path: str, message: str) -> None:
        self.skipped.append(Problem(kind, name, path, ProblemReason.NOT_SELECTED, message))

    # -- route servers ----------------------------------------------------------------------------

    def speaker_settings(self, rs: RouteServer) -> SpeakerSettings | None:
        spec = rs.spec
        router_id = spec.router_id or self.node.router_id
        if router_id is None:
            self.problem(
                rs,
                "spec.routerID",
                ProblemReason.NO_ROUTER_ID,
                f"omitted, and node {self.node.name} has no IPv4 address to use as BGP Identifier",
            )
            return None
        listen = tuple(spec.listen_addresses) if spec.listen_addresses else WILDCARDS
        return SpeakerSettings(spec.asn, router_id, listen, spec.listen_port)

    def listen_free(self, rs: RouteServer, settings: SpeakerSettings, taken: list[SpeakerSettings]) -> bool:
        for other in taken:
            if other.listen_port != settings.listen_port:
                continue
            for mine in settings.listen_addresses:
                if any(_overlaps(mine, theirs) for theirs in other.listen_addresses):
                    self.problem(
                        rs,
                        "spec.listenPort",
                        ProblemReason.LISTEN_CONFLICT,
                        f"{mine} port {settings.listen_port} is already used by another RouteServer; "
                        "set listenPort or listenAddresses apart",
                    )
                    return False
        return True

    # -- peers -------------------------------------------------------------------------------------

    def secret(self, obj: RouteServerPeer, path: str, ref: SecretKeyRef) -> bytes | None:
        namespace = ref.namespace or self.node.namespace
        data = self.secrets.get((namespace, ref.name))
        if data is None:
            self.problem(obj, path, ProblemReason.MISSING_SECRET, f"Secret {namespace}/{ref.name} not found")
            return None
        value = data.get(ref.key)
        if value is None:
            self.problem(
                obj,
                path,
                ProblemReason.MISSING_SECRET,
                f"Secret {namespace}/{ref.name} has no key {ref.key!r}",
            )
            return None
        return value

    def peer(self, peer: RouteServerPeer, rs: RouteServer) -> PeerDesired | None:
        spec = peer.spec
        server = rs.spec
        ok = True
        password: str | None = None
        if spec.auth_secret_ref is not None:
            raw = self.secret(peer, "spec.authSecretRef", spec.auth_secret_ref)
            ok = raw is not None
            if raw is not None:
                try:
                    password = raw.decode()
                except UnicodeDecodeError:
                    password = None
                if password is None or not 1 <= len(raw) <= TCP_MD5_MAX_KEY:
                    self.problem(
                        peer,
                        "spec.authSecretRef",
                        ProblemReason.INVALID_SECRET,
                        f"the TCP-MD5 password must be 1-{TCP_MD5_MAX_KEY} bytes of UTF-8 (RFC 2385)",
                    )
                    ok = False
        bfd: BfdSettings | None = None
        if spec.liveness is Liveness.BFD:
            effective = server.bfd_profile.effective(spec.bfd)
            auth: AuthConfig | None = None
            if effective.auth is not None:
                key = self.secret(peer, "spec.bfd.auth.secretRef", effective.auth.secret_ref)
                if key is None:
                    ok = False
                else:
                    try:
                        auth = AuthConfig(_BFD_AUTH_TYPES[effective.auth.type], effective.auth.key_id, key)
                    except ValueError as exc:
                        self.problem(peer, "spec.bfd.auth.secretRef", ProblemReason.INVALID_SECRET, str(exc))
                        ok = False
            bfd = BfdSettings(
                effective.min_tx_ms,
                effective.min_rx_ms,
                effective.detect_multiplier,
                effective.passive,
                effective.multihop,
                auth,
            )
        if not ok:
            return None
        ibgp = spec.peer_asn == server.asn
        gtsm = spec.ttl_security.hops if spec.ttl_security is not None else None
        multihop = spec.ebgp_multihop_ttl
        if multihop is None and gtsm is None:
            multihop = 255 if ibgp else 1
        max_prefix = spec.max_prefixes
        action = {
            ApiMaxPrefixAction.WARN: MaxPrefixAction.WARN,
            ApiMaxPrefixAction.REJECT: MaxPrefixAction.REJECT,
            ApiMaxPrefixAction.TEARDOWN: MaxPrefixAction.TEARDOWN,
        }[max_prefix.action]
        restart_after = max_prefix.restart_after_seconds
        policy = ImportPolicy(
            allowed=prefix_rules(spec.import_allow_list(server)),
            forbidden_next_hops=self.node.addresses,
        )
        add_path = spec.add_path is not None and spec.add_path.receive
        try:
            config = PeerConfig(
                peer_address=spec.peer_address,
                peer_asn=spec.peer_asn,
                peer_id=peer.metadata.name,
                local_address=spec.local_address,
                port=spec.port,
                passive=spec.passive,
                hold_time=spec.timers.hold_time_seconds,
                keepalive_time=spec.timers.keepalive_time_seconds,
                connect_retry_time=float(spec.timers.connect_retry_time_seconds),
                password=password,
                ttl_security_hops=gtsm,
                multihop_ttl=multihop,
                import_policy=policy,
                max_prefix=MaxPrefix(
                    max_prefix.limit,
                    action,
                    max_prefix.warning_threshold_percent,
                    None if restart_after is None else float(restart_after),
                ),
                graceful_restart=spec.graceful_restart.enabled,
                graceful_restart_time=server.graceful_restart.restart_time_seconds,
                stale_path_time=float(spec.graceful_restart.stale_routes_time_seconds),
                add_path_receive=(IPV4_UNICAST, IPV6_UNICAST) if add_path else (),
            )
        except ValueError as exc:
            self.problem(peer, "spec", ProblemReason.INVALID, str(exc))
            return None
        return PeerDesired(peer.metadata.name, rs.metadata.name, config, spec.liveness, bfd)

    # -- tables ------------------------------------------------------------------------------------

    def table(
        self, assoc: RouteTableAssociation, owners: dict[tuple[int | str, int], str]
    ) -> TableDesired | None:
        spec = assoc.spec
        name = assoc.metadata.name
        ref = spec.route_server_ref.name
        rules = prefix_rules(spec.prefix_filter) if spec.prefix_filter is not None else None
        node_target = spec.target.node
        if node_target is not None:
            if not selects(node_target.node_selector, self.node.label_map()):
                self.skip(
                    assoc.kind,
                    name,
                    "spec.target.node.nodeSelector",
                    f"does not select node {self.node.name}",
                )
                return None
            table: int | str = (
                node_target.table if node_target.table is not None else str(node_target.table_name)
            )
            key = (table, node_target.metric or 0)
            if key in owners:
                self.problem(
                    assoc,
                    "spec.target.node",
                    ProblemReason.TABLE_CONFLICT,
                    f"RouteTableAssociation {owners[key]} already writes table {table}"
                    f" with metric {node_target.metric or 0}",
                )
                return None
            owners[key] = name
            return TableDesired(name, ref, NodeTable(table, node_target.metric), rules)
        aws = spec.target.aws
        assert aws is not None  # the model requires exactly one target
        creds = aws.credentials_secret_ref
        secret = (creds.namespace or self.node.namespace, creds.name) if creds is not None else None
        return TableDesired(
            name, ref, AwsTable(aws.route_table_id, aws.region, aws.endpoint_url, secret), rules
        )


__all__ = ["TCP_MD5_MAX_KEY", "prefix_rules", "translate"]
