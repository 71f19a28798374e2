"""The loop's first task, which runs everything else on it (``_LoopRun.main``), and the
loop's end. Loop thread only: LoopThread._run calls these.

A ``loop_factory`` may give its loop a task factory (``loop.set_task_factory``), which
makes that task too. A factory that raises, or that makes no task (None, a plain
Future, nothing that will ever run the coroutine it was given), breaks the executor:
see cannot_run. One that fails only later, for jobs, fails those jobs (see
Scheduler.start); it never decides whether the loop closes: see close_loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from .._errors import not_a_task
from ._handoff import HandOff
from ._lifecycle import LOOP_FAILED
from ._runner import Runner

__all__ = ["cannot_run", "close_loop", "first_task"]

_Task = asyncio.Task


def first_task(
    loop: asyncio.AbstractEventLoop, main: Coroutine[Any, Any, None]
) -> asyncio.Task[None]:
    """``loop.create_task(main)``, checked: raises what the loop's task factory raised, or
    TypeError if it made no task (see not_a_task).

    Python 3.11 and 3.12 hand back whatever the factory returns, and the loop would wait
    for ever for a Future that nothing resolves (3.13's create_task raises an
    AttributeError for most of those itself). Made by the loop's create_task, not by a
    call of the factory: uvloop's passes arguments of its own (``eager_start``), which
    a factory may refuse.
    """
    task: object = loop.create_task(main)
    if type(task) is not _Task and not isinstance(task, _Task):
        raise not_a_task(task)
    return task


def cannot_run(handoff: HandOff, main: Coroutine[Any, Any, None], error: BaseException) -> None:
    """The loop could not start ``main``: the executor is broken, as by its initializer.

    Reached when the loop's task factory raises (uvloop 0.23's loop on 3.13 with
    ``asyncio.eager_task_factory``: "unexpected keyword argument 'eager_start'") or makes
    no task of ``main`` (first_task), whether or not it closed ``main`` first. No job has
    run on the loop; blocking jobs already given to a worker thread run, and those
    awaiting the loop fail with the jobs waiting for it.
    """
    main.close()  # never started: closed, or "coroutine ... was never awaited"
    handoff.fail_backlog(error, LOOP_FAILED)


def close_loop(runner: Runner, loop: asyncio.AbstractEventLoop) -> None:
    """Close the loop as ``Runner.close()`` does, without its task factory.

    ``Runner.close()`` makes tasks of its own, to close the async generators and the
    default executor. Through a factory that fails for them (one that failed for the
    first task, or that fails for every task after the first) it raised out of the loop
    thread, into ``threading.excepthook``, with its own coroutine never awaited, the
    default executor's threads left running and the loop left open. Every job has
    ended by now; only tasks the jobs started and left behind may still run their
    clean-up, in plain asyncio Tasks too.
    """
    if not loop.is_closed():
        loop.set_task_factory(None)
    runner.close()
