"""Top-level pytest configuration."""
