"""Run coroutines with bounded concurrency from async and sync code."""

from __future__ import annotations

from ._adaptive import Adaptive
from ._errors import (
    BrokenCoroutineExecutor,
    BrokenLoopExecutor,
    ExecutorTimeoutError,
    JobTimeoutError,
)
from ._executor import CoroutineExecutor, MapIterator
from ._retry import Retry
from ._stats import ExecutorStats
from .sync_bridge import ThreadedLoopExecutor

LoopExecutor = ThreadedLoopExecutor  # an alias: the same class object, not a subclass

# Calendar versioning (YYYY.MM.N), continuing the original project's 2022.8.1 on the
# package index: a release numbered below it would never be picked by pip.
__version__ = "2026.12.0"

__all__ = [
    "Adaptive",
    "BrokenCoroutineExecutor",
    "BrokenLoopExecutor",
    "CoroutineExecutor",
    "ExecutorStats",
    "ExecutorTimeoutError",
    "JobTimeoutError",
    "LoopExecutor",
    "MapIterator",
    "Retry",
    "ThreadedLoopExecutor",
    "__version__",
]

_PUBLIC_CLASSES = (
    Adaptive,
    BrokenCoroutineExecutor,
    BrokenLoopExecutor,
    CoroutineExecutor,
    ExecutorStats,
    ExecutorTimeoutError,
    JobTimeoutError,
    MapIterator,
    Retry,
    ThreadedLoopExecutor,
)
for _cls in _PUBLIC_CLASSES:
    _cls.__module__ = __name__  # reprs, tracebacks, pickles and Sphinx say coroexecutor.X
del _cls
