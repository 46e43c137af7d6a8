"""The route server's control plane: one agent core, fed by a source (files now, the API server next).

Owns (docs/architecture.md has the picture): `desired` (the frozen desired-state types, the bottom
layer), `translate` (API objects -> desired state, pure), `fib` (selection and persist, pure),
`runtime/` (speakers, BFD liveness, FIBs and tables, level-triggered), `writers/` (the FIB into
route tables), `agent` (the process host of both modes), `standalone` (the file source), `node`
(node discovery), `models/` (the CRDs in pydantic), `admin`, `status`, `metrics`, `events`, `logs`,
`cli`.

May not touch: lab tooling (only `cli` registers its subcommands), kopf or kubernetes (only the
future `controller.operator`); import-linter enforces both and the layering inside (pyproject.toml).
"""
