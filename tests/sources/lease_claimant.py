"""A process that competes for a source's lease, for the lease tests (kill -9 needs a process).

    python -m tests.sources.lease_claimant BOOTSTRAP PREFIX SOURCE CLAIMANT SECONDS STATE_FILE

It writes ``held`` or ``standby`` to STATE_FILE whenever that changes, and
releases the lease on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from etl.control.lease import KafkaLease
from etl.testing.settings import pipeline_settings


async def main(
    bootstrap: str, prefix: str, source: str, claimant: str, seconds: float, state: Path
) -> None:
    settings = pipeline_settings(bootstrap, prefix, prefix="")
    lease = KafkaLease(settings, source, seconds=seconds, claimant=claimant)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    shown = ""
    while not stopping.is_set():
        now = "held" if await lease.acquire() and await lease.held() else "standby"
        if now != shown:
            await asyncio.to_thread(state.write_text, now)
            shown = now
        try:
            await asyncio.wait_for(stopping.wait(), lease.check_seconds)
        except TimeoutError:
            pass
    await lease.release()
    await asyncio.to_thread(state.write_text, "released")


if __name__ == "__main__":
    bootstrap, prefix, source, claimant, seconds, state = sys.argv[1:7]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main(bootstrap, prefix, source, claimant, float(seconds), Path(state)))
