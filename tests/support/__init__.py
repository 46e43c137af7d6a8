"""Shared test infrastructure: prerequisites, network-namespace labs, real daemons, a real API server."""
