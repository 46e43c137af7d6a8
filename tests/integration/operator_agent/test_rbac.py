"""Least privilege of the chart's RBAC: `routeserver agent` works with exactly the rendered rules,
and each right it uses is needed -- without it, a specific symptom shows.

The chart is rendered with `helm template`; for each case one verb (or one API group) is taken out
of the rendered ClusterRole or Role, the result is applied as a new ClusterRole/Role bound to a
fresh ServiceAccount in the release namespace, and one agent runs in a lab host with that
account's token. No BGP peer is needed: the peers' addresses are unreachable, so their sessions
stay down, which is enough for the session objects, the summary status, the Lease, the Events and
the Secret read to show. The baseline runs with the unmodified rules and sees no symptom at all.
`test_every_granted_right_has_a_case` keeps the table complete when the chart changes.

Findings: rights the chart grants that the agent does not use (their cases expect "works as the
baseline, nothing refused"; they should be dropped from the chart):

- get on routeservers/routeserverpeers/routetableassociations: only list (the full listing) and
  watch (kopf) are used.
- get on the */status subresources: the status writes are merge patches, never read first.
- list on nodes: the Node is read by name (get) and watched with a name field selector, which the
  API server authorizes as the verb watch.
- events in the core ("") API group: Events are written through events.k8s.io/v1 only.

And one right that is used but not needed: list/watch on customresourcedefinitions is kopf's
dynamic resource observation. Without it kopf logs its refused request as an ERROR, retried nine
times over about a minute, then "Not enough permissions to watch for resources" once, and keeps
serving the resources it found at startup (checked for 130 s: a peer added after that was still
applied). Dropping the rule goes with `settings.scanning.disabled = True` in the agent's kopf
settings, at the price of CRDs installed or changed after the agent started going unnoticed.
"""

from __future__ import annotations

import base64
import copy
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controller.operator.sessions import session_name, session_object
from controller.operator.source import KOPF_LISTING_RELISTS
from tests.support.helm import FULLNAME, NAMESPACE, Helm
from tests.support.netns import Lab, wait_until
from tests.support.operator_lab import AgentProcess, Cluster, cluster_fixture
from tests.support.route_server import PeerSpec, ServerSpec

pytestmark = [pytest.mark.netns, pytest.mark.apiserver, pytest.mark.slow]

ENDPOINT = "routeserver.dev/endpoint"
SECRET = "rbac-md5"
NODE = "node"
ABSENT_FOR = 8.0  # seconds a symptom-free agent would long have shown what is checked for
Rule = dict[str, Any]
Right = tuple[str, tuple[str, ...], str | None, str | None]  # kind, resources, verb, group


# -- the rendered rules and their edits ------------------------------------------------------------


def rendered_rules(workdir: Path) -> dict[str, list[Rule]]:
    """ "ClusterRole"/"Role" -> the rules of the chart's agent roles, as `helm template` renders them."""
    docs = Helm(workdir).template()
    found = {
        d["kind"]: d["rules"]
        for d in docs
        if d["kind"] in ("ClusterRole", "Role") and d["metadata"]["name"] == f"{FULLNAME}-agent"
    }
    assert set(found) == {"ClusterRole", "Role"}, found
    return found


@dataclass(frozen=True)
class Removal:
    """One right taken out: `verb` on the rule holding `resource` (of `group` only, if given)."""

    kind: str  # ClusterRole | Role
    resource: str
    verb: str | None  # None: every verb (with `group`: the group dropped from the rule)
    group: str | None = None

    def apply(self, rules: list[Rule]) -> list[Rule]:
        out = copy.deepcopy(rules)
        (rule,) = [r for r in out if self.resource in r["resources"]]
        if self.group is not None:
            assert self.group in rule["apiGroups"], (self, rule)
            rest = dict(rule, apiGroups=[g for g in rule["apiGroups"] if g != self.group])
            kept = [v for v in rule["verbs"] if v != self.verb] if self.verb else []
            out[out.index(rule)] = rest
            if kept:
                out.append(dict(rule, apiGroups=[self.group], verbs=kept))
            return out
        assert self.verb in rule["verbs"], (self, rule)
        rule["verbs"] = [v for v in rule["verbs"] if v != self.verb]
        if not rule["verbs"]:
            out.remove(rule)
        return out


# -- one run: an agent with edited rights ---------------------------------------------------------


