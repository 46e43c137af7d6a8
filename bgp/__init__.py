"""BGP-4 speaker: sans-IO codec, FSM and RIB (pure), with thin asyncio transport in bgp.io."""
