"""The `routeserver` command line.

    routeserver run -f PATH [-f PATH ...]     run the route server from YAML files (standalone mode)
    routeserver validate -f PATH [...]        check the files as `run` would, then exit
    routeserver agent [--kubeconfig PATH]     run on a cluster node, fed by the API server (operator)
    routeserver status [--json]               ask a running agent's admin endpoint for its status
    routeserver routes [--route-server X]     its routing database: paths, best, FIB, tables (/routes)

Exit codes: 0 success, 1 runtime failure (a port cannot be bound, the agent cannot be reached),
2 invalid configuration or arguments.

Owns: argument parsing and dispatch (`run`/`validate` to controller/standalone.py, `agent` to
controller/operator/main.py (imported only when that command runs), `status` and `routes` over HTTP, the lab
subcommands it registers). May not touch: the runtime or the agent directly; lab
tooling only through its registered subcommands.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlencode

from controller import logs
from controller.admin import DEFAULT_ADMIN_ADDRESS, parse_address
from controller.argtypes import route_protocol, router_id
from controller.runtime import memory
from controller.standalone import RunOptions, run, validate
from controller.status import render
from controller.writers.netlink import DEFAULT_PROTOCOL
from lab import appliance, demo

STATUS_TIMEOUT = 5.0


def _version() -> str:
    try:
        return version("kube-route-server")
    except PackageNotFoundError:
        return "unknown"


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _files(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        dest="paths",
        action="append",
        required=True,
        metavar="PATH",
        help="a YAML file or a directory of them (repeatable)",
    )
    parser.add_argument("-R", "--recursive", action="store_true", help="read directories recursively")
    parser.add_argument(
        "--namespace",
        default="default",
        help="namespace of Secret documents and references that name none (default: default)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="routeserver", description="Kubernetes-native BGP/BFD route server")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run from YAML files (RouteServer, RouteServerPeer, RouteTableAssociation, Secret)",
        description="Run the route server from YAML files. SIGHUP or a file change reloads; SIGTERM "
        "stops (routes are withdrawn unless the route server has persistRoutes enabled).",
    )
    _files(run)
    run.add_argument(
        "--admin-address",
        default=DEFAULT_ADMIN_ADDRESS,
        help=f"HOST:PORT for /metrics, /healthz and /status (default {DEFAULT_ADMIN_ADDRESS})",
    )
    run.add_argument("--node-name", help="this node's name (default: the host name)")
    run.add_argument(
        "--node-label",
        dest="node_labels",
        action="append",
        type=_label,
        default=[],
        metavar="KEY=VALUE",
        help="a label of this node for nodeSelectors (repeatable)",
    )
    run.add_argument(
        "--router-id",
        type=router_id,
        help="BGP Identifier for route servers without routerID (default: lowest non-loopback IPv4 address)",
    )
    run.add_argument(
        "--watch-interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="poll the files for changes this often; 0 reloads on SIGHUP only (default 2)",
    )
    run.add_argument(
        "--resync-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="rewrite every route table from the FIB this often (default 30)",
    )
    run.add_argument(
        "--route-protocol",
        type=route_protocol,
        default=os.environ.get("KRS_ROUTE_PROTOCOL", str(DEFAULT_PROTOCOL)),
        metavar="N",
        help=f"rtnetlink protocol of our routes (default {DEFAULT_PROTOCOL}, env KRS_ROUTE_PROTOCOL)",
    )
    run.add_argument("--no-bfd", action="store_true", help="run without BFD (liveness by hold timer only)")
    run.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    run.add_argument("--log-format", default="text", choices=("text", "json"))

    agent = commands.add_parser(
        "agent",
        help="run on a cluster node: watch the route server objects and serve the endpoints they select",
        description="The operator's agent (the Helm chart's DaemonSet runs it): one per node, fed by the "
        "API server. SIGTERM keeps the routes for the next agent to adopt; deleting or deselecting "
        "withdraws them.",
    )
    agent.add_argument(
        "--kubeconfig", help="a kubeconfig (default: $KUBECONFIG, else the pod's ServiceAccount)"
    )
    agent.add_argument("--node-name", help="this node's Node name (default: $KRS_NODE_NAME)")
    agent.add_argument(
        "--namespace",
        help="the release namespace: Leases and Secrets (default: $KRS_NAMESPACE, else default)",
    )
    agent.add_argument(
        "--admin-address",
        help="HOST:PORT for /metrics, /healthz and /status (default: $KRS_ADMIN_HOST:$KRS_ADMIN_PORT, "
        f"else {DEFAULT_ADMIN_ADDRESS})",
    )
    agent.add_argument(
        "--router-id", type=router_id, help="BGP Identifier for route servers without routerID"
    )
    agent.add_argument(
        "--route-protocol",
        type=route_protocol,
        default=os.environ.get("KRS_ROUTE_PROTOCOL", str(DEFAULT_PROTOCOL)),
        metavar="N",
        help=f"rtnetlink protocol of our routes (default {DEFAULT_PROTOCOL}, env KRS_ROUTE_PROTOCOL)",
    )
    agent.add_argument("--no-bfd", action="store_true", help="run without BFD (liveness by hold timer only)")
    agent.add_argument(
        "--resync-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="list every route server object again this often (default 60)",
    )
    agent.add_argument(
        "--secret-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="read the referenced Secrets again this often (default 10)",
    )
    agent.add_argument(
        "--stale-after",
        type=float,
        default=180.0,
        metavar="SECONDS",
        help="/healthz fails when no watch has spoken for this long (default 180)",
    )
    agent.add_argument(
        "--log-level",
        default=os.environ.get("KRS_LOG_LEVEL", "info").upper(),
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    )
    agent.add_argument(
        "--daemonset",
        help="the agents' DaemonSet (default: $KRS_DAEMONSET): gone at SIGTERM means uninstall, so withdraw",
    )
    agent.add_argument("--log-format", default="json", choices=("text", "json"))

    check = commands.add_parser("validate", help="validate YAML files as `run` would, then exit")
    _files(check)

    status = commands.add_parser("status", help="show a running agent's sessions, routes and tables")
    status.add_argument(
        "--admin-address",
        default=DEFAULT_ADMIN_ADDRESS,
        help=f"the agent's admin HOST:PORT (default {DEFAULT_ADMIN_ADDRESS})",
    )
    status.add_argument("--json", action="store_true", help="print the raw JSON status")
    status.add_argument("--timeout", type=float, default=STATUS_TIMEOUT, help="seconds to wait for the agent")

    routes = commands.add_parser(
        "routes",
        help="show a route server's routing database: every path per prefix, the best, FIB and tables",
        description="Pages through the agent's /routes endpoint (in address order). Paths: * marks the "
        "best path (or the ECMP set), !REASON an import policy rejection (sampled; rejected paths are "
        "not kept in the RIB).",
    )
    routes.add_argument(
        "--admin-address",
        default=DEFAULT_ADMIN_ADDRESS,
        help=f"the agent's admin HOST:PORT (default {DEFAULT_ADMIN_ADDRESS})",
    )
    routes.add_argument(
        "--route-server", help="the RouteServer (default: the only one the agent runs)", metavar="NAME"
    )
    routes.add_argument("--prefix", help="only routes within this CIDR", metavar="CIDR")
    routes.add_argument(
        "--after", help="start after this prefix (the `next` of a previous page)", metavar="P"
    )
    routes.add_argument("--all", action="store_true", help="every page, not only the first")
    routes.add_argument(
        "--page-size", type=int, default=500, metavar="N", help="routes per request (1..1000)"
    )
    routes.add_argument("--json", action="store_true", help="print the routes as JSON (one array)")
    routes.add_argument("--timeout", type=float, default=STATUS_TIMEOUT, help="seconds to wait for the agent")

    # -- appliance and demo (lab/appliance.py, lab/demo.py): each sets args.handler --
    appliance.add_parser(commands)
    demo.add_parser(commands)
    return parser


def fetch_status(address: str, timeout: float = STATUS_TIMEOUT) -> dict[str, object]:
    """GET /status from an agent's admin address; OSError/ValueError when it cannot be had."""
    return _get_json(address, "/status", timeout)