@dataclass
class Run:
    cluster: Cluster
    agent: AgentProcess
    spec: ServerSpec
    peers: tuple[str, str]  # (with the Secret, without)
    started: float = field(default_factory=time.time)

    @property
    def rs(self) -> str:
        return self.spec.name

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.agent.host.workdir.glob("agent*.log"))
        )

    def served(self) -> list[str]:
        return [rs["name"] for rs in self.agent.status().get("route_servers") or []]

    def served_peers(self) -> set[str]:
        for rs in self.agent.status().get("route_servers") or []:
            if rs["name"] == self.rs:
                return {p["name"] for p in rs["peers"]}
        return set()

    def problems(self) -> list[str]:
        return [str(p) for p in self.agent.status()["config"]["problems"]]

    def sessions(self) -> dict[str, dict[str, Any]]:
        """peer -> this node's session object of this case."""
        return {
            o["spec"]["peerRef"]["name"]: o
            for o in self.cluster.items("routeserversessions")
            if o["spec"]["node"] == NODE and o["spec"]["peerRef"]["name"] in self.peers
        }

    def sessions_with_status(self) -> set[str]:
        return {p for p, o in self.sessions().items() if (o.get("status") or {}).get("bgpState")}

    def summary_conditions(self) -> set[str]:
        obj = self.cluster.get("routeserver", self.rs) or {}
        return {c["type"] for c in (obj.get("status") or {}).get("conditions") or ()}

    def leader(self) -> bool:
        return (
            re.search(rf'routeserver_summary_leader\{{[^}}]*"{self.rs}"[^}}]*\}} 1', self.agent.metrics())
            is not None
        )

    def started_events(self) -> list[dict[str, Any]]:
        return [
            e
            for e in self.cluster.items(
                "events.events.k8s.io", "-n", "default", f"--field-selector=regarding.name={self.rs}"
            )
            if e.get("reason") == "Started"
        ]

    def started_count(self) -> int:
        return max((int((e.get("series") or {}).get("count") or 1) for e in self.started_events()), default=0)

    def label(self, value: str) -> None:
        self.cluster.label("node", NODE, f"{ENDPOINT}={value}")

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        self.agent.wait(predicate, timeout, what, interval=0.2)

    def never(self, predicate: Callable[[], bool], what: str, seconds: float = ABSENT_FOR) -> None:
        """`predicate` stays false for `seconds` (the baseline shows it well within that)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                happened = predicate()
            except (OSError, ValueError, KeyError):
                happened = False
            assert not happened, f"{what} happened without the right:\n{self.log()[-4000:]}"
            time.sleep(0.3)

    def logged(self, *patterns: str) -> None:
        """Every pattern (a regex) appears in the agent's log, eventually."""
        for pattern in patterns:
            wait_until(lambda p=pattern: re.search(p, self.log()) is not None, 20, interval=0.2,
                       what=f"{pattern!r} in the agent's log")  # fmt: skip


def _secret_document() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE},
        "type": "Opaque",
        "data": {"password": base64.b64encode(b"rbac-Key-51d0").decode()},
    }


def _account(cluster: Cluster, name: str, rules: dict[str, list[Rule]]) -> Path:
    """A ServiceAccount bound to `rules` (ClusterRole + Role of that name); its kubeconfig."""
    rbac = "rbac.authorization.k8s.io"
    subjects = [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]
    here = {"name": name, "namespace": NAMESPACE}
    cluster.apply(
        [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": here},
            {"apiVersion": f"{rbac}/v1", "kind": "ClusterRole", "metadata": {"name": name},
             "rules": rules["ClusterRole"]},
            {"apiVersion": f"{rbac}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
             "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": name}, "subjects": subjects},
            {"apiVersion": f"{rbac}/v1", "kind": "Role", "metadata": here, "rules": rules["Role"]},
            {"apiVersion": f"{rbac}/v1", "kind": "RoleBinding", "metadata": here,
             "roleRef": {"apiGroup": rbac, "kind": "Role", "name": name}, "subjects": subjects},
        ]
    )  # fmt: skip
    return cluster.api.kubeconfig_for_token(cluster.api.token_for(NAMESPACE, name), name)


def _delete_account(cluster: Cluster, name: str) -> None:
    for args in (
        ("clusterrolebinding", name),
        ("clusterrole", name),
        ("rolebinding", name, "-n", NAMESPACE),
        ("role", name, "-n", NAMESPACE),
        ("serviceaccount", name, "-n", NAMESPACE),
    ):
        cluster.kubectl("delete", *args, "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    for the_cluster in cluster_fixture(tmp_path_factory.mktemp("cluster")):
        the_cluster.apply([_secret_document()])
        yield the_cluster


@pytest.fixture(scope="module")
def chart_rules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Rule]]:
    return rendered_rules(tmp_path_factory.mktemp("helm"))


