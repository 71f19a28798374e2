"""The loop thread's runner: asyncio.Runner, or what it does on Python 3.9 and 3.10.

The loop thread uses it to make its loop and to close it; it runs its first task
itself (see _first_task)."""

from __future__ import annotations

import asyncio
import sys
from typing import Callable, Optional

__all__ = ["LoopFactory", "Runner"]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

if sys.version_info >= (3, 11):
    Runner = asyncio.Runner
else:  # pragma: no cover - exercised by the tox matrix on 3.9 and 3.10

    class Runner:
        """The part of ``asyncio.Runner`` (3.11+) the loop thread uses.

        ``close()`` does what ``Runner.close`` does: cancel leftover tasks, shut down
        async generators and the default executor, then close the loop.
        """

        def __init__(self, *, loop_factory: Optional[LoopFactory] = None) -> None:
            self._loop_factory = loop_factory
            self._loop: Optional[asyncio.AbstractEventLoop] = None
            self._set_event_loop = False

        def get_loop(self) -> asyncio.AbstractEventLoop:
            if self._loop is None:
                if self._loop_factory is None:
                    self._loop = asyncio.new_event_loop()
                    asyncio.set_event_loop(self._loop)
                    self._set_event_loop = True
                else:
                    self._loop = self._loop_factory()
            return self._loop

        def close(self) -> None:
            loop = self._loop
            if loop is None or loop.is_closed():
                return
            try:
                _cancel_all_tasks(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                if self._set_event_loop:
                    asyncio.set_event_loop(None)
                loop.close()

    def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
        to_cancel = asyncio.all_tasks(loop)
        if not to_cancel:
            return
        for task in to_cancel:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*to_cancel, return_exceptions=True))
        for task in to_cancel:
            if task.cancelled():
                continue
            if task.exception() is not None:
                loop.call_exception_handler(
                    {
                        "message": "unhandled exception during loop thread shutdown",
                        "exception": task.exception(),
                        "task": task,
                    }
                )
