"""The HTTP port (metrics and probes) under idle, trickling and surplus connections:
anyone can open them, and they must neither pile up threads in the replica nor keep
the probes out (an orchestrator restarts a replica whose probes fail)."""

import socket
import threading
import time
import urllib.request

import pytest

from cluster import http
from cluster.http import ProbeServer
from tests.cluster.harness import closed_by_peer, free_port
from tests.polling import wait_for


@pytest.fixture
def probes(monkeypatch):
    monkeypatch.setattr(http, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(http, "REQUEST_TIMEOUT", 1.0)
    server = ProbeServer(f"127.0.0.1:{free_port()}", lambda: None, lambda: None)
    server.start()
    yield server
    server.stop()


def idle_connection(port: int) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(b"GET /livez HTTP/1.1\r\n")  # and never the end of the request
    return connection


def live(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=5) as response:
        return response.read()


def test_a_full_port_still_answers_probes(probes):
    idle = [idle_connection(probes.port) for _ in range(http.MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # the server took them all
        assert live(probes.port) == b"ok\n"  # the oldest idle one made room
        assert closed_by_peer(idle[0], within=10)
    finally:
        for connection in idle:
            connection.close()


def test_a_trickling_connection_is_closed_after_the_timeout_in_all(probes):
    connection = idle_connection(probes.port)
    stop = threading.Event()

    def trickle():
        while not stop.wait(0.2):
            try:
                connection.sendall(b"X")  # a header byte at a time: never complete
            except OSError:
                return

    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        started = time.monotonic()
        assert closed_by_peer(connection, within=10)
        assert time.monotonic() - started < 8  # generous: REQUEST_TIMEOUT is 1 s here
    finally:
        stop.set()
        sender.join()
        connection.close()


class Counting:
    """A render that counts itself, and waits for `release` while `hold` is set."""

    def __init__(self) -> None:
        self.count = 0
        self.hold = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> bytes:
        self.count += 1
        if self.hold.is_set():
            self.release.wait(10)
        return str(self.count).encode()


def test_metrics_renders_are_shared_and_never_older_than_the_request():
    render = Counting()
    renders = http._Renders(render)
    assert renders.get() == b"1"
    assert renders.get() == b"2"  # not the first render again: it began before
    render.hold.set()
    answers = {}

    def get(name: str) -> None:
        answers[name] = renders.get()

    first = threading.Thread(target=get, args=("first",))
    first.start()
    wait_for(lambda: render.count == 3, "the third render to begin", 10)
    render.hold.clear()
    late = [threading.Thread(target=get, args=(f"late{i}",)) for i in range(10)]
    for thread in late:
        thread.start()
    wait_for(lambda: len(renders._cond._waiters) == 10, "the late requests to wait", 10)
    render.release.set()
    for thread in [first, *late]:
        thread.join(10)
    # The ten arrived while the third render ran: one render after it serves them all.
    assert answers == {"first": b"3", **{f"late{i}": b"4" for i in range(10)}}
    assert render.count == 4
