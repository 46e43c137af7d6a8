"""BFD (RFC 5880/5881/5883): pure codec and session state machine, asyncio UDP transport and service."""
