"""The executor's lifecycle states, shared by the executor and its map iterators."""

from __future__ import annotations

import enum

__all__ = ["State"]


class State(enum.Enum):
    CREATED = "created"  # not yet bound to an event loop
    STARTING = "starting"  # the initializer runs; accepted jobs wait in the backlog
    RUNNING = "running"  # accepting jobs
    EXITING = "exiting"  # the async-with body is done; still accepting jobs from jobs
    DRAINING = "draining"  # shutdown(wait=True): no new jobs; running and queued ones finish
    CANCELLING = "cancelling"  # fail-fast, shutdown(wait=False), deadline, body error, outer cancel
    CLOSED = "closed"  # every job finished; terminal
    BROKEN = "broken"  # the initializer failed: no job ran; shutdown() closes it