_counter = iter(range(1000))


@pytest.fixture
def start_run(
    lab: Lab, cluster: Cluster, chart_rules: dict[str, list[Rule]]
) -> Iterator[Callable[[Removal | None], Run]]:
    runs: list[tuple[Run, str]] = []

    def start(removal: Removal | None) -> Run:
        index = next(_counter)
        account = f"rbac-{index}"
        rules = dict(chart_rules)
        if removal is not None:
            rules[removal.kind] = removal.apply(chart_rules[removal.kind])
        kubeconfig = _account(cluster, account, rules)
        peers = (f"c{index}-md5", f"c{index}-plain")
        spec = ServerSpec(
            (
                PeerSpec(peers[0], "10.0.9.1", 65001, auth_secret=SECRET),
                PeerSpec(peers[1], "10.0.9.2", 65002),
            ),
            name=f"rs-{index}",
            node_selector={ENDPOINT: "true"},
            router_id="10.0.1.1",
        )
        cluster.node(NODE, {ENDPOINT: "true"})
        cluster.apply(spec.documents())
        # A session object of this node that its label listing does not find (no labels: made by hand
        # or by an older agent): the agent adopts it (create: 409 Conflict, then get).
        peer_uid = (cluster.get("routeserverpeer", peers[1]) or {})["metadata"]["uid"]
        unlabelled = session_object(session_name(peers[1], NODE), NODE, peers[1], spec.name, peer_uid)
        unlabelled["metadata"].pop("labels")
        cluster.apply([unlabelled])
        host = lab.host(NODE) if NODE not in lab.hosts else lab.hosts[NODE]
        agent = AgentProcess(
            host,
            cluster,
            spec,
            kubeconfig=kubeconfig,
            extra_args=["--secret-interval", "1"],
            name=f"agent-{index}",
        )
        run = Run(cluster, agent, spec, peers)
        runs.append((run, account))
        agent.start()
        return run

    try:
        yield start
    finally:
        for run, account in runs:
            run.agent.close()
            for plural in ("routetableassociations", "routeserverpeers", "routeservers"):
                cluster.kubectl("delete", plural, "--all", check=False)
            cluster.kubectl("delete", "node", NODE, "--ignore-not-found", check=False)
            _delete_account(cluster, account)


# -- what a fully entitled agent shows (each a step of the baseline) -------------------------------


def serves(run: Run) -> None:
    run.wait(lambda: run.served_peers() == set(run.peers), "both peers applied (listing, Node, Secret)")
    assert not [p for p in run.problems() if SECRET in p], run.problems()


def writes_sessions(run: Run) -> None:
    run.wait(lambda: run.sessions_with_status() == set(run.peers), "both session objects with a status")


def leads_and_summarizes(run: Run) -> None:
    run.wait(run.leader, "routeserver_summary_leader 1")
    run.wait(lambda: "Ready" in run.summary_conditions(), "the summary conditions on the RouteServer")


def records_events(run: Run) -> None:
    run.wait(lambda: run.started_count() >= 1, "a RouteServerStarted Event")


def follows_the_node_and_aggregates(run: Run) -> None:
    """The node leaves the nodeSelector (its sessions are deleted) and comes back: the second
    RouteServerStarted joins the first Event's series (a patch)."""
    run.wait(lambda: run.started_count() >= 1, "a RouteServerStarted Event")
    run.label("false")
    run.wait(lambda: run.served() == [], "the route server stopped (Node watch)")
    run.wait(lambda: run.sessions() == {}, "the session objects deleted")
    run.label("true")
    run.wait(lambda: run.served() == [run.rs], "the route server served again")
    run.wait(lambda: run.started_count() == 2, "the second RouteServerStarted as series count 2")


def follows_the_configuration(run: Run) -> None:
    """A peer added while the agent runs arrives through the watch."""
    run.wait(lambda: run.served_peers() == set(run.peers), "both peers applied")
    run.cluster.apply([PeerSpec(f"{run.peers[0]}-late", "10.0.9.3", 65003).document(run.rs)])
    run.wait(lambda: f"{run.peers[0]}-late" in run.served_peers(), "the peer added later applied (watch)")


BASELINE = (serves, writes_sessions, leads_and_summarizes, records_events, follows_the_node_and_aggregates,
            follows_the_configuration)  # fmt: skip


