"""ExaBGP API process: records what ExaBGP reports, forwards test commands to ExaBGP.

Run by ExaBGP as `python exabgp_relay.py EVENTS_FILE COMMAND_FIFO`. ExaBGP writes JSON lines to our
stdin (appended to EVENTS_FILE) and reads commands from our stdout (taken from COMMAND_FIFO).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path


def forward_commands(fifo: Path) -> None:
    """Copy command lines from the FIFO to ExaBGP (our stdout), reopening after each writer."""
    while True:
        with open(fifo, encoding="utf-8") as commands:
            for line in commands:
                sys.stdout.write(line if line.endswith("\n") else line + "\n")
                sys.stdout.flush()


def main() -> None:
    events, fifo = Path(sys.argv[1]), Path(sys.argv[2])
    threading.Thread(target=forward_commands, args=(fifo,), daemon=True).start()
    (events.parent / "relay.ready").write_text(str(os.getpid()))
    with open(events, "a", encoding="utf-8") as out:
        for line in sys.stdin:
            out.write(line)
            out.flush()


if __name__ == "__main__":
    main()
