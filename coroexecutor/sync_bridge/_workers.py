"""WorkerPool: the threads a ThreadedLoopExecutor runs blocking callables in."""

from __future__ import annotations

import collections
import inspect
import queue
import threading
import time
from typing import Callable, Optional, Union

from .._notes import annotate_job_error
from .._retry import INHERIT
from ._work_item import Failed, FailedInWorker, Finished, Release, WorkItem

# The items and outcomes live in _work_item; named here too, as the pool's vocabulary.
__all__ = ["Failed", "FailedInWorker", "Finished", "WorkItem", "WorkerPool"]


class _First:
    """In the queue, says: a retried attempt waits in the pool's first lane."""


_FIRST = _First()


def _back_to_queue(idle: collections.deque[None], unserved: collections.deque[None]) -> None:
    """A worker is about to wait in the queue's get(): it takes a job queued with no
    worker woken for it (``unserved``) if there is one, else it is idle (see WorkerPool)."""
    if unserved:  # (looked at first: raising IndexError would cost every job)
        try:
            unserved.pop()
        except IndexError:  # another worker took it
            pass
        else:
            return
    idle.append(None)  # no job waits unserved: one more idle worker


def _work(
    jobs: queue.SimpleQueue[Union[WorkItem, _First, None]],
    first: collections.deque[WorkItem],
    idle: collections.deque[None],
    unserved: collections.deque[None],
    release: Release,
    post_done: Callable[[WorkItem], None],
    retry: object,
) -> None:
    """Worker thread body. Holds no reference to the executor, only to its queues.
    ``first``: retried attempts, taken before the job the queue gave (which waits in
    ``held``). ``idle`` and ``unserved``: see WorkerPool. ``retry``: the executor's retry
    policy (None: none)."""
    got = jobs.get()
    held: Optional[WorkItem] = None
    while got is not None:
        if first:  # a retried attempt goes ahead of every job waiting for a thread
            try:
                urgent = first.popleft()
            except IndexError:  # another worker took it
                pass
            else:
                if isinstance(got, WorkItem):
                    held = got
                got = urgent
                del urgent  # as got, below
        if isinstance(got, _First):  # its attempt was taken by another worker
            _back_to_queue(idle, unserved)
            got = jobs.get() if held is None else held
            held = None
            continue
        # (got is dropped at once: kept while this worker waits for its next job, it
        # would keep the last job's future, result and all, alive.)
        item, got = got, None
        future = item.future
        if future._start_running():
            try:
                result = item.ctx.run(item.fn, *item.args, **item.kwargs)
            except BaseException as exc:
                policy = future._retry_policy
                if policy is INHERIT:
                    policy = retry
                if policy is not None and isinstance(exc, Exception):
                    # The loop asks the policy, and resolves the future or retries the job.
                    item.outcome = Failed(exc)
                else:
                    # KeyboardInterrupt and SystemExit too: they fail this job only (DESIGN).
                    if future._annotate:
                        annotate_job_error(
                            exc, item.fn, item.args, item.kwargs, map_index=future._map_index
                        )
                    if item.waiter is None:
                        future.set_exception(exc)
                    else:
                        item.outcome = Finished(None, exc)
                del exc  # break the frame <-> traceback cycle
            else:
                if inspect.isawaitable(result):
                    item.returned(result)  # for the loop; cancellable from now on
                elif item.waiter is None:
                    future.set_result(result)
                else:
                    item.outcome = Finished(result, None)
                del result
        # Post skipped items too (cancelled or withdrawn meanwhile): their slot is freed
        # there, and nobody depends on who noticed the cancellation first.
        if item.waiter is not None:
            del future
            post_done(item)
            following = None
        else:
            if item.outcome is None and future._attempts is not None:
                future._attempts.drop()  # the retried job is over: see _retries
            del future
            following = release(item)
        if following is not None:
            if held is None and not first and jobs.empty():
                got = following  # the freed slot's next job: run it here, no queue hop
                continue
            # Older jobs wait for a thread: stay behind them (FIFO). No idle token:
            # this worker goes straight back to get() for one of them.
            jobs.put(following)
        elif held is None:
            _back_to_queue(idle, unserved)
        del item, following
        if held is not None:  # taken from the queue before a retried attempt
            got, held = held, None
        else:
            got = jobs.get()


