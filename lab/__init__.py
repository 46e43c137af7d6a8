"""Lab tooling: the failover demo, its in-namespace helpers, the appliance and the namespace library.

Owns: `routeserver demo` (demo.py, demo_tools.py), `routeserver appliance` (appliance.py: our own
BGP+BFD speaker acting as a VIP holder) and the network-namespace lab library (netlab.py) that the
demo, the tests and the benchmarks share.

Must not touch: the control plane. No module of `controller/` imports `lab` except the CLI entry
point (controller.cli registers the `demo` and `appliance` subcommands); import-linter enforces it.
"""
