"""The note that names a failed job, and the job description it is built from.

How the executors attach the note (which error, which input, never on success) is tested
with them; here the helpers are called directly, on every supported Python: from 3.11 the
note goes through ``BaseException.add_note``, before that into ``__notes__`` by hand.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sys
import traceback
from typing import Any

import pytest

from coroexecutor._errors import describe_job
from coroexecutor._notes import (
    add_note,
    annotate_coroutine_error,
    annotate_job_error,
    describe_call,
    describe_coroutine,
    job_note,
)

pytestmark = pytest.mark.timeout(15)


async def fetch(url: str, *, timeout: float = 10) -> str:
    return url


class Client:
    async def fetch(self, url: str) -> str:
        return url


class Fetcher:
    async def __call__(self, url: str) -> str:
        return url


#
# describe_call: the job as the note names it
#


def test_a_function_and_its_arguments() -> None:
    assert (
        describe_call(fetch, ("https://example.org/a",), {"timeout": 5})
        == "fetch('https://example.org/a', timeout=5)"
    )
    assert describe_call(fetch, (), {}) == "fetch()"


def test_names_drop_the_enclosing_functions_but_keep_the_class() -> None:
    async def local(n: int) -> int:
        return n

    class Local:
        async def method(self) -> None:
            pass

    assert local.__qualname__.endswith("<locals>.local")
    assert describe_call(local, (1,), {}) == "local(1)"
    assert describe_call(Local().method, (), {}) == "Local.method()"  # bound: no self shown
    assert describe_call(Client.fetch, (Client(), "u"), {}).startswith("Client.fetch(<")
    assert describe_call(Client().fetch, ("u",), {}) == "Client.fetch('u')"
    assert describe_call(lambda n: n, (2,), {}) == "<lambda>(2)"
    assert describe_call(asyncio.sleep, (0,), {}) == "sleep(0)"
    assert describe_call(len, ([],), {}) == "len([])"


def test_a_callable_object_is_named_by_its_class() -> None:
    assert describe_call(Fetcher(), ("u",), {}) == "Fetcher('u')"


def test_a_partial_is_shown_as_the_call_it_makes() -> None:
    job = functools.partial(fetch, timeout=5)
    assert describe_call(job, ("https://a",), {}) == "fetch('https://a', timeout=5)"
    job = functools.partial(functools.partial(fetch, "https://b"), timeout=1)
    assert describe_call(job, (), {"timeout": 2}) == "fetch('https://b', timeout=2)"


def test_long_arguments_are_shortened_to_one_line() -> None:
    url = "https://example.org/" + "x" * 500
    text = describe_call(fetch, (url, list(range(1000)), {"k": "v" * 200}), {})
    assert re.fullmatch(
        r"fetch\('https://example\.org/x+\.\.\.x+', \[0, 1, 2, 3, 4, 5, \.\.\.\],"
        r" \{'k': 'v+\.\.\.v+'\}\)",
        text,
    ), text
    assert len(text) < 200


def test_many_arguments_end_in_an_ellipsis() -> None:
    text = describe_call(fetch, tuple(range(10)), {f"k{n}": n for n in range(10)})
    assert text == ("fetch(0, 1, 2, 3, 4, 5, k0=0, k1=1, k2=2, k3=3, k4=4, k5=5, ...)")


def test_deep_nesting_is_cut() -> None:
    assert describe_call(fetch, ([[[[[1]]]]],), {}) == "fetch([[[[...]]]])"


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr is broken")


class BadClass:
    """An object whose ``__class__`` and ``__repr__`` both raise."""

    def __repr__(self) -> str:
        raise RuntimeError("repr is broken")

    @property  # type: ignore[misc]  # overriding __class__ with a property is the point
    def __class__(self) -> type:
        raise RuntimeError("no class")


class BadName:
    """A callable whose ``__qualname__`` raises."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name}")

    async def __call__(self) -> None:
        pass


def test_a_repr_that_raises_does_not_break_the_description() -> None:
    text = describe_call(fetch, (BadRepr(),), {"x": [BadRepr()]})
    assert re.fullmatch(
        r"fetch\(<BadRepr instance at 0x[0-9a-f]+>, x=\[<BadRepr instance at 0x[0-9a-f]+>\]\)",
        text,
    ), text
    assert describe_call(fetch, (BadClass(),), {}) == "fetch(<unrepresentable>)"
    assert describe_call(BadName(), (), {}) == "BadName()"


def test_describe_job_names_the_job_a_bridge_wrapper_runs() -> None:
    # The error messages' describer (job_timeout) and the note's are one function.
    assert describe_job(fetch, ("u",), {"timeout": 1}) == "fetch('u', timeout=1)"


#
# job_note: the text
#


def test_the_note_names_the_job_its_attempts_and_its_map_input() -> None:
    args, kwargs = ("https://example.org/a",), {"timeout": 5}
    assert job_note(fetch, args, kwargs) == (
        "coroexecutor: job fetch('https://example.org/a', timeout=5) failed"
    )
    assert job_note(fetch, args, kwargs, map_index=17) == (
        "coroexecutor: job fetch('https://example.org/a', timeout=5) failed (map input #17)"
    )
    assert job_note(fetch, args, kwargs, attempts=3) == (
        "coroexecutor: job fetch('https://example.org/a', timeout=5) failed after 3 attempts"
    )
    assert job_note(fetch, args, kwargs, attempts=3, map_index=0) == (
        "coroexecutor: job fetch('https://example.org/a', timeout=5) failed after 3 attempts"
        " (map input #0)"
    )
    assert job_note(fetch, args, kwargs, attempts=1) == job_note(fetch, args, kwargs)