def test_the_chart_rules_exactly_show_no_symptom(start_run: Callable[[Removal | None], Run]) -> None:
    run = start_run(None)
    for step in BASELINE:
        step(run)
    assert "403" not in run.log() and "Forbidden" not in run.log(), run.log()[-4000:]
    assert "failed" not in run.log(), run.log()[-4000:]
    assert run.agent.terminate() == 0, run.log()[-4000:]  # the release exists: a SIGTERM keeps routes
    assert "release_removed" not in run.log(), run.log()[-4000:]


# -- one right missing: its symptom --------------------------------------------------------------

CONFIG = "routeservers"  # the rule of the configuration objects (with routeserverpeers, ...)
STATUS = "routeservers/status"
SESSIONS = "routeserversessions"


def works_as_the_baseline(run: Run) -> None:
    """A right the agent does not use: everything as with the chart's rules, and nothing refused."""
    for step in BASELINE:
        step(run)
    assert "403" not in run.log() and "Forbidden" not in run.log(), run.log()[-4000:]


def no_config_list(run: Run) -> None:
    run.never(lambda: run.served() != [], "a route server applied")
    run.logged(r"list_failed.*403")


def no_config_watch(run: Run) -> None:
    """Served from the full listings (at start, and two more after kopf's watches start), but a change
    after those waits for the next one (a minute when quiet)."""
    serves(run)  # the initial listing
    time.sleep(sum(KOPF_LISTING_RELISTS) + 2)  # the listings after kopf's start are done
    run.cluster.apply([PeerSpec(f"{run.peers[0]}-late", "10.0.9.3", 65003).document(run.rs)])
    run.never(lambda: f"{run.peers[0]}-late" in run.served_peers(), "the peer added later applied")
    run.logged(r"403|[Ff]orbidden")


def no_status_patch(run: Run) -> None:
    run.wait(lambda: set(run.sessions()) == set(run.peers), "both session objects exist")
    run.never(lambda: bool(run.sessions_with_status() or run.summary_conditions()), "a status written")


def no_session_create(run: Run) -> None:
    serves(run)
    # The pre-created object of the second peer is not ours to count: only the first's is missing.
    run.never(lambda: run.peers[0] in run.sessions(), "the first peer's session object created")
    run.logged(r"403|[Ff]orbidden")


def no_session_get(run: Run) -> None:
    run.wait(lambda: run.peers[0] in run.sessions_with_status(), "the new session object written")
    run.never(lambda: run.peers[1] in run.sessions_with_status(), "the existing session object adopted")
    run.logged(r"403|[Ff]orbidden")


def no_session_delete(run: Run) -> None:
    writes_sessions(run)
    run.label("false")
    run.wait(lambda: run.served() == [], "the route server stopped")
    run.never(lambda: run.sessions() == {}, "the session objects deleted")
    run.logged(r"403|[Ff]orbidden")


def no_node_get(run: Run) -> None:
    run.never(lambda: run.served() != [], "a route server applied")
    run.logged(r"node_read_failed.*403")


def no_node_watch(run: Run) -> None:
    """Labels are read once; a change waits for the resync's Node read (a minute when quiet)."""
    serves(run)
    run.label("false")
    run.never(lambda: run.served() == [], "the label change followed")
    run.logged(r"node_watch_failed.*403")


def no_event_create(run: Run) -> None:
    leads_and_summarizes(run)
    run.never(lambda: run.started_count() > 0, "an Event recorded")
    run.logged(r"403|[Ff]orbidden")


def no_event_patch(run: Run) -> None:
    records_events(run)
    run.label("false")
    run.wait(lambda: run.served() == [], "the route server stopped")
    run.label("true")
    run.wait(lambda: run.served() == [run.rs], "the route server served again")
    run.never(lambda: run.started_count() > 1, "the repeated Event aggregated")
    run.logged(r"403|[Ff]orbidden")


def no_session_list(run: Run) -> None:
    """Listed twice: the session writer learns this node's objects by label, and the Lease holder
    lists every session of a route server to summarize it."""
    run.wait(run.leader, "the leader")
    run.never(lambda: bool(run.summary_conditions()), "the summary written")
    run.logged(r"session_write_failed.*list: 403", r"summary_write_failed kind=RouteServerSession.*403")


def no_crd_read(run: Run) -> None:
    """kopf lists and watches CRDs (its resource observer) and logs each refusal as an ERROR, retried;
    the route server objects are still served and followed (their watches are started anyway)."""
    run.logged(r"ERROR Request attempt .*customresourcedefinitions.* -> APIForbiddenError")
    serves(run)
    follows_the_configuration(run)


