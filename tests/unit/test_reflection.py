"""Reflection streams hold no thread while they wait (cluster/reflection.py), on a real
grpc.server over loopback with a pool of 2 threads."""

import queue

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client import REGISTRY

from cluster import decoding, reflection
from cluster.workers import Workers
from tests.polling import wait_for

LIVENESS = 10.0  # generous: only a hang fails
HEALTH = "grpc.health.v1.Health"
LIST = reflection_pb2.ServerReflectionRequest(list_services="")
CANCELLED = "regraft_grpc_reflection_streams_cancelled_total"
OPEN = "regraft_grpc_reflection_streams_open"


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture
def serve(health_server):
    """serve(limit) -> (endpoint, Reflection): health and reflection on 2 threads, with
    the replica's interceptor for requests that do not parse."""

    def start(limit: int = reflection.MAX_OPEN) -> tuple[str, reflection.Reflection]:
        pool = Workers(2, 1)
        served = reflection.Reflection([HEALTH], pool, limit=limit)
        return health_server(pool, served.add_to, (decoding.MalformedRequests(),)), served

    return start


class Idle:
    """A reflection stream that asked once, was answered, and stays open."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._requests: queue.Queue = queue.Queue()
        self._requests.put(LIST)
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        self.responses = stub.ServerReflectionInfo(iter(self._requests.get, None), timeout=60)
        self.first = next(self.responses)

    def ask(self) -> reflection_pb2.ServerReflectionResponse:
        self._requests.put(LIST)
        return next(self.responses)

    def close(self) -> None:
        self._requests.put(None)


def _services(response: reflection_pb2.ServerReflectionResponse) -> set[str]:
    return {s.name for s in response.list_services_response.service}


def test_v1_is_served_too(serve):
    """Newer clients ask grpc.reflection.v1 first; its messages are v1alpha's."""
    endpoint, _ = serve()
    with grpc.insecure_channel(endpoint) as channel:
        info = channel.stream_stream(
            f"/{reflection.SERVICE_V1}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        asked = reflection_pb2.ServerReflectionRequest(file_containing_symbol=HEALTH)
        responses = list(info(iter([LIST, asked]), timeout=LIVENESS))
    assert HEALTH in _services(responses[0])
    assert responses[1].file_descriptor_response.file_descriptor_proto


def test_both_reflection_services_are_listed_and_described(serve):
    """A client that lists, then fetches every service's file, finds v1 as well."""
    endpoint, _ = serve()
    with grpc.insecure_channel(endpoint) as channel:
        found = ProtoReflectionDescriptorDatabase(channel)
        services = set(found.get_services())
        assert {reflection.SERVICE, reflection.SERVICE_V1} <= services
        pool = descriptor_pool.DescriptorPool(found)
        v1 = pool.FindServiceByName(reflection.SERVICE_V1)
        assert [m.name for m in v1.methods] == ["ServerReflectionInfo"]


def test_one_stream_answers_requests_in_turn_and_ends_when_the_client_does(serve):
    endpoint, served = serve()
    requests = [
        LIST,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=HEALTH),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Service"),
        LIST,
    ]
    with grpc.insecure_channel(endpoint) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter(requests), timeout=LIVENESS)
        responses = list(call)
        assert call.code() == grpc.StatusCode.OK
    assert len(responses) == 4
    assert _services(responses[0]) == {HEALTH, reflection.SERVICE, reflection.SERVICE_V1}
    assert responses[1].file_descriptor_response.file_descriptor_proto
    assert responses[2].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert responses[3] == responses[0]
    wait_for(lambda: len(served) == 0, "the stream to be forgotten", LIVENESS)


def test_a_descriptor_database_resolves_services_over_one_stream(serve):
    """What Python tools (and grpcurl, likewise) do: one stream, several lookups."""
    endpoint, _ = serve()
    with grpc.insecure_channel(endpoint) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        assert set(database.get_services()) == {HEALTH, reflection.SERVICE, reflection.SERVICE_V1}
        method = pool.FindServiceByName(HEALTH).FindMethodByName("Check")
        assert method.input_type.full_name == "grpc.health.v1.HealthCheckRequest"


def test_idle_streams_take_no_thread(serve):
    """Twenty idle streams on a pool of two threads: others are answered all the same."""
    endpoint, served = serve()
    before = _metric(OPEN)
    with grpc.insecure_channel(endpoint) as channel:
        idle = [Idle(channel) for _ in range(20)]
        try:
            assert len(served) == 20
            assert _metric(OPEN) == before + 20
            fresh = Idle(channel)
            assert _services(fresh.first) == {HEALTH, reflection.SERVICE, reflection.SERVICE_V1}
            assert _services(idle[0].ask()) == _services(fresh.first)  # still served
            fresh.close()
        finally:
            for stream in idle:
                stream.close()
        for stream in idle:
            assert list(stream.responses) == []  # ended cleanly: OK, nothing more
    wait_for(lambda: len(served) == 0, "the streams to be forgotten", LIVENESS)
    assert _metric(OPEN) == before


def test_past_the_limit_the_stream_idle_longest_is_cancelled(serve):
    endpoint, served = serve(limit=3)
    before, opened = _metric(CANCELLED), _metric(OPEN)
    with grpc.insecure_channel(endpoint) as channel:
        first, second, third = Idle(channel), Idle(channel), Idle(channel)
        second.ask()  # now the first is the one idle longest, then the third
        fourth = Idle(channel)
        with pytest.raises(grpc.RpcError) as ended:
            first.ask()
        assert ended.value.code() == grpc.StatusCode.CANCELLED
        fifth = Idle(channel)
        with pytest.raises(grpc.RpcError):
            third.ask()
        assert _services(second.ask()) == _services(fifth.first)
        assert len(served) == 3
        assert _metric(OPEN) == opened + 3
        for stream in (second, fourth, fifth):
            stream.close()
    assert _metric(CANCELLED) == before + 2
    wait_for(lambda: len(served) == 0, "the streams to be forgotten", LIVENESS)
    assert _metric(OPEN) == opened


def test_requests_longer_than_a_name_are_refused(serve):
    """Answers repeat their request: large requests, not read, would pile up."""
    endpoint, served = serve()
    symbol = "x" * reflection.MAX_REQUEST_BYTES
    with grpc.insecure_channel(endpoint) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.ServerReflectionInfo(iter([LIST, request]), timeout=LIVENESS))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    size = request.ByteSize()
    assert f"a reflection request is at most {reflection.MAX_REQUEST_BYTES} bytes, not {size}" in (
        refused.value.details()
    )
    wait_for(lambda: len(served) == 0, "the refused stream to be forgotten", LIVENESS)


def test_a_stream_the_client_cancels_is_forgotten(serve):
    endpoint, served = serve()
    with grpc.insecure_channel(endpoint) as channel:
        stream = Idle(channel)
        assert len(served) == 1
        stream.responses.cancel()
        wait_for(lambda: len(served) == 0, "the cancelled stream to be forgotten", LIVENESS)


def test_the_limit_is_at_least_one():
    pool = Workers(1, 1)
    try:
        with pytest.raises(ValueError, match="must be 1 or more, not 0"):
            reflection.Reflection([HEALTH], pool, limit=0)
    finally:
        pool.shutdown()
