"""ExecutorStats: the read-only counts snapshot both executors expose."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["ExecutorStats"]


@dataclass(frozen=True)
class ExecutorStats:
    """A snapshot of an executor's job counts, taken when ``stats`` was read.

    ``submitted`` counts every job accepted so far. Each accepted job is, at any moment,
    in exactly one of ``queued``, ``running`` or one of the three outcome counts, so
    ``submitted == queued + running + succeeded + failed + cancelled`` always holds. (It
    holds as every snapshot is taken where no job moves meanwhile: ``LoopExecutor``
    takes it on its loop thread, whichever thread reads it; ``CoroutineExecutor`` on the
    thread that reads it, so it refuses a read from another thread while its loop runs.)
    ``failed`` counts jobs that raised (including ``TimeoutError`` from ``job_timeout``);
    ``cancelled`` counts jobs cancelled before or while running, whoever cancelled them.
    ``retried`` counts the attempts that failed and were given another try (``retry=``),
    even if that try was then cancelled: a job that succeeds on its third attempt adds 2,
    one cancelled in its pause after a first failure adds 1 (a call that failed as its
    job was submitted is such a first failure, its job cancelled before or after its
    pause began). A job between two attempts
    is counted in ``queued``.
    ``max_workers`` is the limit in force (``None`` in a snapshot built by hand).
    With ``key=``: ``active_keys``, how many keys have a job running or waiting, and
    ``busiest_key``, the key with the most jobs waiting and their number, as
    ``(key, waiting)`` (``None`` when none waits, or without ``key=``); its count
    includes the ``await submit()`` calls waiting in the key's line, and those a shrink
    of ``max_workers`` sent back to wait again, which ``queued`` leaves out (not
    accepted until they start).
    """

    submitted: int
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    retried: int = 0
    #: The limit on running jobs when the snapshot was taken (with ``max_workers=Adaptive``,
    #: the limit it has moved to); not compared by ``==``.
    max_workers: Optional[int] = field(default=None, compare=False)
    #: With ``key=``: keys with a job running or waiting (``None`` without ``key=``).
    active_keys: Optional[int] = field(default=None, compare=False)
    #: With ``key=``: ``(key, waiting)`` for the key with the longest line, or ``None``.
    busiest_key: Optional[tuple[Hashable, int]] = field(default=None, compare=False)

    @property
    def done(self) -> int:
        """Jobs that have finished, whatever the outcome."""
        return self.succeeded + self.failed + self.cancelled
