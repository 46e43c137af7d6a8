"""The operator's own Prometheus series, read at scrape time from the parts that own the figures.

Owns: one collector registered on the agent's registry (so `/metrics` serves them with the rest):
API requests and failures by purpose (controller/operator/kube.py counts them), the age of the last
watch event (the figure `/healthz` judges staleness by), the Kubernetes Events written, folded into
series and dropped, status objects written by kind of write, and the RouteServers whose summary
this agent writes (its Leases).

May not touch: anything it reads (it only reads counters); labels are fixed purpose names and
configured RouteServer names, never prefixes or free text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.metrics import PREFIX


class OperatorCollector(Collector):
    """Reads its figures from callables, so it holds no state and is never stale."""

    def __init__(
        self,
        *,
        requests: Callable[[], Mapping[str, int]],
        failures: Callable[[], Mapping[str, int]],
        watch_age: Callable[[], float],
        events: Callable[[], Mapping[str, int]],
        status_writes: Callable[[], Mapping[str, int]],
        leaders: Callable[[], Iterable[str]],
    ) -> None:
        self._requests = requests
        self._failures = failures
        self._watch_age = watch_age
        self._events = events
        self._status_writes = status_writes
        self._leaders = leaders

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            f"{PREFIX}_api_requests", "Kubernetes API requests of this agent, by purpose.", labels=["purpose"]
        )
        for purpose, count in sorted(self._requests().items()):
            requests.add_metric([purpose], count)
        yield requests
        failures = CounterMetricFamily(
            f"{PREFIX}_api_request_failures",
            "Kubernetes API requests that failed, by purpose.",
            labels=["purpose"],
        )
        for purpose, count in sorted(self._failures().items()):
            failures.add_metric([purpose], count)
        yield failures
        yield GaugeMetricFamily(
            f"{PREFIX}_watch_last_event_age_seconds",
            "Seconds since a watch (kopf's, the Node's) or a full listing last delivered something.",
            value=self._watch_age(),
        )
        events = CounterMetricFamily(
            f"{PREFIX}_kube_events",
            "Kubernetes Events: written, aggregated into series, dropped.",
            labels=["result"],
        )
        for result, count in sorted(self._events().items()):
            events.add_metric([result], count)
        yield events
        writes = CounterMetricFamily(
            f"{PREFIX}_status_writes", "Writes of session and summary status objects.", labels=["kind"]
        )
        for kind, count in sorted(self._status_writes().items()):
            writes.add_metric([kind], count)
        yield writes
        leader = GaugeMetricFamily(
            f"{PREFIX}_summary_leader",
            "1 for each RouteServer whose summary status this agent writes (it holds the Lease).",
            labels=["route_server"],
        )
        for name in sorted(self._leaders()):
            leader.add_metric([name], 1)
        yield leader


__all__ = ["OperatorCollector"]
