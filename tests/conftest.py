"""Top-level pytest configuration: fixture plugins for labs, daemons and the API server."""

pytest_plugins = [
    "tests.support.fixtures_lab",
    "tests.support.fixtures_apiserver",
]
