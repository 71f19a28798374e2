"""The async inputs of a map for which no reading task could be made (the loop's task
factory refused it), in the cases tests/test_map_input_refused.py leaves: a refusal by
KeyboardInterrupt or SystemExit, a consumer cancelled while its task closes the inputs,
and a map closed with no block whose exit would close them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from coroexecutor import CoroutineExecutor
from tests._factories import task_factory
from tests.conftest import new_loop


async def ident(n: int) -> int:
    return n


class RefusingFactory:
    """A task factory that raises ``error`` for every task while ``on``."""

    def __init__(self, error: BaseException) -> None:
        self.on = False
        self.error = error

    def __call__(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        if not self.on:
            return asyncio.Task(coro, loop=loop, **kwargs)
        coro.close()
        raise self.error


@contextlib.contextmanager
def reports() -> Iterator[list[dict[str, Any]]]:
    """What reaches the loop's exception handler meanwhile."""
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


class Input:
    """An async generator input, begun (at its first yield), whose clean-up awaits; it
    records the task that closed it and sets ``closed``. With ``gate``, its clean-up
    first sets ``closing`` and waits for the gate."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.closed_in: list[object] = []
        self.closing = asyncio.Event()
        self.closed = asyncio.Event()
        self.gate = gate

    async def items(self) -> AsyncIterator[int]:
        try:
            for i in range(10):
                yield i
        finally:
            self.closing.set()
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)  # a clean-up that awaits
            self.closed_in.append(asyncio.current_task())
            self.closed.set()

    async def begun(self) -> AsyncIterator[int]:
        source = self.items()
        assert await source.__anext__() == 0
        return source


#
# 1. Refused by KeyboardInterrupt or SystemExit: closed all the same, then it propagates
#


INTERRUPTS = [KeyboardInterrupt("no task"), SystemExit("no task")]


@pytest.mark.parametrize("error", INTERRUPTS, ids=["KeyboardInterrupt", "SystemExit"])
@pytest.mark.parametrize("how", ["async_for", "aclose"])
async def test_an_interrupt_refusing_the_reader_propagates_after_the_inputs_are_closed(
    how: str, error: BaseException
) -> None:
    """Regression (left 1): the map's first read, and its aclose() before it, let the
    interrupt out at once, the input left open (its ``finally`` ran only in asyncio's
    finaliser, if ever). Now the calling task closes the inputs first, as for any other
    refusal, then the interrupt propagates, unchanged."""
    factory = RefusingFactory(error)
    source = Input()
    inputs = await source.begun()
    with task_factory(factory), pytest.raises(type(error)) as info:
        async with CoroutineExecutor(max_workers=2) as exe:
            results = exe.map(ident, inputs)
            factory.on = True
            try:
                if how == "async_for":
                    await results.__anext__()
                else:
                    await results.aclose()
            finally:
                factory.on = False
                # Closed before the call returned, in its task.
                assert source.closed_in == [asyncio.current_task()]
    assert info.value is error
    assert inputs.ag_frame is None


@pytest.mark.parametrize("error", INTERRUPTS, ids=["KeyboardInterrupt", "SystemExit"])
@pytest.mark.parametrize("ending", ["block_exit", "shutdown", "dropped"])
async def test_an_interrupt_refusing_a_closed_maps_reader_propagates_from_the_exit(
    ending: str, error: BaseException
) -> None:
    """Regression (left 1): a map closed by the block's exit, shutdown() or its drop, the
    factory refusing the reader by an interrupt: it came out of that close at once (the
    exit then skipped its wait for the jobs; a dropped map's was printed as "Exception
    ignored" and lost), the input left open. Now the exit or shutdown() closes the
    input in its task, as for any refusal, then raises the interrupt."""
    factory = RefusingFactory(error)
    source = Input()
    inputs = await source.begun()
    with task_factory(factory), reports() as seen, pytest.raises(type(error)) as info:
        async with CoroutineExecutor(max_workers=2) as exe:
            results = exe.map(ident, inputs)
            factory.on = True
            try:
                if ending == "shutdown":
                    await exe.shutdown()
                elif ending == "dropped":
                    del results
                    gc.collect()
            finally:
                if ending != "block_exit":
                    factory.on = False
        factory.on = False  # (the block's exit refused its reader too)
    assert info.value is error
    assert source.closed_in == [asyncio.current_task()]
    assert inputs.ag_frame is None
    assert seen == []  # raised: not reported


#
# 2. Cancelled while its task closes the inputs: the factory's error is reported
#


@pytest.mark.parametrize("how", ["async_for", "aclose"])
async def test_a_consumer_cancelled_while_closing_the_inputs_reports_the_refusal(
    how: str,
) -> None:
    """Regression (left 2): the consumer's task, closing the inputs after the refusal,
    cancelled meanwhile (an outer timeout) raised CancelledError, and the factory's error
    went nowhere. The cancel still propagates; the error, which nobody else receives, goes
    to the loop's exception handler, as the block's exit reports a refusal nobody raised."""
    factory = RefusingFactory(RuntimeError("no task"))
    gate = asyncio.Event()
    source = Input(gate)
    inputs = await source.begun()
    with task_factory(factory), reports() as seen:
        async with CoroutineExecutor(max_workers=2) as exe:
            results = exe.map(ident, inputs)
            if how == "async_for":
                consumer = asyncio.ensure_future(results.__anext__())
            else:
                consumer = asyncio.ensure_future(results.aclose())
            factory.on = True  # for the reader the consumer asks for in its first step
            try:
                await source.closing.wait()  # the consumer closes the input, in its task
            finally:
                factory.on = False
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
            gate.set()
    assert [context["exception"] for context in seen] == [factory.error]
    assert seen[0]["message"].startswith("an error occurred during closing of")


async def test_an_input_error_a_cancel_cuts_off_while_the_inputs_close_is_reported() -> None:
    """The same at the root, in the map's reader task: an input raised, and the map was
    closed (its consumer cancelled) while the reader closed the other input, whose
    clean-up the cancel interrupted. The reader ended cancelled and the input's error,
    which nobody receives any more, was lost; now it goes to the loop's exception
    handler, as an error an input raises as the map's close cancels its read."""
    gate = asyncio.Event()
    source = Input(gate)
    inputs = await source.begun()
    error = ValueError("input failed")

    async def failing() -> AsyncIterator[int]:
        raise error
        yield 0  # an async generator

    with reports() as seen:
        async with CoroutineExecutor(max_workers=2) as exe:
            results = exe.map(lambda a, b: ident(a), inputs, failing())
            consumer = asyncio.ensure_future(results.__anext__())
            await source.closing.wait()  # the reader closes the input after the error
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
            await results.aclose()  # waits for the reader
    assert inputs.ag_frame is None
    assert [context["exception"] for context in seen] == [error]


#
# 3. No block: closing the map closes its inputs, without shutdown()
#


@pytest.mark.parametrize("ending", ["dropped", "shutdown_nowait"])
async def test_a_map_closed_with_no_block_has_its_inputs_closed_without_shutdown(
    ending: str,
) -> None:
    """Regression (left 3): with no block whose exit would close them, the inputs of a map
    closed as the factory refused the reader were kept (in the executor) until an
    ``await shutdown()`` that may never come, and the factory's error was never
    reported. Now a closing task is asked for again a turn later, as asyncio's own
    finaliser of a dropped async generator asks for one: it closes them, and the error
    goes to the loop's exception handler."""
    factory = RefusingFactory(RuntimeError("no task"))
    source = Input()
    inputs = await source.begun()
    with task_factory(factory), reports() as seen:
        exe = CoroutineExecutor(max_workers=2)
        results = exe.map(ident, inputs)
        factory.on = True
        try:
            if ending == "dropped":
                del results
                gc.collect()
            else:
                await exe.shutdown(wait=False)
        finally:
            factory.on = False
        await source.closed.wait()
    assert inputs.ag_frame is None
    assert [context["exception"] for context in seen] == [factory.error]
    if ending == "dropped":
        await exe.shutdown()


@pytest.mark.parametrize(
    "kept",
    [
        False,
        pytest.param(True, marks=pytest.mark.skipif(
            sys.version_info >= (3, 12),
            reason="3.12+: the refused coroutine, which the factory's frame in the"
            " error's traceback holds, keeps its arguments (the inputs) though closed",
        )),
    ],
    ids=["reports_dropped", "reports_kept"],
)
async def test_inputs_no_task_can_close_are_let_go_to_asyncios_own_clean_up(
    kept: bool,
) -> None:
    """The factory refuses the closing task asked for a turn later too: nothing of the
    executor's can close the inputs, so it keeps them no longer (they would wait for a
    shutdown() that may never come): they go to asyncio's own clean-up of an async
    generator dropped unclosed (its finaliser, here, whose task the factory lets be),
    and both refusals are reported. ``kept``: the handler keeps the reported errors,
    whose tracebacks keep the frames they passed through: those no longer hold the
    inputs (they did, in start_reader and _stop_reading, before)."""
    refused: list[str] = []
    source = Input()
    inputs = await source.begun()

    def twice(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        if len(refused) == 2:
            return asyncio.Task(coro, loop=loop, **kwargs)
        refused.append(coro.__qualname__)
        coro.close()
        # A new error each time, kept by nobody: its traceback holds the refused
        # coroutine, which on Python 3.13 still holds its arguments, the inputs.
        raise RuntimeError("no task")

    seen: list[str] = []
    errors: list[BaseException] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        seen.append(repr(context["exception"]))
        if kept:
            errors.append(context["exception"])

    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(handler)
    try:
        with task_factory(twice):
            exe = CoroutineExecutor(max_workers=2)
            results = exe.map(ident, inputs)
            del inputs  # the map's alone
            del results  # dropped: its reader refused now, then a turn later
            gc.collect()
            await source.closed.wait()  # let go, then closed by asyncio's finaliser's task
            assert source.closed_in != [asyncio.current_task()]
    finally:
        loop.set_exception_handler(previous)
    assert refused == ["read_inputs", "read_inputs"]
    assert seen == ["RuntimeError('no task')"] * 2
    await exe.shutdown()


async def test_an_interrupt_from_the_exits_close_of_the_inputs_stops_the_executor() -> None:
    """The interrupt comes out of the block's exit after it closed the inputs, in which a
    job was started (the input's clean-up submits one): that job is cancelled as the
    interrupt goes, as when a job raises KeyboardInterrupt (the executor stops, no
    queued job starts), not left running past the block."""
    factory = RefusingFactory(KeyboardInterrupt("no task"))
    started = asyncio.Event()
    jobs: list[asyncio.Future[None]] = []

    async def parked() -> None:
        started.set()
        await asyncio.Event().wait()

    async def items() -> AsyncIterator[int]:
        try:
            yield 0
            yield 1
        finally:
            factory.on = False
            jobs.append(await exe.submit(parked))
            await started.wait()

    inputs = items()
    assert await inputs.__anext__() == 0
    with task_factory(factory), pytest.raises(KeyboardInterrupt):
        async with CoroutineExecutor(max_workers=2) as exe:
            results = exe.map(ident, inputs)
            factory.on = True  # the exit closes the map: its reader is refused
    del results
    [job] = jobs
    if not job.done():
        await asyncio.wait([job])
    assert job.cancelled()


class DroppedWithNoBlock:
    """A map of one begun async generator input, dropped unclosed with no block, on a
    loop of its own (an interrupt comes out of it, as from ``asyncio.run()``): the loop's
    task factory refuses the map's reader with ``refusals``, one a time, then makes it.
    ``run()`` returns what came out of the loop; ``closed_in`` is the task the input
    was closed in, as it came out (None: not closed), ``reports`` what the loop's
    exception handler got. The input is kept open here (not dropped with the map), so
    what nobody closes is closed by the loop's ``shutdown_asyncgens()``."""

    def __init__(self, loop_kind: str, refusals: list[BaseException], *, awaits: bool) -> None:
        self.loop = new_loop(loop_kind)
        self.refusals = refusals
        self.awaits = awaits  # does the input's clean-up await (else it ends at once)?
        self.closed_in: object = None
        self.closed_as_it_came_out: object = None
        self.reports: list[dict[str, Any]] = []
        self.inputs: AsyncIterator[int] | None = None
        self.main_task: object = None
        self.previous: Callable[..., Any] | None = None

    async def items(self) -> AsyncIterator[int]:
        try:
            for i in range(10):
                yield i
        finally:
            if self.awaits:
                await asyncio.sleep(0)
            self.closed_in = asyncio.current_task()

    def factory(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        if self.refusals and coro.__qualname__ == "read_inputs":
            coro.close()
            raise self.refusals.pop(0)
        if self.previous is not None:  # (the eager task factory of loop_kind)
            return self.previous(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def main(self) -> None:
        self.loop.set_exception_handler(lambda _, context: self.reports.append(context))
        self.inputs = inputs = self.items()
        assert await inputs.__anext__() == 0
        exe = CoroutineExecutor(max_workers=2)
        results = exe.map(ident, inputs)
        self.previous = self.loop.get_task_factory()
        self.loop.set_task_factory(self.factory)
        del results  # dropped unclosed: its reader is refused now
        gc.collect()
        self.main_task = asyncio.current_task()
        for _ in range(100):  # (the interrupt comes out a few turns later)
            await asyncio.sleep(0)

    def run(self) -> BaseException | None:
        loop = self.loop
        loop.set_debug(True)
        loop.slow_callback_duration = 10.0  # noisy shared cores: do not log slow callbacks
        try:
            try:
                loop.run_until_complete(self.main())
            except (KeyboardInterrupt, SystemExit) as exc:
                return exc
            finally:
                self.closed_as_it_came_out = self.closed_in
                left = asyncio.all_tasks(loop)
                for task in left:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
        return None


@pytest.mark.parametrize("awaits", [True, False], ids=["awaiting_clean_up", "clean_up_at_once"])
@pytest.mark.parametrize("error", INTERRUPTS, ids=["KeyboardInterrupt", "SystemExit"])
def test_an_interrupt_refusing_a_dropped_maps_reader_once_comes_out_after_its_inputs_close(
    loop_kind: str, error: BaseException, awaits: bool
) -> None:
    """Regression (brk17 F3): with no block, the reader of a dropped map refused by an
    interrupt was asked for again a turn later and made, but the interrupt came out of
    the loop at once, before that reader's first step: asyncio.run()'s end then
    cancelled it, so it closed nothing (the input's ``aclose()`` never called, though
    the factory now gave a task). Now the interrupt comes out once the reader has closed
    the inputs, and is not reported."""
    dropped = DroppedWithNoBlock(loop_kind, [error], awaits=awaits)
    assert dropped.run() is error
    assert dropped.closed_as_it_came_out is not None  # closed before it came out
    assert dropped.closed_as_it_came_out is not dropped.main_task  # in the reader task
    assert dropped.reports == []
    error.__traceback__ = None  # (frames)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (KeyboardInterrupt("refused"), KeyboardInterrupt("refused again")),
        (SystemExit("refused"), KeyboardInterrupt("refused again")),
    ],
    ids=["KeyboardInterrupt_twice", "SystemExit_then_KeyboardInterrupt"],
)
def test_an_interrupt_refusing_a_dropped_maps_reader_every_time_is_raised_not_reported(
    loop_kind: str, first: BaseException, second: BaseException
) -> None:
    """Regression (brk17 F3): the factory refusing the reader by an interrupt, then the
    one asked for a turn later by another: the first went to the loop's exception
    handler in place of being raised. Now neither is reported: the second comes out of
    the loop, with the first as its ``__context__`` (raised while it was handled), and
    the inputs, which nothing of ours can close, are let go to asyncio's own clean-up
    (here the loop's ``shutdown_asyncgens()``)."""
    dropped = DroppedWithNoBlock(loop_kind, [first, second], awaits=True)
    assert dropped.run() is second
    assert second.__context__ is first
    assert dropped.reports == []
    assert dropped.closed_as_it_came_out is None  # let go ...
    assert dropped.closed_in is not None  # ... and closed by shutdown_asyncgens()
    second.__context__ = second.__traceback__ = first.__traceback__ = None  # (frames)
