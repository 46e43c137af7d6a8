"""pytest fixtures for network-namespace labs and routing daemons."""