#
# add_note: PEP 678 on every version
#


def test_add_note_appends_to_the_same_exception_object() -> None:
    error = ValueError("boom")
    add_note(error, "first")
    add_note(error, "second")
    assert error.__notes__ == ["first", "second"]  # type: ignore[attr-defined]  # set by add_note
    assert error.args == ("boom",) and str(error) == "boom"  # the message is untouched


def test_add_note_keeps_notes_added_before() -> None:
    error = KeyError("k")
    error.__notes__ = ["the user's note"]  # type: ignore[attr-defined]  # PEP 678's attribute
    add_note(error, "ours")
    assert error.__notes__ == ["the user's note", "ours"]  # type: ignore[attr-defined]


def test_the_same_note_is_added_once() -> None:
    error = OSError("refused")
    note = job_note(fetch, ("u",), {}, map_index=3)
    for _ in range(3):  # say: the job's task, the map, and the block each annotate it
        annotate_job_error(error, fetch, ("u",), {}, map_index=3)
    assert error.__notes__ == [note]  # type: ignore[attr-defined]  # set by add_note
    annotate_job_error(error, fetch, ("u",), {}, map_index=4)  # another job raised it too
    assert len(error.__notes__) == 2  # type: ignore[attr-defined]  # set by add_note


@pytest.mark.parametrize("notes", [("a tuple",), "a string", 42, None])
def test_notes_that_are_not_a_list_are_left_alone(notes: object) -> None:
    error = ValueError()
    error.__notes__ = notes  # type: ignore[attr-defined]  # what someone else put there
    add_note(error, "ours")
    assert error.__notes__ is notes  # type: ignore[attr-defined]


def test_an_exception_that_refuses_new_attributes_gets_no_note() -> None:
    class Frozen(Exception):
        def __setattr__(self, name: str, value: object) -> None:
            raise AttributeError(f"Frozen refuses {name}")

    error = Frozen("x")
    add_note(error, "ours")  # no error of our own replaces the job's
    assert getattr(error, "__notes__", None) in (None, ["ours"])


def test_annotate_skips_a_cancellation() -> None:
    cancelled = asyncio.CancelledError()
    annotate_job_error(cancelled, fetch, (), {})
    assert not hasattr(cancelled, "__notes__")
    interrupted = KeyboardInterrupt()  # a job's failure, on the bridge: it is named
    annotate_job_error(interrupted, fetch, (), {})
    assert interrupted.__notes__ == ["coroexecutor: job fetch() failed"]  # type: ignore[attr-defined]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tracebacks print notes from 3.11")
def test_the_traceback_prints_the_note_under_the_error() -> None:
    try:
        raise ValueError("boom")
    except ValueError as error:
        annotate_job_error(error, fetch, ("https://example.org/a",), {}, map_index=17)
        text = "".join(traceback.format_exception(error))
    assert text.endswith(
        "ValueError: boom\n"
        "coroexecutor: job fetch('https://example.org/a') failed (map input #17)\n"
    ), text


#
# describe_coroutine: a job named from the frame of its failed coroutine
#


def failed(coro: Any) -> BaseException:
    """Run ``coro`` until it raises; return what it raised."""
    try:
        coro.send(None)
    except BaseException as exc:  # the point: whatever it raised
        return exc
    raise AssertionError("the coroutine did not raise")


async def fetch_failing(url: str, retries: int = 0, *, timeout: float = 10) -> str:
    raise ConnectionResetError(url)


class Api:
    async def get(self, path: str, *extra: int, **params: str) -> None:
        raise KeyError(path)


def test_a_coroutine_is_named_with_the_arguments_its_frame_held() -> None:
    coro = fetch_failing("https://example.org/a", timeout=5)
    error = failed(coro)
    assert describe_coroutine(coro, error) == "fetch_failing('https://example.org/a', 0, timeout=5)"


def test_a_methods_self_is_left_out_and_star_arguments_are_shown() -> None:
    coro = Api().get("/users", 1, 2, sort="name")
    assert describe_coroutine(coro, failed(coro)) == "Api.get('/users', 1, 2, sort='name')"


def test_long_values_are_shortened_in_a_coroutines_description_too() -> None:
    coro = fetch_failing("x" * 500)
    text = describe_coroutine(coro, failed(coro))
    assert re.fullmatch(r"fetch_failing\('x+\.\.\.x+', 0, timeout=10\)", text), text


def test_without_the_coroutines_frame_only_its_name() -> None:
    coro = fetch_failing("u")
    coro.close()
    assert describe_coroutine(coro, ValueError("never raised")) == "fetch_failing(...)"
    assert describe_coroutine(object(), ValueError()) == "object(...)"


def test_annotate_coroutine_error_notes_once_with_the_map_input() -> None:
    coro = fetch_failing("u")
    error = failed(coro)
    for _ in range(2):
        annotate_coroutine_error(error, coro, map_index=3)
    assert error.__notes__ == [  # type: ignore[attr-defined]  # set by add_note
        "coroexecutor: job fetch_failing('u', 0, timeout=10) failed (map input #3)"
    ]
    cancelled = asyncio.CancelledError()
    annotate_coroutine_error(cancelled, coro)
    assert not hasattr(cancelled, "__notes__")