def _get_json(address: str, target: str, timeout: float) -> dict[str, Any]:
    host, port = parse_address(address)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        detail = body.decode(errors="replace").strip()
        raise ValueError(f"{address} answered {response.status} {response.reason}: {detail}")
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError(f"{address} did not answer with a JSON object")
    return data


def fetch_routes(
    address: str,
    route_server: str,
    *,
    within: str | None = None,
    after: str | None = None,
    page_size: int = 500,
    every_page: bool = True,
    timeout: float = STATUS_TIMEOUT,
) -> Iterator[dict[str, Any]]:
    """The routes of `/routes`, page after page (only the first unless `every_page`)."""
    cursor = after
    while True:
        params = {"routeServer": route_server, "limit": str(page_size)}
        if cursor is not None:
            params["after"] = cursor
        if within is not None:
            params["prefix"] = within
        page = _get_json(address, "/routes?" + urlencode(params), timeout)
        yield from page["routes"]
        cursor = page["next"]
        if cursor is None or not every_page:
            return


def _route_row(route: dict[str, Any]) -> tuple[str, str, str, str, str]:
    paths = []
    for path in route["rib"]:
        if path["status"] == "Rejected":
            paths.append(f"{path['peer']}!{path['reason']}")
        else:
            mark = "*" if path["best"] else ""
            stale = " stale" if path.get("stale") else ""
            paths.append(f"{path['peer']}{mark} {path['nextHop']} [{path['asPath']}]{stale}")
    fib = ",".join(route["fib"]["nextHops"]) or "-"
    if route["fib"]["held"]:
        fib += " (held)"
    tables = " ".join(
        f"{t['table']}={t['state']}" + (f"({t['reason']})" if t["state"] == "Rejected" else "")
        for t in route["tables"]
    )
    return route["prefix"], "; ".join(paths) or "-", route["best"]["reason"] or "-", fib, tables or "-"


