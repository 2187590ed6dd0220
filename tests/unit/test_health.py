"""The gRPC health service: Watch calls opened and cancelled, clients that do not
read, and status changes, over a real grpcio server and client."""

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cluster import health, streams
from cluster.health import NOT_SERVING, SERVICE_UNKNOWN, SERVING, Health
from cluster.workers import Workers

DEADLINE = 10.0


@pytest.fixture
def served():
    """(stub, servicer, channel) on a loopback server with the replica's unary pool."""
    servicer = Health()
    pool = Workers(64)
    server = grpc.server(pool)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield health_pb2_grpc.HealthStub(channel), servicer, channel
    finally:
        channel.close()
        server.stop(None).wait()
        pool.shutdown(wait=True, cancel_futures=True)


def watch(stub, service: str = ""):
    return stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=DEADLINE)


def check(stub, service: str = "") -> int:
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=DEADLINE).status


def test_watches_opened_and_cancelled_leave_the_server_serving(served):
    """grpc_health's servicer hung the whole server for good after a few dozen of
    these from parallel clients (a send waiting under the lock that grpcio's serving
    thread needs to close a cancelled watch)."""
    stub, servicer, channel = served
    target = channel._channel.target().decode()
    failures = []

    def churn(n: int) -> None:
        with grpc.insecure_channel(target) as own:
            mine = health_pb2_grpc.HealthStub(own)
            for i in range(40):
                stream = watch(mine)
                try:
                    next(stream)
                except grpc.RpcError as e:
                    failures.append(f"client {n}, watch {i}: {e.code().name}")
                    return
                stream.cancel()
                if n == 0 and i % 4 == 0:
                    servicer.set("", NOT_SERVING if i % 8 else SERVING)

    clients = [threading.Thread(target=churn, args=(n,)) for n in range(8)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    assert failures == []
    servicer.set("", SERVING)
    assert check(stub) == SERVING


def test_a_watcher_sees_the_latest_status(served):
    stub, servicer, _ = served
    stream = watch(stub)
    assert next(stream).status == SERVING
    for status in (NOT_SERVING, SERVING, NOT_SERVING):
        servicer.set("", status)
    seen = next(stream).status
    while seen != NOT_SERVING:  # intermediate statuses may be skipped, never the last
        seen = next(stream).status
    stream.cancel()


def test_a_watcher_that_does_not_read_holds_up_nothing(served):
    stub, servicer, _ = served
    idle = watch(stub)  # never read
    started = time.monotonic()
    for i in range(20_000):
        servicer.set("", SERVING if i % 2 else NOT_SERVING)
    assert time.monotonic() - started < 30.0
    servicer.set("", SERVING)
    reader = watch(stub)
    assert next(reader).status == SERVING
    assert check(stub) == SERVING
    idle.cancel()
    reader.cancel()


def test_an_unknown_service_is_unknown_until_it_is_set(served):
    stub, servicer, _ = served
    with pytest.raises(grpc.RpcError) as caught:
        check(stub, "regraft.v1.Nothing")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    stream = watch(stub, "regraft.v1.Later")
    assert next(stream).status == SERVICE_UNKNOWN
    servicer.set("regraft.v1.Later", SERVING)
    assert next(stream).status == SERVING
    stream.cancel()


def test_watches_are_bounded_in_number_and_name(served, monkeypatch):
    stub, _, _ = served
    monkeypatch.setattr(health, "MAX_WATCHES", 3)
    open_ = [watch(stub) for _ in range(3)]
    for stream in open_:
        assert next(stream).status == SERVING
    with pytest.raises(grpc.RpcError) as caught:
        next(watch(stub))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    open_.pop().cancel()

    def admitted() -> bool:
        stream = watch(stub)
        try:
            return next(stream).status == SERVING
        except grpc.RpcError:
            return False
        finally:
            stream.cancel()

    give_up = time.monotonic() + DEADLINE
    while not admitted():  # the cancel reaches the server soon after
        assert time.monotonic() < give_up, "a cancelled watch still counted"
        time.sleep(0.05)
    with pytest.raises(grpc.RpcError) as caught:
        next(watch(stub, "x" * (health.MAX_SERVICE_NAME + 1)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for stream in open_:
        stream.cancel()


def test_one_host_holds_a_share_of_the_watches_not_all(served, monkeypatch):
    """Health.Watch needs no credentials: one client took all 1,024 and locked out the
    load balancers' health checking."""
    stub, servicer, _ = served
    monkeypatch.setattr(servicer, "_shares", streams.Shares(8, "health watch"))
    mine = [watch(stub) for _ in range(2)]
    assert [next(stream).status for stream in mine] == [SERVING, SERVING]
    with pytest.raises(grpc.RpcError) as caught:
        next(watch(stub))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "ipv4:127.0.0.1 already holds 2 health watch streams" in caught.value.details()
    for stream in mine:
        stream.cancel()


def test_shutting_down_says_not_serving_for_good(served):
    stub, servicer, _ = served
    servicer.set("regraft.v1.Registry", SERVING)
    stream = watch(stub, "regraft.v1.Registry")
    assert next(stream).status == SERVING
    servicer.enter_graceful_shutdown()
    assert next(stream).status == NOT_SERVING
    servicer.set("regraft.v1.Registry", SERVING)
    assert check(stub, "regraft.v1.Registry") == NOT_SERVING
    assert check(stub) == NOT_SERVING
    stream.cancel()


def test_many_watchers_each_get_every_last_status(served):
    stub, servicer, _ = served
    streams = [watch(stub) for _ in range(50)]
    for stream in streams:
        assert next(stream).status == SERVING
    setter = threading.Thread(
        target=lambda: [servicer.set("", NOT_SERVING if i % 2 else SERVING) for i in range(201)]
    )
    setter.start()
    setter.join()
    for stream in streams:
        seen = next(stream).status
        while seen != NOT_SERVING:
            seen = next(stream).status
        stream.cancel()
