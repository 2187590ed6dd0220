"""Writes are answered once applied, with no thread waiting for the commit
(rpc.write, cluster/unary.py): over a real grpcio server and client, with a Raft
whose proposals the test settles when it likes."""

import concurrent.futures
import threading

import grpc
import pytest

from cluster import metrics, rpc
from cluster.raft import ProposalError
from cluster.service_registry import RegistryService
from regraft.v1 import command_pb2, registry_pb2, registry_pb2_grpc
from tests.polling import wait_for

DIGEST = "sha256:" + "a" * 64
LEADER = "10.0.0.9:7401"


class HeldRaft:
    """Proposals are kept, unanswered, until the test settles them."""

    def __init__(self) -> None:
        self.proposed: list[tuple[command_pb2.Command, concurrent.futures.Future]] = []
        self._lock = threading.Lock()

    def status(self) -> dict:
        return {}

    def propose(self, data: bytes, timeout: float) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self.proposed.append((command_pb2.Command.FromString(data), future))
        return future

    def count(self) -> int:
        with self._lock:
            return len(self.proposed)


@pytest.fixture
def served(unary_server):
    """(stub, raft, channel): Registry served as in a replica (cluster/unary.py)."""
    raft = HeldRaft()
    service = RegistryService(raft, None, lambda: LEADER, None)
    endpoint = unary_server(registry_pb2_grpc.add_RegistryServicer_to_server, service)
    with grpc.insecure_channel(endpoint) as channel:
        yield registry_pb2_grpc.RegistryStub(channel), raft, channel
    # A write left waiting would stay counted against rpc.MAX_PENDING in later tests.
    for _, future in raft.proposed:
        if not future.done():
            future.set_exception(ProposalError("the test is over", definite=False))


def put_tag(stub, tag: str) -> grpc.Future:
    request = registry_pb2.PutTagRequest(repository="app", tag=tag, digest=DIGEST)
    return stub.PutTag.future(request, timeout=30)


def requests(method: str, code: str) -> float:
    return metrics.grpc_requests.labels(method, code)._value.get()


def test_many_more_writes_wait_for_their_commit_than_there_are_threads(served):
    stub, raft, _ = served
    ok_before, in_flight_before = requests("PutTag", "OK"), metrics.grpc_in_flight._value.get()
    calls = [put_tag(stub, f"t{i}") for i in range(24)]
    # With a thread waiting per write, at most 4 would have been proposed by now.
    wait_for(lambda: raft.count() == 24, "every write proposed, none answered")
    assert not any(call.done() for call in calls)
    for command, future in raft.proposed:
        future.set_result(command_pb2.Result(revision=100 + int(command.put_tag.tag[1:])))
    answers = [call.result() for call in calls]
    assert [a.revision for a in answers] == [100 + i for i in range(24)]
    assert requests("PutTag", "OK") == ok_before + 24
    assert metrics.grpc_in_flight._value.get() == in_flight_before


def settle_one(raft: HeldRaft, result=None, error=None) -> command_pb2.Command:
    wait_for(lambda: raft.count() == 1, "the write proposed")
    command, future = raft.proposed[0]
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
    return command


def test_a_refused_write_gets_its_code_and_the_oci_code(served):
    stub, raft, _ = served
    call = put_tag(stub, "latest")
    refused = command_pb2.Result(
        code=command_pb2.Result.FAILED_PRECONDITION,
        oci_code="TAG_CONFLICT",
        message="tag 'latest' is at another digest",
    )
    settle_one(raft, result=refused)
    with pytest.raises(grpc.RpcError) as caught:
        call.result()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == "TAG_CONFLICT: tag 'latest' is at another digest"
    assert ("oci-code", "TAG_CONFLICT") in caught.value.trailing_metadata()


def test_a_write_whose_outcome_is_unknown_is_unavailable_with_the_leader(served):
    stub, raft, _ = served
    call = put_tag(stub, "latest")
    settle_one(raft, error=ProposalError("no answer within the deadline", definite=False))
    with pytest.raises(grpc.RpcError) as caught:
        call.result()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "may or may not have applied" in caught.value.details()
    assert ("leader", LEADER) in caught.value.trailing_metadata()


def test_bad_input_is_refused_before_anything_is_proposed(served):
    stub, raft, channel = served
    bad = registry_pb2.PutTagRequest(repository="App", tag="latest", digest=DIGEST)
    with pytest.raises(grpc.RpcError) as caught:
        stub.PutTag(bad, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "repository" in caught.value.details()
    # Bytes that are no PutTagRequest: refused before the method sees them.
    raw = channel.unary_unary("/regraft.v1.Registry/PutTag")
    with pytest.raises(grpc.RpcError) as caught:
        raw(b"\xff\xff\xff", timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raft.count() == 0


def test_a_write_with_no_time_left_is_refused_and_not_proposed(served, monkeypatch):
    stub, raft, _ = served
    # As a call with under 50 ms left sees it. Not 30: the deadline the server sees
    # may be a little later than the client's (grpc-timeout is rounded up), and a
    # write with a millisecond left is proposed.
    monkeypatch.setattr(rpc, "_MARGIN", 3600.0)
    before = requests("PutTag", "DEADLINE_EXCEEDED")
    with pytest.raises(grpc.RpcError) as caught:
        put_tag(stub, "late").result()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "nothing was written" in caught.value.details()
    # Counted as the answer goes out: the caller may read it first.
    wait_for(lambda: requests("PutTag", "DEADLINE_EXCEEDED") == before + 1, "the refusal counted")
    assert raft.count() == 0


def test_a_caller_gone_before_the_commit_leaves_nothing_behind(served):
    stub, raft, _ = served
    in_flight_before = metrics.grpc_in_flight._value.get()
    call = put_tag(stub, "latest")
    wait_for(lambda: raft.count() == 1, "the write proposed")
    call.cancel()
    raft.proposed[0][1].set_result(command_pb2.Result(revision=7))
    wait_for(
        lambda: metrics.grpc_in_flight._value.get() == in_flight_before, "the call counted done"
    )
    # The server goes on serving.
    second = put_tag(stub, "next")
    wait_for(lambda: raft.count() == 2, "the next write proposed")
    raft.proposed[1][1].set_result(command_pb2.Result(revision=8))
    assert second.result().revision == 8


def test_writes_past_the_pending_limit_are_refused_at_once(served, monkeypatch):
    stub, raft, _ = served
    monkeypatch.setattr(rpc, "MAX_PENDING", 3)
    calls = [put_tag(stub, f"t{i}") for i in range(3)]
    wait_for(lambda: raft.count() == 3, "three writes waiting")
    with pytest.raises(grpc.RpcError) as caught:
        put_tag(stub, "one-more").result()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "3 writes and reads already wait" in caught.value.details()
    for _, future in raft.proposed:
        future.set_result(command_pb2.Result(revision=1))
    assert all(call.result().revision == 1 for call in calls)
    later = put_tag(stub, "later")  # room again
    wait_for(lambda: raft.count() == 4, "the next write proposed")
    raft.proposed[3][1].set_result(command_pb2.Result(revision=2))
    assert later.result().revision == 2
