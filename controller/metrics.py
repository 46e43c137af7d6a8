"""Prometheus metrics of the agent (prometheus-client), on a registry of its own per runtime.

Two kinds:

- Event counters, incremented where the event happens (session transitions, BFD failures, failovers,
  max-prefix hits, writes, reloads).
- State gauges, read from the runtime's `AgentStatus` snapshot at scrape time by a custom collector,
  so they are never stale and cost nothing between scrapes (BGP/BFD state, prefixes per peer,
  FIB size, persist state, installed and rejected routes per table).

Labels are bounded: `route_server`, `peer` and `table` are configured object names; `state`,
`reason` and `event` are enum values (bgp.fsm.events.State/TransitionReason, bfd.codec.State,
bgp.rib.policy.RejectReason, controller.writers.base.RejectReason, ...). Prefixes never become labels.

Owns: the metric objects, their names and labels, and the state collector. Event counters are
incremented by controller/events.py's `MetricsSink` only (one call site per event in the runtime).
Must not touch: runtime state (the collector reads the `AgentStatus` snapshot it is handed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.status import AgentStatus

PREFIX = "routeserver"
BGP_STATES = ("Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established")
BFD_STATES = ("AdminDown", "Down", "Init", "Up")
PERSIST_STATES = ("Live", "Holding", "Recovering")
# From a FIB change to the kernel acknowledging it: the tail of every failover.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The agent's metrics. One instance per runtime; `registry` is what `/metrics` exposes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.bgp_transitions = Counter(
            f"{PREFIX}_bgp_session_transitions",
            "BGP session state changes, by the state entered and why (RFC 4271 names).",
            ["route_server", "peer", "state", "reason"],
            registry=r,
        )
        self.bfd_transitions = Counter(
            f"{PREFIX}_bfd_session_transitions",
            "BFD session state changes, by the state entered and why.",
            ["route_server", "peer", "state", "reason"],
            registry=r,
        )
        self.bfd_failures = Counter(
            f"{PREFIX}_bfd_failures",
            "BFD Up -> Down liveness failures; each tears the peer's BGP session down (RFC 5882).",
            ["route_server", "peer"],
            registry=r,
        )
        self.max_prefix = Counter(
            f"{PREFIX}_bgp_max_prefix_events",
            "Max-prefix events: threshold (warning), exceeded (Warn), rejected (Reject), teardown.",
            ["route_server", "peer", "event"],
            registry=r,
        )
        self.failovers = Counter(
            f"{PREFIX}_fib_failovers",
            "Prefixes whose installed next hops moved to other next hops.",
            ["route_server"],
            registry=r,
        )
        self.fib_changes = Counter(
            f"{PREFIX}_fib_changes",
            "FIB entries added, changed or removed.",
            ["route_server", "change"],
            registry=r,
        )
        self.table_writes = Counter(
            f"{PREFIX}_table_writes",
            "Write batches sent to a route table (apply: changes only; resync: the whole FIB).",
            ["route_server", "table", "kind"],
            registry=r,
        )
        self.table_write_errors = Counter(
            f"{PREFIX}_table_write_errors",
            "Write batches that failed as a whole (the table is resynchronised after a backoff).",
            ["route_server", "table"],
            registry=r,
        )
        self.table_write_seconds = Histogram(
            f"{PREFIX}_table_write_latency_seconds",
            "From the first FIB change of a batch to the table write completing.",
            ["route_server", "table"],
            buckets=WRITE_BUCKETS,
            registry=r,
        )
        self.connections_refused = Counter(
            f"{PREFIX}_bgp_connections_refused",
            "TCP connections from addresses that are not configured peers, closed before OPEN.",
            ["route_server"],
            registry=r,
        )
        self.config_problems = Counter(
            f"{PREFIX}_config_problems",
            "Objects (or parts) not applied, by kind and reason (operator mode; reported as they appear).",
            ["kind", "reason"],
            registry=r,
        )
        self.config_reloads = Counter(
            f"{PREFIX}_config_reloads",
            "Configuration loads, by result (applied or refused).",
            ["result"],
            registry=r,
        )
        # How late the event loop runs a callback it scheduled: the loop must never block (BFD's
        # teardown and every failover run on it). Observed by the agent's loop monitor.
        self.loop_lag_seconds = Histogram(
            f"{PREFIX}_event_loop_lag_seconds",
            "Lateness of a timer on the agent's asyncio loop (sampled every 50 ms).",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.loop_lag_max_seconds = Gauge(
            f"{PREFIX}_event_loop_lag_max_seconds",
            "The largest event-loop lateness seen since the agent started.",
            registry=r,
        )
        self._state_collector: _StateCollector | None = None
        self._peer_series: dict[tuple[str, str], set[tuple[Counter, tuple[str, ...]]]] = {}

    def observe_state(self, snapshot: Callable[[], AgentStatus]) -> None:
        """Serve the state gauges from `snapshot()` at every scrape (once per Metrics)."""
        if self._state_collector is None:
            self._state_collector = _StateCollector(snapshot)
            self.registry.register(self._state_collector)
        else:
            self._state_collector.snapshot = snapshot

    # Per-peer event counters go through these, so a removed peer's series can be dropped.

    def bgp_transition(self, route_server: str, peer: str, state: str, reason: str) -> None:
        self._peer_count(self.bgp_transitions, route_server, peer, state, reason)

    def bfd_transition(self, route_server: str, peer: str, state: str, reason: str) -> None:
        self._peer_count(self.bfd_transitions, route_server, peer, state, reason)

    def bfd_failure(self, route_server: str, peer: str) -> None:
        self._peer_count(self.bfd_failures, route_server, peer)

    def max_prefix_event(self, route_server: str, peer: str, event: str) -> None:
        self._peer_count(self.max_prefix, route_server, peer, event)

    def forget_peer(self, route_server: str, peer: str) -> None:
        """Drop the event series of a removed peer, so label sets stay bounded by the configuration."""
        for metric, labels in self._peer_series.pop((route_server, peer), set()):
            metric.remove(*labels)

    def _peer_count(self, metric: Counter, *labels: str) -> None:
        metric.labels(*labels).inc()
        self._peer_series.setdefault((labels[0], labels[1]), set()).add((metric, labels))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, snapshot: Callable[[], AgentStatus]) -> None:
        self.snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked collector: the series depend on the configuration

    def collect(self) -> Iterable[Metric]:
        status = self.snapshot()
        up = GaugeMetricFamily(f"{PREFIX}_healthy", "1 when every route server and table is working.")
        up.add_metric([], 1.0 if status.healthy else 0.0)
        generation = GaugeMetricFamily(f"{PREFIX}_config_generation", "Configurations applied so far.")
        generation.add_metric([], float(status.config.generation))
        problems = GaugeMetricFamily(
            f"{PREFIX}_config_problems", "Objects of the configuration that could not be applied."
        )
        problems.add_metric([], float(len(status.config.problems)))
        rs_labels = ["route_server"]
        peer_labels = ["route_server", "peer"]
        bgp_state = GaugeMetricFamily(
            f"{PREFIX}_bgp_session_state",
            "1 for the session's current BGP state.",
            labels=[*peer_labels, "state"],
        )
        bgp_up = GaugeMetricFamily(
            f"{PREFIX}_bgp_session_up", "1 when the BGP session is Established.", labels=peer_labels
        )
        uptime = GaugeMetricFamily(
            f"{PREFIX}_bgp_session_uptime_seconds",
            "Seconds since the session was Established.",
            labels=peer_labels,
        )
        received = CounterMetricFamily(
            f"{PREFIX}_bgp_prefixes_received",
            "Prefix announcements received from the peer.",
            labels=peer_labels,
        )
        held = GaugeMetricFamily(
            f"{PREFIX}_bgp_session_held_idle",
            "1 while the session is held Idle with automatic start off (max-prefix Teardown), by reason.",
            labels=[*peer_labels, "reason"],
        )
        held_until = GaugeMetricFamily(
            f"{PREFIX}_bgp_session_held_idle_until_timestamp_seconds",
            "When a held session starts again by itself (Unix time); absent: until the spec changes.",
            labels=peer_labels,
        )
        accepted = GaugeMetricFamily(
            f"{PREFIX}_bgp_prefixes_accepted",
            "Paths held from the peer after import policy.",
            labels=peer_labels,
        )
        rejected = CounterMetricFamily(
            f"{PREFIX}_bgp_prefixes_rejected",
            "Announcements rejected by import policy, by reason.",
            labels=[*peer_labels, "reason"],
        )
        bfd_state = GaugeMetricFamily(
            f"{PREFIX}_bfd_session_state",
            "1 for the BFD session's current state.",
            labels=[*peer_labels, "state"],
        )
        detection = GaugeMetricFamily(
            f"{PREFIX}_bfd_detection_time_seconds",
            "Negotiated BFD detection time (RFC 5880 §6.8.4).",
            labels=peer_labels,
        )
        fib_routes = GaugeMetricFamily(f"{PREFIX}_fib_routes", "Prefixes in the FIB.", labels=rs_labels)
        sessions_up = GaugeMetricFamily(
            f"{PREFIX}_sessions_up", "BGP sessions Established per route server.", labels=rs_labels
        )
        persist = GaugeMetricFamily(
            f"{PREFIX}_persist_state", "1 for the current persist-routes state.", labels=[*rs_labels, "state"]
        )
        persisted = GaugeMetricFamily(
            f"{PREFIX}_persisted_routes", "FIB entries held by persist-routes.", labels=rs_labels
        )
        table_labels = ["route_server", "table"]
        installed = GaugeMetricFamily(
            f"{PREFIX}_table_routes_installed", "Routes installed in the table.", labels=table_labels
        )
        desired = GaugeMetricFamily(
            f"{PREFIX}_table_routes_desired", "Routes the FIB wants in the table.", labels=table_labels
        )
        table_rejected = GaugeMetricFamily(
            f"{PREFIX}_table_routes_rejected",
            "Routes the table refused, by reason.",
            labels=[*table_labels, "reason"],
        )
        in_sync = GaugeMetricFamily(
            f"{PREFIX}_table_in_sync", "1 when the table holds exactly the FIB.", labels=table_labels
        )
        for rs in status.route_servers:
            fib_routes.add_metric([rs.name], float(rs.fib_routes))
            sessions_up.add_metric([rs.name], float(rs.sessions_up))
            for state in PERSIST_STATES:
                persist.add_metric([rs.name, state], 1.0 if rs.persist.state == state else 0.0)
            persisted.add_metric([rs.name], float(rs.persist.persisted_routes))
            for peer in rs.peers:
                labels = [rs.name, peer.name]
                for state in BGP_STATES:
                    bgp_state.add_metric([*labels, state], 1.0 if peer.bgp_state == state else 0.0)
                bgp_up.add_metric(labels, 1.0 if peer.bgp_state == "Established" else 0.0)
                uptime.add_metric(labels, peer.uptime_seconds or 0.0)
                received.add_metric(labels, float(peer.prefixes_received))
                accepted.add_metric(labels, float(peer.prefixes_accepted))
                if peer.held_idle_reason is not None:
                    held.add_metric([*labels, peer.held_idle_reason], 1.0)
                    if peer.held_idle_until is not None:
                        held_until.add_metric(labels, peer.held_idle_until)
                for reason, count in sorted(peer.rejected_by_reason.items()):
                    rejected.add_metric([*labels, reason], float(count))
                if peer.bfd is not None:
                    for state in BFD_STATES:
                        bfd_state.add_metric([*labels, state], 1.0 if peer.bfd.state == state else 0.0)
                    if peer.bfd.detection_time_ms is not None:
                        detection.add_metric(labels, peer.bfd.detection_time_ms / 1000.0)
            for t in rs.tables:
                labels = [rs.name, t.name]
                installed.add_metric(labels, float(t.routes_installed))
                desired.add_metric(labels, float(t.routes_desired))
                in_sync.add_metric(labels, 1.0 if t.in_sync else 0.0)
                for reason, count in sorted(t.rejected_by_reason.items()):
                    table_rejected.add_metric([*labels, reason], float(count))
        return [
            up,
            generation,
            problems,
            bgp_state,
            bgp_up,
            uptime,
            received,
            accepted,
            rejected,
            held,
            held_until,
            bfd_state,
            detection,
            fib_routes,
            sessions_up,
            persist,
            persisted,
            installed,
            desired,
            table_rejected,
            in_sync,
        ]
