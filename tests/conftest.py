"""Top-level pytest configuration: fixture plugins for labs, daemons and the API server."""

from hypothesis import HealthCheck, settings

pytest_plugins = [
    "tests.support.fixtures_lab",
    "tests.support.fixtures_apiserver",
]

# Property tests run on a shared 2-core machine next to real daemons: per-example wall-clock
# deadlines would turn load into failures, so none (the example counts stay bounded per test).
settings.register_profile("krs", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("krs")
