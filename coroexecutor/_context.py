"""The context variables that tell where the current code runs: in which executor's job,
in which executor's initializer."""

from __future__ import annotations

import contextvars
from typing import Any

__all__ = ["initializing", "inside_a_job_of", "job_position"]

# The innermost executor whose job the current context runs in (None: no job). Every
# job's task sets it in its own context, so the tasks a job starts (a TaskGroup's, an
# inner executor's jobs, wait_for's on Python < 3.12) inherit it. Read by shutdown().
job_position: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "coroexecutor_job_position", default=None
)
# The executors whose initializer the current context runs in, innermost last. Set in the
# initializer's own task (see _startup.start_initializer), so the tasks it starts (its
# helpers, wait_for's on Python < 3.12, an inner executor's jobs) inherit it too.
initializing: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar(
    "coroexecutor_initializing", default=()
)


def inside_a_job_of(exe: Any) -> bool:
    """Whether the calling code runs inside one of ``exe``'s jobs: in the job itself, a
    task it started, or a job of an executor nested in it (one whose block was entered
    inside such a job: see _shutdown.may_wait, which walks the same chain)."""
    position = job_position.get()
    while position is not None:
        if position is exe:
            return True
        position = position._outer
    return False
