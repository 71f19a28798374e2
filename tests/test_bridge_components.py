"""The bridge's lock-free components on their own: Slots, Mailbox and ShutdownRequest.

Each is used under HandOff's lock by the executor; here they are driven directly, one
thread, to pin the vocabulary the HandOff relies on."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from coroexecutor.sync_bridge._future import BridgeFuture
from coroexecutor.sync_bridge._job import Job
from coroexecutor.sync_bridge._mailbox import Mailbox
from coroexecutor.sync_bridge._options import ShutdownRequest
from coroexecutor.sync_bridge._slots import Slots


class _Owner:
    """The least a BridgeFuture needs of its owner (FutureOwner); records cancellations."""

    owner_repr = "<test owner>"

    def __init__(self) -> None:
        self.cancelled: list[BridgeFuture[Any]] = []

    def cancel_job_threadsafe(self, future: BridgeFuture[Any]) -> None:
        self.cancelled.append(future)

    def is_loop_thread(self) -> bool:
        return False

    def is_worker_thread(self) -> bool:
        return False


def _job(owner: _Owner) -> Job:
    return Job(BridgeFuture(owner), print, (), {}, contextvars.copy_context(), False)


def test_slots_grant_nothing_until_opened_then_in_fifo_order() -> None:
    owner, slots = _Owner(), Slots(max_workers=1)
    assert not slots.take_nowait()  # paused: the initializer has not run yet
    first, second = _job(owner), _job(owner)
    slots.queue(first)
    slots.queue(second)
    assert slots.next_job() is None
    slots.paused = False
    assert slots.next_job() is first
    assert slots.next_job() is None  # the only slot is held
    assert not slots.take_nowait()
    slots.release(first.future)
    assert slots.next_job() is second
    assert slots.held == 1


def test_slots_take_nowait_refuses_while_jobs_wait() -> None:
    owner, slots = _Owner(), Slots(max_workers=2)
    slots.paused = False
    assert slots.take_nowait()
    slots.queue(_job(owner))  # as after a resize down: a job waits although one is free
    assert not slots.take_nowait()  # FIFO: the waiting job goes first
    assert slots.next_job() is not None
    assert slots.held == 2


def test_slots_count_a_job_cancelled_in_the_backlog_once() -> None:
    owner, slots = _Owner(), Slots(max_workers=1)
    slots.paused = False
    assert slots.take_nowait()
    waiting = _job(owner)
    slots.queue(waiting)
    assert waiting.future.cancel()
    assert owner.cancelled == [waiting.future]
    assert slots.withdraw(waiting.future)  # what HandOff.cancel_job_threadsafe does
    assert not slots.withdraw(waiting.future)
    slots.release(_job(owner).future)  # the running job's slot comes back
    assert slots.next_job() is None  # the cancelled job is skipped, not started
    assert slots.cancelled == 1


def test_slots_take_unstarted_empties_the_backlog_and_counts_it() -> None:
    owner, slots = _Owner(), Slots(max_workers=1)
    jobs = [_job(owner) for _ in range(3)]
    for job in jobs:
        slots.queue(job)
    unstarted: list[BridgeFuture[Any]] = []
    slots.take_unstarted(unstarted)
    assert unstarted == [job.future for job in jobs]
    assert not slots.backlog
    assert slots.cancelled == 3


def test_shutdown_request_joined_only_adds_cancellation() -> None:
    plain = ShutdownRequest(grace=2.0)
    cancel_all = ShutdownRequest(cancel_queued=True, cancel_running=True)
    joined = plain.joined(cancel_all)
    assert (joined.cancel_queued, joined.cancel_running, joined.grace) == (True, True, 2.0)
    assert cancel_all.joined(ShutdownRequest()) == cancel_all
    running_only = ShutdownRequest().joined(ShutdownRequest(cancel_running=True))
    assert running_only.cancel_queued  # cancelling running jobs cancels queued ones too


def test_mailbox_wakes_the_loop_once_per_batch() -> None:
    owner, mailbox = _Owner(), Mailbox()
    drained: list[int] = []
    loop = asyncio.new_event_loop()
    try:
        mailbox.start(_job(owner))  # before open(): kept, and no wake-up
        mailbox.open(loop, lambda: drained.append(len(mailbox.take().to_start)))
        assert mailbox.draining
        for _ in range(3):
            mailbox.start(_job(owner))  # the first drain is on its way: no new wake-up
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert drained == [4]
        mailbox.call(lambda: None)
        loop.call_soon(loop.stop)
        loop.run_forever()
        assert drained == [4, 0]  # a later batch wakes the loop again
        mailbox.stop_draining()
        mailbox.start(_job(owner))  # kept for close(), which hands back its future
        assert len(mailbox.close()) == 1
    finally:
        loop.close()


def test_mailbox_take_without_posts_is_an_empty_batch() -> None:
    batch = Mailbox().take()
    assert (batch.to_start, batch.calls, batch.done_items, batch.tails) == ([], (), (), ())
    assert batch.shutdown is None


def test_slots_pause_frees_the_slot_and_resume_goes_ahead_of_unstarted_jobs() -> None:
    owner, slots = _Owner(), Slots(max_workers=1)
    slots.paused = False
    retried, later_retry, unstarted = _job(owner), _job(owner), _job(owner)
    assert slots.take_nowait()
    retried.future._attempts = later_retry.future._attempts = object()  # failed once
    assert slots.pause(retried.future, core_failed=False)  # its attempt failed: no slot
    assert slots.held == 0 and slots.busy and slots.retried == 1
    assert slots.take_nowait()  # another job runs in the slot during the pause
    slots.queue(unstarted)
    slots.pausing.add(later_retry.future)
    assert not slots.resume(retried)  # no free slot: it waits, ahead of `unstarted`
    assert not slots.resume(later_retry)  # behind the earlier retry
    assert list(slots.backlog) == [retried, later_retry, unstarted]
    slots.release(unstarted.future)
    assert slots.next_job() is retried


def test_slots_withdraw_pausing_counts_a_cancelled_pause_once() -> None:
    owner, slots = _Owner(), Slots(max_workers=1)
    slots.paused = False
    job = _job(owner)
    assert slots.take_nowait()
    assert slots.pause(job.future, core_failed=None)
    assert slots.withdraw_pausing(job.future) and not slots.withdraw_pausing(job.future)
    assert not slots.resume(job)  # the timer fired after the cancel: dropped
    assert slots.cancelled == 1 and not slots.busy