def _routes(args: argparse.Namespace) -> int:
    name = args.route_server
    try:
        if name is None:
            servers = _get_json(args.admin_address, "/status", args.timeout).get("route_servers") or []
            names = [rs["name"] for rs in servers if isinstance(rs, dict)]
            if len(names) != 1:
                print(f"--route-server is needed: the agent runs {names or 'none'}", file=sys.stderr)
                return 2
            name = names[0]
        routes = fetch_routes(
            args.admin_address,
            name,
            within=args.prefix,
            after=args.after,
            page_size=args.page_size,
            every_page=args.all,
            timeout=args.timeout,
        )
        if args.json:
            print(json.dumps(list(routes), indent=2))
            return 0
        rows = [("PREFIX", "PATHS (* best)", "DECIDED BY", "FIB", "TABLES")]
        rows += [_route_row(route) for route in routes]
    except (OSError, ValueError) as exc:
        print(f"cannot get routes from {args.admin_address}: {exc}", file=sys.stderr)
        return 1
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    if len(rows) == 1:
        print("no routes")
    elif not args.all and len(rows) - 1 == args.page_size:
        print(f"(first {args.page_size} routes: --all for every page, --after {rows[-1][0]} for the next)")
    return 0


def _run(args: argparse.Namespace) -> int:
    logs.setup(args.log_level, args.log_format)
    options = RunOptions(
        paths=args.paths,
        recursive=args.recursive,
        admin_address=args.admin_address,
        node_name=args.node_name,
        node_labels=dict(args.node_labels),
        router_id=args.router_id,
        namespace=args.namespace,
        watch_interval=args.watch_interval,
        resync_interval=args.resync_interval,
        bfd=not args.no_bfd,
        version=_version(),
        route_protocol=args.route_protocol,
    )
    return run(options)


def _agent(args: argparse.Namespace) -> int:
    from controller.operator import main as operator_main  # noqa: PLC0415 (kopf/kubernetes load only here)

    logs.setup(args.log_level, args.log_format)
    try:
        settings = operator_main.settings_from_args(args, _version())
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    return operator_main.run(settings)


def _validate(args: argparse.Namespace) -> int:
    problems = validate(args.paths, recursive=args.recursive, namespace=args.namespace)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s); the configuration would not start", file=sys.stderr)
        return 2
    print("configuration valid")
    return 0


def _status(args: argparse.Namespace) -> int:
    try:
        data = fetch_status(args.admin_address, args.timeout)
    except (OSError, ValueError) as exc:
        print(f"cannot get status from {args.admin_address}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        sys.stdout.write(render(data))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in ("run", "agent"):
        memory.return_large_blocks()  # before the route path allocates: freed tables leave no holes
    if args.command == "run":
        return _run(args)
    if args.command == "validate":
        return _validate(args)
    if args.command == "agent":
        return _agent(args)
    if args.command == "routes":
        return _routes(args)
    handler = getattr(args, "handler", None)  # appliance, demo
    if handler is not None:
        return int(handler(args))
    return _status(args)


if __name__ == "__main__":
    raise SystemExit(main())
