"""Libraries that take an Executor and hand it plain functions: requests_futures."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from coroexecutor import ThreadedLoopExecutor

requests_futures_sessions = pytest.importorskip("requests_futures.sessions")

WAIT = 5  # seconds: the bound on every blocking wait; reaching it is a failure


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers /<n> with n doubled; /slow waits until the test releases it."""

    release = threading.Event()
    waiting = threading.Semaphore(0)

    def do_GET(self) -> None:
        if self.path == "/slow":
            _Handler.waiting.release()
            assert _Handler.release.wait(WAIT)
            body = b"slow"
        else:
            body = str(2 * int(self.path.lstrip("/"))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean


@pytest.fixture
def base_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = False
    server.block_on_close = True  # join the handler threads: no leak reports
    thread = threading.Thread(target=server.serve_forever, name="test_http_server")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        _Handler.release.set()
        server.shutdown()
        server.server_close()
        thread.join(WAIT)
        _Handler.release.clear()


def test_requests_futures_session_runs_requests_concurrently(base_url: str) -> None:
    concurrency = 4
    with ThreadedLoopExecutor(max_workers=concurrency) as exe:
        session = requests_futures_sessions.FuturesSession(executor=exe)
        try:
            # Four requests parked in the server at the same time: real concurrency.
            slow = [session.get(f"{base_url}/slow") for _ in range(concurrency)]
            for _ in range(concurrency):
                assert _Handler.waiting.acquire(timeout=WAIT)
            _Handler.release.set()
            assert [f.result(timeout=WAIT).text for f in slow] == ["slow"] * concurrency
            futures = [session.get(f"{base_url}/{i}") for i in range(20)]
            assert [f.result(timeout=WAIT).text for f in futures] == [str(2 * i) for i in range(20)]
        finally:
            session.close()