def no_lease_read(run: Run) -> None:
    serves(run)
    run.never(lambda: run.leader() or bool(run.summary_conditions()), "a leader or a summary")
    run.logged(r"lease .*read failed: Forbidden")


def no_lease_create(run: Run) -> None:
    serves(run)
    run.never(lambda: run.leader() or bool(run.summary_conditions()), "a leader or a summary")
    run.logged(r"lease .*create failed: Forbidden")


def no_lease_update(run: Run) -> None:
    run.wait(run.leader, "the leader of the Lease it created")
    run.logged(r"lease .*renew failed: Forbidden")
    run.wait(lambda: not run.leader(), "the leadership lost (the Lease cannot be renewed)", timeout=30)


def no_secret_get(run: Run) -> None:
    """The keyed peer stays out (never applied with an empty key) and its problem names the cause."""
    run.wait(lambda: run.served_peers() == {run.peers[1]}, "only the peer without a Secret applied")
    run.wait(
        lambda: any(f"{run.peers[0]}: spec.authSecretRef" in p and "RBAC: 403" in p for p in run.problems()),
        "the problem, naming the refusal",
    )
    run.never(lambda: run.peers[0] in run.served_peers(), "the peer applied with no key")
    run.logged(r"may not be read \(RBAC: 403\) event=secret_missing")


def no_daemonset_get(run: Run) -> None:
    """Without reading its DaemonSet, a SIGTERM cannot tell a rolling update from `helm uninstall`:
    a refused read counts as the release gone (its RBAC went with it), so the agent withdraws."""
    for step in BASELINE[:1]:
        step(run)
    assert run.agent.terminate() == 0, run.log()[-4000:]
    run.logged(r"event=release_removed")


CASES: dict[str, tuple[Removal, Callable[[Run], None]]] = {
    "config-list": (Removal("ClusterRole", CONFIG, "list"), no_config_list),
    "config-watch": (Removal("ClusterRole", CONFIG, "watch"), no_config_watch),
    "status-patch": (Removal("ClusterRole", STATUS, "patch"), no_status_patch),
    "sessions-create": (Removal("ClusterRole", SESSIONS, "create"), no_session_create),
    "sessions-get": (Removal("ClusterRole", SESSIONS, "get"), no_session_get),
    "sessions-list": (Removal("ClusterRole", SESSIONS, "list"), no_session_list),
    "sessions-delete": (Removal("ClusterRole", SESSIONS, "delete"), no_session_delete),
    "nodes-get": (Removal("ClusterRole", "nodes", "get"), no_node_get),
    "nodes-watch": (Removal("ClusterRole", "nodes", "watch"), no_node_watch),
    "events-create": (Removal("ClusterRole", "events", "create"), no_event_create),
    "events-patch": (Removal("ClusterRole", "events", "patch"), no_event_patch),
    # Used by kopf's resource observation, not needed to work (see the module docstring).
    "crds-list": (Removal("ClusterRole", "customresourcedefinitions", "list"), no_crd_read),
    "crds-watch": (Removal("ClusterRole", "customresourcedefinitions", "watch"), no_crd_read),
    "leases-get": (Removal("Role", "leases", "get"), no_lease_read),
    "leases-create": (Removal("Role", "leases", "create"), no_lease_create),
    "leases-update": (Removal("Role", "leases", "update"), no_lease_update),
    "secrets-get": (Removal("Role", "secrets", "get"), no_secret_get),
    "daemonsets-get": (Removal("Role", "daemonsets", "get"), no_daemonset_get),
}


@pytest.mark.parametrize("case", list(CASES))
def test_without_one_right(case: str, start_run: Callable[[Removal | None], Run]) -> None:
    removal, symptom = CASES[case]
    symptom(start_run(removal))


def test_every_granted_right_has_a_case(tmp_path: Path) -> None:
    """Each verb of each rendered rule, and each API group of a rule naming several, is taken out by
    one case: a right added to the chart needs its proof here."""
    rules = rendered_rules(tmp_path)
    covered: set[Right] = set()
    for removal, _ in CASES.values():
        (rule,) = [r for r in rules[removal.kind] if removal.resource in r["resources"]]
        covered.add((removal.kind, tuple(rule["resources"]), removal.verb, removal.group))
    wanted: set[Right] = set()
    for kind, kind_rules in rules.items():
        for rule in kind_rules:
            resources = tuple(rule["resources"])
            wanted.update((kind, resources, verb, None) for verb in rule["verbs"])
            if len(rule["apiGroups"]) > 1:
                wanted.update((kind, resources, None, group) for group in rule["apiGroups"])
    assert wanted <= covered, sorted(wanted - covered, key=str)
