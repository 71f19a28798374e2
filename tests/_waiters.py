"""What the tests of waiters turned away share (test_map_slot_wait_closed.py,
test_granted_waiter_turned_away.py): a job that holds its slot until released, and a
bounded wait, in loop turns, for a waiter to end."""

from __future__ import annotations

import asyncio
import re
from typing import Any

REFUSED = re.escape("cannot schedule new futures after shutdown")
TURNS = 20  # loop turns a turned-away waiter gets to end; it needs two or three


class Holder:
    """A job that parks until ``release`` is set, and what the jobs it ran were given."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.ran: list[Any] = []

    async def park(self, arg: Any) -> Any:
        self.ran.append(arg)
        await self.release.wait()
        return arg


async def ended_within_turns(task: asyncio.Future[Any]) -> bool:
    """Whether ``task`` ends within TURNS turns of the loop (a count, not a time)."""
    for _ in range(TURNS):
        if task.done():
            return True
        await asyncio.sleep(0)
    return task.done()
