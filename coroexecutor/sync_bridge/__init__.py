"""The sync bridge: a concurrent.futures.Executor that runs jobs on an event loop thread."""

from __future__ import annotations

from .._errors import BrokenLoopExecutor
from ._executor import ThreadedLoopExecutor

__all__ = ["BrokenLoopExecutor", "ThreadedLoopExecutor"]
