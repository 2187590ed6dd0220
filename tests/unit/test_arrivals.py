"""Calls wait for their request message without a thread (cluster/arrivals.py), on a
real grpc.server over loopback, with calls whose messages never come."""

import grpc
import prometheus_client
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


def test_a_flood_on_one_connection_cancels_its_own_calls_not_a_slow_upload(serve):
    """A client whose message is slow to come (a manifest uploaded over a slow link)
    waits longest once another connection floods the replica with calls that never
    send theirs: the flood's calls are the ones cancelled, and the upload is answered."""
    waiting = arrivals.Arrivals(limit=5)
    endpoint, _ = serve(waiting)
    cancelled = _metric(CANCELLED)
    upload = held_back_calls(endpoint, CHECK, 1)
    try:
        wait_for(lambda: len(waiting) == 1, "the upload to wait", LIVENESS)
        flood = held_back_calls(endpoint, CHECK, 8)
        try:
            flood.settimeout(LIVENESS)
            # 9 calls for 5 places: the flood's four oldest go, though the upload is older.
            assert ended_streams(flood, 4) == {1, 3, 5, 7}
            assert _metric(CANCELLED) == cancelled + 4
            assert len(waiting) == 5
            upload.settimeout(LIVENESS)
            send_message(upload, 0, health_pb2.HealthCheckRequest().SerializeToString())
            answered: set[int] = set()
            assert ended_streams(upload, 1, answered) == {1}
            assert answered == {1}  # its answer, then its trailers: not a reset
            assert _metric(CANCELLED) == cancelled + 4
        finally:
            flood.close()
    finally:
        upload.close()


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


class FakeCall:
    def __init__(self, peer: bytes) -> None:
        self._peer = peer
        self.cancelled = False

    def peer(self) -> bytes:
        return self._peer

    def cancel(self) -> None:
        self.cancelled = True


def test_the_connection_holding_the_most_loses_its_idlest_call_first():
    gauge = prometheus_client.Gauge("fairness_open", "", registry=None)
    counter = prometheus_client.Counter("fairness_cancelled", "", registry=None)
    kept = arrivals.IdlestFirst(4, gauge, counter)
    calls = {
        name: FakeCall(peer)
        for name, peer in [("a1", b"A"), ("b1", b"B"), ("b2", b"B"), ("a2", b"A"), ("b3", b"B")]
    }
    for name in ["a1", "b1", "b2", "a2"]:
        kept.add(name, calls[name])
    kept.active("b1")  # B's idlest is now b2
    kept.add("b3", calls["b3"])  # B holds 3 of 5
    assert [n for n, call in calls.items() if call.cancelled] == ["b2"]
    kept.remove("b3")
    kept.add("c1", calls.setdefault("c1", FakeCall(b"C")))
    kept.add("b4", calls.setdefault("b4", FakeCall(b"B")))  # A and B hold 2 each: a tie
    assert {n for n, call in calls.items() if call.cancelled} == {"b2", "a1"}  # oldest turn
    assert len(kept) == 4 and gauge._value.get() == 4 and counter._value.get() == 2
    kept.remove("a1")  # already cancelled: nothing changes
    assert len(kept) == 4 and gauge._value.get() == 4
    kept.active("b2")  # nor here
    kept.add("c2", FakeCall(b"C"))  # B and C hold 2 each; b1 was last active before c1 came
    assert calls["b1"].cancelled and not calls["c1"].cancelled and not calls["a2"].cancelled
