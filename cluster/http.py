"""The replica's HTTP port: Prometheus metrics and Kubernetes-style probes.

/metrics  Prometheus text format
/livez    200 while the process and its Raft thread run
/readyz   200 when the replica can serve consistent reads and accept writes
"""

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cluster.config import split_address

# Connections served at once, and how long one may take to send its request: idle or
# slow connections (anyone can open them) must not pile up threads in the replica.
MAX_CONNECTIONS = 32
REQUEST_TIMEOUT = 10.0


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS: past that, closed at once."""

    daemon_threads = True

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class ProbeServer:
    def __init__(
        self, address: str, live: Callable[[], str | None], ready: Callable[[], str | None]
    ) -> None:
        """`live` and `ready` return None when healthy, else the reason they are not."""
        probes = {"/livez": live, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(), CONTENT_TYPE_LATEST)
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
