"""A coroutine job or async initializer for the bridge's tests that stays parked until it
is cancelled, and says so through thread-safe events."""

from __future__ import annotations

import asyncio
import threading

WAIT = 5  # seconds: the hang guard; reaching it is a failure, not a wait for an event


class Parked:
    """Parked until cancelled, for WAIT seconds at most: then it fails with TimeoutError,
    never cancelled, so a missing cancel fails the test rather than hang the run."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cancelled = threading.Event()

    async def __call__(self) -> None:
        self.started.set()
        try:
            await asyncio.wait_for(asyncio.Event().wait(), WAIT)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
