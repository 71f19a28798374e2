"""A loop's task factory set for the length of a ``with`` block (tests of task factories
that refuse or replace the tasks the executor asks for)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any, Callable


@contextlib.contextmanager
def task_factory(factory: Callable[..., Any]) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    loop.set_task_factory(factory)
    try:
        yield
    finally:
        loop.set_task_factory(previous)
