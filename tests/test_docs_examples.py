"""Every Python example in docs/*.rst and README.rst runs here, so none can rot.

Each ``.. code-block:: python`` (or ``python3``) block is a complete program. It is
written to a file and run in a fresh interpreter (``python -X dev -W error``, the package
importable from the checkout) with a timeout; the test fails if it exits non-zero. The
examples check themselves with ``assert``.

A block may be preceded by a marker, an RST comment invisible in the rendered page::

    .. example: server requires=aiohttp,tqdm timeout=60

    .. code-block:: python

Keys (all optional, space separated):

``server``
    The block talks HTTP to a local test server. Before it runs, every
    ``http://127.0.0.1:8080`` in its text is replaced by the origin of an aiohttp server
    started for this test on 127.0.0.1 (random port). The server answers
    ``GET /item/{n}`` with the text ``item {n}``, ``GET /status/{code}`` with that
    status, and ``GET /slow`` never (it waits until the client goes away).
``requires=mod[,mod...]``
    Skip, naming the missing module, when one of them cannot be imported (for optional
    extras, such as the libraries the migration notes compare against).
``timeout=N``
    Seconds before the example counts as hung (default 60).
``nodebug``
    Run without ``-X dev`` (still with ``-W error``). Dev mode puts asyncio in debug
    mode, where creating a task captures a stack trace: about ten times slower, which
    only matters for the examples that run 100,000 jobs.

No other keys exist, and an example is never skipped for any other reason.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER_ORIGIN = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 60.0
KNOWN_KEYS = {"nodebug", "requires", "server", "timeout"}

_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. code-block::[ \t]*(?P<lang>\S+)[ \t]*$")
_MARKER = re.compile(r"^[ \t]*\.\. example:(?P<keys>.*)$")


@dataclass
class Example:
    path: Path
    line: int  # 1-based line of the code-block directive
    code: str
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def _parse_marker(text: str, where: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for item in text.split():
        name, _, value = item.partition("=")
        if name not in KNOWN_KEYS:
            raise ValueError(f"{where}: unknown example marker key {name!r}")
        keys[name] = value
    return keys


def extract_examples(path: Path) -> list[Example]:
    """The python code blocks of one RST file, with their markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    examples = []
    for index, line in enumerate(lines):
        match = _BLOCK.match(line)
        if match is None or match["lang"] not in ("python", "python3"):
            continue
        # The marker, if any, is the nearest non-blank line above the directive.
        keys: dict[str, str] = {}
        above = index - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        if above >= 0 and (marker := _MARKER.match(lines[above])) is not None:
            keys = _parse_marker(marker["keys"], f"{path}:{above + 1}")
        # Body: skip the directive's options, then take the indented lines.
        directive_indent = len(match["indent"])
        body: list[str] = []
        cursor = index + 1
        while cursor < len(lines) and lines[cursor].strip().startswith(":"):
            cursor += 1
        for text in lines[cursor:]:
            if text.strip() and len(text) - len(text.lstrip()) <= directive_indent:
                break
            body.append(text)
        code = "\n".join(body)
        code = textwrap.dedent(code).strip("\n") + "\n"
        examples.append(Example(path, index + 1, code, keys))
    return examples


def example_files() -> list[Path]:
    files = sorted(p for p in (ROOT / "docs").rglob("*.rst") if "_build" not in p.parts)
    readme = ROOT / "README.rst"
    if readme.exists():
        files.append(readme)
    return files


ALL_EXAMPLES = [example for path in example_files() for example in extract_examples(path)]


#
# The local HTTP server for `server` examples
#


