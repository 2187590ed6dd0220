"""Calls wait for their request message without a thread (cluster/arrivals.py), on a
real grpc.server over loopback, with calls whose messages never come."""

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from cluster import arrivals
from cluster.workers import Workers
from tests.held_calls import ended_streams, held_back_calls, send_message
from tests.polling import wait_for

LIVENESS = 10.0  # generous: only a hang fails
CHECK = "/grpc.health.v1.Health/Check"
AWAITING = "regraft_grpc_calls_awaiting_message"
CANCELLED = "regraft_grpc_calls_awaiting_message_cancelled_total"


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


class Recording(Workers):
    """Workers that note, for every job grpcio submits, whether it awaits a message."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recognized: list[bool] = []

    def submit(self, fn, /, *args, **kwargs):
        self.recognized.append(arrivals.awaiting_message(args))
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def serve(health_server):
    """serve(waiting) -> (endpoint, pool): a health server on 2 threads, 1 running."""

    def start(waiting: arrivals.Arrivals) -> tuple[str, Recording]:
        pool = Recording(2, 1, awaiting=waiting)
        return health_server(pool), pool

    return start


def _check(endpoint: str) -> int:
    with grpc.insecure_channel(endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=LIVENESS).status


def test_grpcio_submits_calls_the_way_this_expects(serve):
    """Fails when a grpcio release changes the private names arrivals.py relies on:
    held-back calls would then take threads again."""
    endpoint, pool = serve(arrivals.Arrivals())
    _check(endpoint)
    with grpc.insecure_channel(endpoint) as channel:
        stream = channel.unary_stream("/grpc.health.v1.Health/Watch")(b"", timeout=LIVENESS)
        next(stream)
        stream.cancel()
    assert pool.recognized == [True, True]


def test_calls_whose_message_never_comes_take_no_thread(serve):
    waiting = arrivals.Arrivals()
    endpoint, _ = serve(waiting)
    before = _metric(AWAITING)
    held = held_back_calls(endpoint, CHECK, 20)  # ten times the pool's threads
    try:
        wait_for(lambda: len(waiting) == 20, "20 calls waiting", LIVENESS)
        assert _metric(AWAITING) == before + 20
        assert _check(endpoint) == health_pb2.HealthCheckResponse.SERVING
    finally:
        held.close()
    # The calls end with their connection, and are forgotten.
    wait_for(lambda: len(waiting) == 0, "no call waiting", LIVENESS)
    assert _metric(AWAITING) == before
    assert _check(endpoint) == health_pb2.HealthCheckResponse.SERVING


def test_past_the_limit_the_longest_waiting_call_is_cancelled(serve):
    waiting = arrivals.Arrivals(limit=5)
    endpoint, _ = serve(waiting)
    before, cancelled = _metric(AWAITING), _metric(CANCELLED)
    first = held_back_calls(endpoint, CHECK, 5)
    try:
        wait_for(lambda: len(waiting) == 5, "5 calls waiting", LIVENESS)
        assert _metric(AWAITING) == before + 5
        second = held_back_calls(endpoint, CHECK, 3)
        try:
            first.settimeout(LIVENESS)
            # The first connection's three oldest calls (streams 1, 3, 5) are ended.
            assert ended_streams(first, 3) == {1, 3, 5}
            assert len(waiting) == 5
            assert _metric(AWAITING) == before + 5
            assert _metric(CANCELLED) == cancelled + 3
            assert _check(endpoint) == health_pb2.HealthCheckResponse.SERVING
        finally:
            second.close()
    finally:
        first.close()


def test_a_call_that_ends_without_its_message_is_told_so(serve):
    endpoint, _ = serve(arrivals.Arrivals())
    with grpc.insecure_channel(endpoint) as channel:
        no_message = channel.stream_unary(CHECK)
        with pytest.raises(grpc.RpcError) as refused:
            no_message(iter([]), timeout=LIVENESS)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    details = refused.value.details()
    assert f"the call ended without its request message: {CHECK} takes exactly one" in details


def test_a_message_that_arrives_after_shutdown_ends_its_call(serve):
    waiting = arrivals.Arrivals()
    endpoint, pool = serve(waiting)
    before = _metric(AWAITING)
    held = held_back_calls(endpoint, CHECK, 1)
    try:
        wait_for(lambda: len(waiting) == 1, "1 call waiting", LIVENESS)
        pool.shutdown(wait=True)
        held.settimeout(LIVENESS)
        send_message(held, 0, b"")
        assert ended_streams(held, 1) == {1}
        assert _metric(AWAITING) == before
    finally:
        held.close()


def test_the_limit_is_at_least_one():
    with pytest.raises(ValueError, match="must be at least 1, not 0"):
        arrivals.Arrivals(limit=0)