def _join(thread: threading.Thread) -> None:
    """Join a worker. One whose start() a KeyboardInterrupt cut short may not have begun
    yet (join() raises RuntimeError until it has), or never will: give it a second."""
    for _ in range(100):
        try:
            thread.join()
            return
        except RuntimeError:  # "cannot join thread before it is started"
            time.sleep(0.01)


class WorkerPool:
    """Threads started on demand, at most ``cap`` of them, reused while they live.

    Threading model: ``submit`` may be called from any thread (a direct blocking job is
    dispatched by whichever thread frees or finds its slot); ``cap`` is written under the
    owner's lock; ``stop`` runs on the loop thread once every job is done.
    """

    def __init__(
        self,
        name_prefix: str,
        cap: int,
        release: Release,
        post_done: Callable[[WorkItem], None],
        retry: object = None,
    ) -> None:
        self._name_prefix = name_prefix
        self._retry = retry  # the executor's retry policy, for the workers
        self.cap = cap  # shrinking stops no thread, it only starts none
        # The owner's max_workers. With more slots than threads (max_workers=None), a
        # job holding a slot may still wait for a thread, as on a ThreadPoolExecutor.
        self.slots = cap
        self._release = release
        self._post_done = post_done
        self._jobs: queue.SimpleQueue[Union[WorkItem, _First, None]] = queue.SimpleQueue()
        # Queues a new job (then call wake_worker). The queue's own method, a C one, not one
        # written here: a KeyboardInterrupt (Ctrl-C) is raised after a C call, not before
        # it, so none comes between the caller's last step and the put. HandOff relies on
        # it: the job it has just set up is either queued or not, never half-way.
        self.put_new: Callable[[WorkItem], None] = self._jobs.put
        # Retried attempts, taken before the queue (each has a _FIRST in it to wake a
        # worker): a retry goes ahead of the jobs that wait for a thread (see _retries).
        self._first: collections.deque[WorkItem] = collections.deque()
        # One token per worker waiting for a job. Not a threading.Semaphore: a
        # KeyboardInterrupt in its acquire() can leave its Condition's lock held (it is
        # raised after the lock's __enter__, a C call), and every worker then hangs in
        # release(). A deque's append and pop are single C calls.
        self._idle: collections.deque[None] = collections.deque()
        # One token per queued job that found no idle worker and no thread to start (the
        # cap reached): the next worker back at the queue takes it instead of an idle
        # token. Without it, that worker's idle token outlived its wait, and the tokens
        # piled up (one per job that waited for a thread): once max_workers grew, a new
        # job took a stale one for an idle worker and started no thread. So idle counts
        # the workers waiting with no job queued for them, and unserved the jobs queued
        # with no worker coming: both are non-empty only for a moment, when a worker and
        # a submitter cross (resize cancels such pairs).
        self._unserved: collections.deque[None] = collections.deque()
        self._lock = threading.Lock()  # guards _threads, _stopped and unserved's appends
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self.started = False  # a thread has been started: read without the lock

    def submit(self, item: WorkItem) -> None:
        attempts = item.future._attempts
        if attempts is not None and attempts.attempt > 1:
            self._first.append(item)
            self._jobs.put(_FIRST)
        else:
            self._jobs.put(item)
        self.wake_worker(item)

    def wake_worker(self, item: WorkItem) -> None:
        """See that a worker takes ``item``, queued by ``put_new`` (or ``submit``): an idle
        one, or a new one. Calling it twice for one item costs at most a thread more."""
        try:
            self._idle.pop()
        except IndexError:  # no worker is idle
            pass
        else:
            return  # an idle worker takes it
        # The lock on one line: see _accept.
        with self._lock: error = self._start_for_locked(item)  # noqa: E701
        if error is not None:
            self._fail_queued(error)

    def _start_for_locked(self, item: WorkItem) -> Optional[RuntimeError]:
        """No worker is idle: start one for ``item`` if the cap allows; the error if none
        can start while none exists (its jobs must fail rather than wait)."""
        count = len(self._threads)
        if count >= self.cap:
            # A busy worker takes it when it is done. With as many threads as slots
            # that is only a worker between its last job and its next get(), which
            # the job's free slot proves is coming; with fewer threads than slots,
            # the job waits for a thread: shutdown(cancel_futures=True) cancels it.
            if count < self.slots:
                item.future._queued = True
            self._unserved.append(None)
            return None
        if self._stopped:
            # The item has been run already. Otherwise:
            #   submitting thread                      other threads
            #   puts the item
            #                                          a worker runs it; the last job
            #                                          is done; stop() takes _threads
            #   starts a thread stop() never joins     (nor sends a None to: a
            #                                          worker then waits forever)
            return None
        try:
            self._start_thread_locked(count)
        except RuntimeError as exc:
            # "can't create new thread at interpreter shutdown" (Python 3.12 only),
            # for a job submitted during exit: ensure_thread() starts a worker for
            # every job accepted before.
            if not count:
                return exc
            self._unserved.append(None)  # a busy worker takes it later
        return None

    def ensure_thread(self) -> None:
        """Start an idle worker now unless one exists (or the pool has been stopped).

        Python 3.12 starts no thread once the interpreter is exiting, not even from a
        ``threading._register_atexit`` hook; a job accepted before that runs there on
        this worker (on any busy one, in turn), rather than failing.
        """
        with self._lock: started = self._ensure_thread_locked()  # noqa: E701 (see _accept)
        if started:
            _back_to_queue(self._idle, self._unserved)  # it waits in get() with no job

    def _ensure_thread_locked(self) -> bool:
        if self._threads or self._stopped or self.cap < 1:
            return False
        try:
            self._start_thread_locked(0)
        except RuntimeError:
            return False  # exiting already: submit() fails the job with the reason
        return True

    def _start_thread_locked(self, count: int) -> None:
        thread = threading.Thread(
            name=f"{self._name_prefix}_worker_{count}",
            target=_work,
            args=(
                self._jobs, self._first, self._idle, self._unserved, self._release,
                self._post_done, self._retry,
            ),
        )
        # Listed before start(): start() waits for the new thread to begin, and a
        # KeyboardInterrupt there leaves it running; stop() must still reach it.
        self._threads.append(thread)
        try:
            thread.start()
        except RuntimeError:  # no thread began ("can't create new thread ...")
            self._threads.remove(thread)
            raise
        self.started = True

    def resize(self, cap: int, slots: int) -> None:
        """The owner's ``max_workers`` changed (the owner's lock held): the new cap on
        threads and number of slots. Growing starts a thread at once for each queued job
        that waits for one, up to the new cap."""
        with self._lock: self._resize_locked(cap, slots)  # noqa: E701 (see _accept)

    def _resize_locked(self, cap: int, slots: int) -> None:
        self.cap, self.slots = cap, slots
        unserved, idle = self._unserved, self._idle
        while unserved and idle:  # a pair left by a worker and a submitter that crossed
            try:
                unserved.pop()
            except IndexError:  # a worker back at the queue took it
                break
            try:
                idle.pop()
            except IndexError:  # a submitter took it: the job stays unserved
                unserved.append(None)
                break
        while unserved and len(self._threads) < cap and not self._stopped:
            try:
                unserved.pop()
            except IndexError:  # a worker back at the queue took it
                break
            try:
                self._start_thread_locked(len(self._threads))
            except RuntimeError:  # exiting: a busy worker takes the job later
                unserved.append(None)
                break

    def _fail_queued(self, error: RuntimeError) -> None:
        """No worker exists and none can start: fail the queued jobs rather than hang."""
        while True:
            try:
                got = self._jobs.get_nowait()
            except queue.Empty:
                return
            item = self._first.popleft() if isinstance(got, _First) else got
            while item is not None:
                failure = RuntimeError(f"cannot start a worker thread for a blocking job: {error}")
                failure.__cause__ = error
                item.future._try_set_exception(failure)
                if item.waiter is not None:
                    self._post_done(item)
                    break
                if item.future._attempts is not None:  # as in _work
                    item.future._attempts.drop()
                item = self._release(item)  # its successor needs a thread too

    def runs_current_thread(self) -> bool:
        """Whether the calling thread is one of this pool's live workers."""
        # By Thread object, not ident: a worker that has ended may leave its ident to a
        # new thread, which must not be taken for one of ours.
        current = threading.current_thread()
        with self._lock: return any(thread is current for thread in self._threads)  # noqa: E701

    def stop(self) -> None:
        """Stop every worker once the jobs queued before this call are done; join them."""
        with self._lock: threads = self._stop_locked()  # noqa: E701 (see _accept)
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            _join(thread)

    def _stop_locked(self) -> list[threading.Thread]:
        self._stopped = True
        threads, self._threads = self._threads, []
        return threads

    def forget_threads(self) -> None:
        """In a forked child: the parent's workers do not exist here, and none may start."""
        self._lock = threading.Lock()
        self._threads = []
        self._stopped = True
