"""Fixtures shared by the unit tests."""

from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from cluster import arrivals, auth
from cluster.unary import UnaryServer
from cluster.workers import Workers


@pytest.fixture
def health_server():
    """health_server(pool, add=None, interceptors=()) -> endpoint: a grpc.server on
    `pool` over loopback, serving health (and what `add(server)` adds); stopped, and
    its pool shut down, after the test."""
    made = []

    def start(
        pool: Workers,
        add: Callable[[grpc.Server], None] | None = None,
        interceptors: tuple[grpc.ServerInterceptor, ...] = (),
    ) -> str:
        server = grpc.server(pool, interceptors=interceptors)
        made.append((server, pool))
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        if add is not None:
            add(server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        return f"127.0.0.1:{port}"

    yield start
    for server, pool in made:
        server.stop(None).wait()
        pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def unary_server():
    """unary_server(add, servicer, checks=None, waiting=None, pool=None) -> endpoint: a
    grpc.server on loopback whose non-blocking unary methods are served by
    cluster/unary.py, as in a replica (the rest by grpcio, on `pool`: 4 threads by
    default); stopped after the test."""
    made = []

    def start(
        add: Callable,
        servicer: object,
        checks: auth.AuthInterceptor | None = None,
        waiting: arrivals.Arrivals | None = None,
        pool: Workers | None = None,
    ) -> str:
        pool = Workers(4) if pool is None else pool
        server = grpc.server(pool, interceptors=[checks] if checks else [])
        waiting = arrivals.Arrivals() if waiting is None else waiting
        served = UnaryServer(server, waiting, checks, pool)
        made.append((server, served, pool))
        served.add_servicer(add, servicer)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        served.start()
        return f"127.0.0.1:{port}"

    yield start
    for server, served, pool in made:
        server.stop(None).wait()
        served.stop()
        pool.shutdown(wait=True, cancel_futures=True)
