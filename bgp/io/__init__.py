"""Thin asyncio transport around the sans-IO BGP core: listener, connector, TCP-MD5, GTSM."""
