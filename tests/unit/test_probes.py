"""The HTTP port (metrics and probes) under idle and surplus connections: anyone can
open them, and they must not pile up threads in the replica."""

import socket
import time
import urllib.request

import pytest

from cluster import http
from cluster.http import ProbeServer
from tests.cluster.harness import free_port


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


def closed_by_server(connection: socket.socket) -> bool:
    try:
        return connection.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_connections_beyond_the_cap_are_closed_at_once(probes):
    idle = [idle_connection(probes.port) for _ in range(http.MAX_CONNECTIONS)]
    time.sleep(0.2)  # the server took them
    try:
        surplus = idle_connection(probes.port)
        surplus.settimeout(0.5)  # well under REQUEST_TIMEOUT: refused, not timed out
        assert closed_by_server(surplus)
    finally:
        for connection in idle:
            connection.close()
    deadline = time.monotonic() + 10
    while True:  # once the idle ones are gone, requests are served again
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{probes.port}/livez", timeout=2) as r:
                assert r.read() == b"ok\n"
                break
        except OSError:
            assert time.monotonic() < deadline, "the probe port never served again"
            time.sleep(0.1)


def test_an_idle_connection_is_closed_after_the_request_timeout(probes):
    connection = idle_connection(probes.port)
    started = time.monotonic()
    assert closed_by_server(connection)
    assert time.monotonic() - started < 8  # generous: REQUEST_TIMEOUT is 1 s here
