"""A replica's open-files budget (cluster/openfiles.py)."""

import contextlib
import resource
import socket
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from cluster import openfiles
from cluster.config import ConfigError
from cluster.workers import Workers
from tests.cluster.harness import ROOT, closed_by_peer, with_open_files

LEAST = openfiles.RESERVED + openfiles.MIN_CONNECTIONS


def test_the_grpc_port_gets_what_the_rest_of_the_replica_leaves():
    assert openfiles.connection_cap(1024, "127.0.0.1:7401") == 1024 - openfiles.RESERVED
    assert openfiles.connection_cap(1 << 20, "0.0.0.0:7401") == openfiles.MAX_CONNECTIONS
    assert openfiles.connection_cap(LEAST, "[::]:7401") == openfiles.MIN_CONNECTIONS
    # A host name may listen on several addresses, each with its own count.
    assert openfiles.connection_cap(1024, "localhost:7401") == (1024 - openfiles.RESERVED) // 2


def test_too_low_a_limit_is_refused_with_what_to_do():
    with pytest.raises(ConfigError) as refused:
        openfiles.connection_cap(LEAST - 1, "127.0.0.1:7401")
    message = str(refused.value)
    assert f"the open-files limit is {LEAST - 1}: a replica needs at least {LEAST}" in message
    assert "ulimit -n" in message


def _accepted(sockets: list[socket.socket]) -> int:
    """How many of the connections the server kept, once it closed those over its cap."""
    time.sleep(1.0)  # liveness only: the server closes extra connections on accepting
    return sum(not closed_by_peer(connection, 0.01) for connection in sockets)


def test_a_host_name_listening_twice_stays_within_the_budget():
    """grpcio binds localhost on 127.0.0.1 and ::1, and counts connections per socket:
    the two together must not take more than the replica's limit leaves them."""
    pool = Workers(1, 1)
    cap = openfiles.connection_cap(LEAST, "localhost:7401")  # the port makes no difference
    server = grpc.server(pool, options=[("grpc.max_allowed_incoming_connections", cap)])
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("localhost:0")
    server.start()
    flood: list[socket.socket] = []
    try:
        for host in ("127.0.0.1", "::1"):
            for _ in range(openfiles.MIN_CONNECTIONS):
                with contextlib.suppress(OSError):  # no IPv6 here
                    flood.append(socket.create_connection((host, port), timeout=5))
        assert _accepted(flood) <= openfiles.MIN_CONNECTIONS
    finally:
        for connection in flood:
            connection.close()
        server.stop(None).wait()
        pool.shutdown()


@pytest.mark.parametrize("hard", [2048, 8192])
def test_the_soft_limit_is_raised_as_far_as_a_replica_can_use(hard):
    """In a child process whose soft limit is 512."""
    _, ours = resource.getrlimit(resource.RLIMIT_NOFILE)
    if ours != resource.RLIM_INFINITY and ours < hard:
        pytest.skip(f"this process may not open {hard} files")
    code = (
        "import resource; from cluster import openfiles; "
        "print(openfiles.raise_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    done = subprocess.run(
        with_open_files([sys.executable, "-c", code], 512, hard),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    wanted = min(hard, openfiles.RESERVED + openfiles.MAX_CONNECTIONS)
    assert done.stdout.split() == [str(wanted), str(wanted)]
