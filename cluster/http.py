"""The replica's HTTP port: Prometheus metrics and Kubernetes-style probes.

/metrics  Prometheus text format
/livez    200 while the process and its Raft thread run
/readyz   200 when the replica can serve consistent reads and accept writes
"""

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cluster.config import split_address

# Connections served at once, and how long one may last in all: anyone can open
# them, and idle or trickling ones must neither pile up threads in the replica nor
# keep Prometheus and the orchestrator's probes out.
MAX_CONNECTIONS = 32
REQUEST_TIMEOUT = 5.0
# Rendering /metrics costs a replica ~8 ms of Python: sixteen looping scrapers (80 a
# second) made its writes 9x slower. Renders start at most this often.
RENDER_EVERY = 0.1


class _Renders:
    """`render()`, at most once per RENDER_EVERY: concurrent requests share one render,
    and each is answered by a render that began after it arrived, so that no answer
    is older than its request."""

    def __init__(self, render: Callable[[], bytes]) -> None:
        self._render = render
        self._cond = threading.Condition()
        self._started = 0  # renders begun
        self._finished = 0  # the render `_body` is from
        self._body = b""
        self._rendering = False
        self._last_start = float("-inf")

    def get(self) -> bytes:
        with self._cond:
            wanted = self._started + 1
            while self._finished < wanted:
                if self._rendering:
                    self._cond.wait()
                    continue
                pause = self._last_start + RENDER_EVERY - time.monotonic()
                if pause > 0:
                    self._cond.wait(pause)
                    continue
                self._rendering, self._last_start = True, time.monotonic()
                self._started += 1
                mine = self._started
                break
            else:
                return self._body
        body = None
        try:
            body = self._render()
            return body
        finally:
            with self._cond:
                self._rendering = False
                if body is not None:
                    self._body, self._finished = body, mine
                self._cond.notify_all()


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, each closed after REQUEST_TIMEOUT in all; when
    MAX_CONNECTIONS are open, a new one closes the oldest (a probe takes milliseconds,
    so the oldest is the one most likely to be stuck)."""

    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 made probes wait for a SYN retransmit

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._opened: dict[socket.socket, float] = {}
        self._lock = threading.Lock()

    def process_request(self, request, client_address) -> None:
        now = time.monotonic()
        with self._lock:
            self._close_expired(now)
            if len(self._opened) >= MAX_CONNECTIONS:
                self._cut(min(self._opened, key=self._opened.__getitem__))
            self._opened[request] = now
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._opened.pop(request, None)

    def handle_error(self, request, client_address) -> None:
        """A connection cut or dropped mid-request is no error worth a traceback."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def service_actions(self) -> None:
        """Called by serve_forever twice a second."""
        with self._lock:
            self._close_expired(time.monotonic())

    def _close_expired(self, now: float) -> None:
        for request, opened in list(self._opened.items()):
            if now - opened > REQUEST_TIMEOUT:
                self._cut(request)

    def _cut(self, request: socket.socket) -> None:
        """End a connection under its handler's feet: its next read or write fails."""
        del self._opened[request]
        with contextlib.suppress(OSError):
            request.shutdown(socket.SHUT_RDWR)


class ProbeServer:
    def __init__(
        self, address: str, live: Callable[[], str | None], ready: Callable[[], str | None]
    ) -> None:
        """`live` and `ready` return None when healthy, else the reason they are not."""
        probes = {"/livez": live, "/readyz": ready}
        metrics = _Renders(generate_latest)

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, metrics.get(), CONTENT_TYPE_LATEST)
                elif path in probes:
                    problem = probes[path]()
                    body = (problem or "ok") + "\n"
                    self._reply(503 if problem else 200, body.encode(), "text/plain")
                else:
                    self._reply(404, b"not found: try /metrics, /livez or /readyz\n", "text/plain")

            def _reply(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = _BoundedServer(split_address(address), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
