"""KeyCounts: the numbers a KeyedLine keeps for each active key: how many of its jobs run,
how many wait (keys bucketed by that count, so the busiest key is found in O(1)), and its
``max_per_key``, kept from the key's activation until it idles. Apart: the waiters a
shrink of the limit sent back to the plain line, which keep their key's room but wait.

The base of :class:`~coroexecutor._keyed.KeyedLine`, not a component it holds: the line
reads these on the executor's keyed fast path (``try_start``, ``release``) and counts a
waiting job at each push, pop and discard, where a component would cost an attribute
read per job. It calls nothing of its subclass; the line changes the maps itself.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Optional

from ._key_limits import MaxPerKey, check_limit, check_max_per_key, unhashable

__all__ = ["KeyCounts"]


class KeyCounts:
    """Per-key running counts, waiting counts by bucket, and limits, of active keys."""

    __slots__ = (
        "_at_hand", "_by_waiting", "_limit_of", "_limits", "_per_key", "_running", "_sent_back",
        "_top",
    )

    def __init__(self, max_per_key: MaxPerKey) -> None:
        max_per_key = check_max_per_key(max_per_key)
        self._per_key = max_per_key if isinstance(max_per_key, int) else 0
        self._limit_of = None if isinstance(max_per_key, int) else max_per_key
        # The maps hold active keys only; each entry goes when its key idles.
        self._running: dict[Hashable, int] = {}  # keys with jobs running: how many
        self._limits: dict[Hashable, int] = {}  # each active key's max_per_key(key)
        self._at_hand: Optional[tuple[Hashable, int]] = None  # see prepare()
        # Keys by how many of their jobs wait: the longest line in O(1). Counts move by
        # one at a time, so when the top bucket empties the next one down is not empty.
        self._by_waiting: dict[int, dict[Hashable, None]] = {}
        self._top = 0
        # Keys with waiters sent back by a shrink (see count_sent_back): how many. Empty
        # but for the few turns such waiters wait, so the buckets above leave them out.
        self._sent_back: dict[Hashable, int] = {}

    def busiest(self) -> Optional[tuple[Hashable, int]]:
        """The key with the most jobs waiting and how many, or ``None`` if none waits."""
        if self._sent_back:
            return self._busiest_with_sent_back()
        if not self._top:
            return None
        return next(iter(self._by_waiting[self._top])), self._top

    def count_sent_back(self, key: Hashable) -> None:
        """A waiter of ``key`` granted its slot and its key's room gave the slot back (the
        limit shrank before it resumed: see SlotLine._must_wait_again) and waits again in
        the plain line, keeping the room. Until uncount_sent_back(), busiest() counts it
        as waiting for ``key``, as ``stats`` count it waiting (not running)."""
        self._sent_back[key] = self._sent_back.get(key, 0) + 1

    def uncount_sent_back(self, key: Hashable) -> None:
        """That waiter stopped waiting: it resumed with a slot, or left the line."""
        n = self._sent_back.pop(key) - 1
        if n:
            self._sent_back[key] = n

    def _busiest_with_sent_back(self) -> Optional[tuple[Hashable, int]]:
        """busiest() while waiters sent back by a shrink wait: a key's jobs in its line
        and its waiters sent back, together. A step per such key (there are as many as
        the shrink sent back, at most), and one per bucket to find each key's."""
        best = None if not self._top else (next(iter(self._by_waiting[self._top])), self._top)
        for key, sent_back in self._sent_back.items():
            in_line = next((n for n, bucket in self._by_waiting.items() if key in bucket), 0)
            if best is None or in_line + sent_back > best[1]:
                best = key, in_line + sent_back
        return best

    def running_of(self, key: Hashable) -> int:
        return self._running.get(key, 0)

    def prepare(self, key: Hashable) -> None:
        """Call ``max_per_key(key)`` now if ``key`` is not active, before try_start() or
        push() of its job touch anything: the call may use the executor (stats, a job
        submitted, of this key too) and finds every key whole. The result waits for
        the key's activation by the next try_start() or enter(); if the call made the key
        active (a job it submitted), the key keeps the limit it has. Raises what the call
        raises, or for a key that is not hashable, with nothing changed."""
        limit_of = self._limit_of
        if limit_of is None:
            return
        try:
            if key in self._limits:
                return
        except TypeError as exc:
            raise unhashable(key) from exc
        self._at_hand = key, check_limit(limit_of(key), key)

    def _limit(self, key: Hashable) -> int:
        """max_per_key for ``key``, kept from when the key became active.

        A key becoming active takes what prepare() got for it. Without prepare() (the
        bridge's line, whose function returns the limit its submitter computed, and the
        tests) max_per_key(key) is called here, amid an update: it must not use the line."""
        limit_of = self._limit_of
        if limit_of is None:
            return self._per_key
        limit = self._limits.get(key)
        if limit is None:
            at_hand = self._at_hand
            if at_hand is not None and at_hand[0] is key:
                limit = at_hand[1]
            else:
                limit = check_limit(limit_of(key), key)
            self._limits[key] = limit
        return limit

    def _rebucket(self, key: Hashable, waiting: int) -> None:
        """Put ``key`` in the bucket of its ``waiting`` jobs alone (none if 0), wherever a
        step cut short left it."""
        for count in list(self._by_waiting):
            bucket = self._by_waiting[count]
            bucket.pop(key, None)
            if not bucket:
                del self._by_waiting[count]
        if waiting:
            self._by_waiting.setdefault(waiting, {})[key] = None
        self._top = max(self._by_waiting, default=0)

    def _count_waiting(self, key: Hashable, old: int, new: int) -> None:
        """Move ``key`` from ``old`` to ``new`` jobs waiting (they differ by one)."""
        by_waiting = self._by_waiting
        if old:
            bucket = by_waiting[old]
            del bucket[key]
            if not bucket:
                del by_waiting[old]
                if old == self._top:
                    self._top = new  # the key moved one down (or the top was 1)
        if new:
            target = by_waiting.get(new)
            if target is None:
                target = by_waiting[new] = {}
            target[key] = None
            if new > self._top:
                self._top = new