class DocsServer:
    """An aiohttp server on 127.0.0.1 (random port), run in its own thread and loop."""

    def __init__(self) -> None:
        self.origin = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="docs-example-server")

    def __enter__(self) -> DocsServer:
        self._thread.start()
        assert self._ready.wait(10), "the docs example server did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "the docs example server did not stop"

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test through __enter__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from aiohttp import web

        async def item(request: web.Request) -> web.Response:
            return web.Response(text=f"item {request.match_info['n']}")

        async def status(request: web.Request) -> web.Response:
            code = int(request.match_info["code"])
            return web.Response(status=code, text=f"status {code}")

        async def slow(request: web.Request) -> web.Response:
            await asyncio.Event().wait()  # until the client disconnects
            raise AssertionError("unreachable")

        app = web.Application()
        app.router.add_get("/item/{n}", item)
        app.router.add_get("/status/{code}", status)
        app.router.add_get("/slow", slow)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()


@pytest.fixture
def docs_server(request: pytest.FixtureRequest) -> Iterator[DocsServer | None]:
    example: Example = request.node.callspec.params["example"]
    if "server" not in example.keys:
        yield None
        return
    if importlib.util.find_spec("aiohttp") is None:
        pytest.skip("the example needs the local aiohttp server: aiohttp is not installed")
    with DocsServer() as server:
        yield server


#
# Tests
#


def test_examples_were_found() -> None:
    files = {example.path.name for example in ALL_EXAMPLES}
    for page in ("quickstart.rst", "semantics.rst", "bridge.rst", "recipes.rst", "migration.rst"):
        assert page in files, f"no python example found in docs/{page}"
    assert len(ALL_EXAMPLES) >= 30


def test_api_reference_covers_every_public_name() -> None:
    import coroexecutor

    api = (ROOT / "docs" / "api.rst").read_text(encoding="utf-8")
    documented = set(
        re.findall(
            r"^\.\. (?:auto)?(?:class|exception|data)::\s+(?:coroexecutor\.)?(\w+)", api, re.M
        )
    )
    assert documented == set(coroexecutor.__all__)


def test_bridge_page_lists_every_constructor_option() -> None:
    import inspect

    from coroexecutor import LoopExecutor

    page = (ROOT / "docs" / "bridge.rst").read_text(encoding="utf-8")
    found = re.search(r"``LoopExecutor\((?P<params>[^`]*)\)``", page)
    assert found is not None, "docs/bridge.rst shows no LoopExecutor(...) signature"
    documented = [
        p.split("=")[0].strip() for p in " ".join(found["params"].split()).split(",")
    ]
    documented = [name for name in documented if name not in ("*", "")]
    actual = [name for name in inspect.signature(LoopExecutor).parameters]
    assert documented == actual


def test_markers_sit_right_above_a_python_block() -> None:
    """A marker that is not followed by a python block would silently do nothing."""
    for path in example_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            if _MARKER.match(line) is None:
                continue
            below = index + 1
            while below < len(lines) and not lines[below].strip():
                below += 1
            match = _BLOCK.match(lines[below]) if below < len(lines) else None
            lang = match["lang"] if match is not None else None
            assert lang in ("python", "python3"), (
                f"{path}:{index + 1}: example marker without a python code-block below it"
            )


@pytest.mark.timeout(DEFAULT_TIMEOUT * 2 + 30)
@pytest.mark.parametrize("example", ALL_EXAMPLES, ids=[e.id for e in ALL_EXAMPLES])
def test_example_runs(example: Example, docs_server: DocsServer | None, tmp_path: Path) -> None:
    for module in filter(None, example.keys.get("requires", "").split(",")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the example needs {module!r}, which is not installed")
    code = example.code
    if docs_server is not None:
        code = code.replace(PLACEHOLDER_ORIGIN, docs_server.origin)
    script = tmp_path / f"example_{example.path.stem}_{example.line}.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("PYTHONASYNCIODEBUG", None)
    timeout = float(example.keys.get("timeout") or DEFAULT_TIMEOUT)
    try:
        dev_mode = [] if "nodebug" in example.keys else ["-X", "dev"]
        result = subprocess.run(
            [sys.executable, *dev_mode, "-W", "error", str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{example.id}: example still running after {timeout} s\n{exc.stderr!r}")
    assert result.returncode == 0, (
        f"{example.id} exited with {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )
