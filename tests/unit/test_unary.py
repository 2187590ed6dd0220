"""Methods that answer without a thread, served straight off grpcio's core
(cluster/unary.py): over a real grpcio server and client, with a servicer that
answers when the test says."""

import functools
import os
import queue
import subprocess
import sys
import threading

import grpc
import pytest
from prometheus_client import REGISTRY

from cluster import arrivals, auth, metrics, rpc, unary
from cluster.unary import UnaryServer
from cluster.workers import Workers
from regraft.v1 import registry_pb2, registry_pb2_grpc
from tests.held_calls import (
    calls_without_message,
    ended_streams,
    held_back_calls,
    unread_calls,
)
from tests.polling import wait_for

LIVENESS = 10.0  # generous: only a hang fails
DIGEST = "sha256:" + "a" * 64
READER_TOKEN = "reader-token"


def _nonblocking(method):
    method.experimental_non_blocking = True
    return method


class Held(registry_pb2_grpc.RegistryServicer):
    """GetManifest calls wait in `calls` until the test answers them; PutTag and
    DeleteTag (marked rpc.pooled) answer at once, noting the thread they ran on;
    ListTags is an ordinary grpcio method."""

    def __init__(self) -> None:
        self.calls: queue.Queue = queue.Queue()
        self.tags: list[tuple[str, str]] = []  # (tag, thread) of each PutTag

    @_nonblocking
    def GetManifest(self, request, context):
        if request.reference == "watch":
            gone = threading.Event()
            context.add_callback(gone.set)
            self.calls.put((request, context, gone))
        else:
            self.calls.put((request, context, None))

    @_nonblocking
    def PutTag(self, request, context):
        self.tags.append((request.tag, threading.current_thread().name))
        context.respond(registry_pb2.PutTagResponse(revision=len(self.tags)).SerializeToString())

    @_nonblocking
    @rpc.pooled
    def DeleteTag(self, request, context):
        self.tags.append((request.tag, threading.current_thread().name))
        context.respond(registry_pb2.DeleteTagResponse().SerializeToString())

    def ListTags(self, request, context):
        return registry_pb2.ListTagsResponse(tags=[type(context).__name__])


def _requests(method: str, code: str) -> float:
    return (
        REGISTRY.get_sample_value("regraft_grpc_requests_total", {"method": method, "code": code})
        or 0.0
    )


@pytest.fixture
def held(unary_server):
    """(servicer, stub, channel): Held served as in a replica, callers unchecked."""
    servicer = Held()
    endpoint = unary_server(registry_pb2_grpc.add_RegistryServicer_to_server, servicer)
    with grpc.insecure_channel(endpoint) as channel:
        yield servicer, registry_pb2_grpc.RegistryStub(channel), channel


def _get(stub, reference: str) -> grpc.Future:
    request = registry_pb2.GetManifestRequest(repository="app", reference=reference)
    return stub.GetManifest.future(request, timeout=LIVENESS)


def test_many_more_calls_wait_than_there_are_threads_and_are_answered_later(held):
    servicer, stub, _ = held
    calls = [_get(stub, f"t{i}") for i in range(24)]  # the grpcio pool has 4 threads
    waiting = [servicer.calls.get(timeout=LIVENESS) for _ in range(24)]
    assert not any(call.done() for call in calls)
    for request, context, _ in waiting:
        response = registry_pb2.GetManifestResponse(digest=request.reference, revision=7)
        context.respond(response.SerializeToString())
    answers = sorted(call.result().digest for call in calls)
    assert answers == sorted(f"t{i}" for i in range(24))


def test_a_call_ends_with_its_status_and_trailers(held):
    servicer, stub, _ = held
    call = _get(stub, "latest")
    _, context, _ = servicer.calls.get(timeout=LIVENESS)
    context.finish(grpc.StatusCode.NOT_FOUND, "no such tag", (("oci-code", "MANIFEST_UNKNOWN"),))
    context.respond(b"")  # a second answer is ignored
    with pytest.raises(grpc.RpcError) as caught:
        call.result()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "no such tag"
    assert ("oci-code", "MANIFEST_UNKNOWN") in caught.value.trailing_metadata()


def test_a_large_request_is_handled_on_the_pool(held):
    servicer, stub, _ = held
    for tag in ("small", "large" * 20_000):
        stub.PutTag(registry_pb2.PutTagRequest(tag=tag), timeout=LIVENESS)
    small, large = (thread for _, thread in servicer.tags)
    assert small.endswith("(_serve)")  # grpcio's serving thread, where the events come
    assert large == "grpc_0"


def test_a_method_marked_pooled_is_handled_on_the_pool_whatever_its_size(held):
    """Hashing a password on the serving thread held every other call for 0.2 s."""
    servicer, stub, _ = held
    stub.DeleteTag(registry_pb2.DeleteTagRequest(tag="small"), timeout=LIVENESS)
    assert servicer.tags == [("small", "grpc_0")]


def test_a_large_request_after_the_pool_stopped_is_unavailable(unary_server):
    pool = Workers(2)
    pool.shutdown()
    servicer = Held()
    endpoint = unary_server(registry_pb2_grpc.add_RegistryServicer_to_server, servicer, pool=pool)
    with grpc.insecure_channel(endpoint) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.PutTag(registry_pb2.PutTagRequest(tag="large" * 20_000), timeout=LIVENESS)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert stub.PutTag(registry_pb2.PutTagRequest(tag="small"), timeout=LIVENESS).revision
    assert [tag for tag, _ in servicer.tags] == ["small"]


def test_large_answers_a_connection_does_not_read_are_bounded(unary_server, monkeypatch):
    monkeypatch.setattr(unary, "MAX_UNREAD_PER_CONNECTION", 7 << 20)
    monkeypatch.setattr(unary, "MAX_UNREAD", 7 << 20)
    servicer = Held()
    endpoint = unary_server(registry_pb2_grpc.add_RegistryServicer_to_server, servicer)
    large = registry_pb2.GetManifestResponse(content=b"x" * (3 << 20)).SerializeToString()
    request = registry_pb2.GetManifestRequest(repository="app", reference="big")
    unread = metrics.grpc_unread_bytes._value.get()
    conn = unread_calls(endpoint, "/regraft.v1.Registry/GetManifest", request, 3)
    try:
        codes = [servicer.calls.get(timeout=LIVENESS)[1].respond(large) for _ in range(3)]
        assert codes == [grpc.StatusCode.OK] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert ended_streams(conn, 1) == {5}  # the third ended at once; two wait to be read
        assert metrics.grpc_unread_bytes._value.get() == unread + 2 * len(large)
    finally:
        conn.close()
    # Closing the connection released what it held: another client gets a large answer.
    wait_for(lambda: metrics.grpc_unread_bytes._value.get() == unread, "unread answers freed")
    with grpc.insecure_channel(endpoint) as channel:
        call = _get(registry_pb2_grpc.RegistryStub(channel), "big")
        _, context, _ = servicer.calls.get(timeout=LIVENESS)
        assert context.respond(large) == grpc.StatusCode.OK
        assert len(call.result().content) == 3 << 20


def test_soon_runs_on_the_serving_thread(held):
    """A read settled on another thread (Raft's) is served on the serving thread."""
    servicer, stub, _ = held
    call = _get(stub, "settled elsewhere")
    _, context, _ = servicer.calls.get(timeout=LIVENESS)
    ran: queue.Queue = queue.Queue()
    settler = threading.Thread(
        target=context.soon, args=(lambda: ran.put(threading.current_thread().name),)
    )
    settler.start()
    settler.join(LIVENESS)
    assert ran.get(timeout=LIVENESS).endswith("(_serve)")
    context.respond(registry_pb2.GetManifestResponse(digest=DIGEST).SerializeToString())
    assert call.result().digest == DIGEST


def test_reads_settled_together_run_on_the_serving_thread_after_one_batch(held, monkeypatch):
    """The Raft thread starts one batch for the reads a round settled, not one each;
    they run in order, and one that fails does not keep the others from running."""
    servicer, stub, _ = held
    call = _get(stub, "settled in a round")
    _, context, _ = servicer.calls.get(timeout=LIVENESS)
    empty_batches = []
    start = unary._Queue.start

    def counted(queue_, call_, operations, then):
        if not operations:
            empty_batches.append(then)
        return start(queue_, call_, operations, then)

    monkeypatch.setattr(unary._Queue, "start", counted)
    ran: queue.Queue = queue.Queue()
    busy, settled = threading.Event(), threading.Event()

    def run(n: int) -> None:
        if n == 0:  # the serving thread is busy while the others are settled
            busy.set()
            settled.wait(LIVENESS)
        ran.put((n, threading.current_thread().name))
        if n == 3:
            raise RuntimeError("a read that fails")

    context.soon(functools.partial(run, 0))

    def settle_round() -> None:
        busy.wait(LIVENESS)
        for n in range(1, 20):
            context.soon(functools.partial(run, n))
        settled.set()

    settler = threading.Thread(target=settle_round)
    settler.start()
    settler.join(LIVENESS)
    runs = [ran.get(timeout=LIVENESS) for _ in range(20)]
    assert [n for n, _ in runs] == list(range(20))
    assert all(thread.endswith("(_serve)") for _, thread in runs)
    assert len(empty_batches) == 2  # the first read's, and one for the other 19
    context.respond(registry_pb2.GetManifestResponse(digest=DIGEST).SerializeToString())
    assert call.result().digest == DIGEST


def test_other_methods_stay_on_grpcio(held):
    _, stub, _ = held
    answer = stub.ListTags(registry_pb2.ListTagsRequest(repository="app"), timeout=LIVENESS)
    assert answer.tags == ["_Context"]  # grpcio's servicer context: grpcio served it


def test_a_request_that_does_not_parse_is_refused_before_the_method(held):
    servicer, _, channel = held
    before = _requests("PutTag", "INVALID_ARGUMENT")
    raw = channel.unary_unary("/regraft.v1.Registry/PutTag")
    with pytest.raises(grpc.RpcError) as caught:
        raw(b"\xff\xff\xff", timeout=LIVENESS)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a valid /regraft.v1.Registry/PutTag message" in caught.value.details()
    assert _requests("PutTag", "INVALID_ARGUMENT") == before + 1
    assert servicer.tags == []


def test_a_caller_gone_runs_the_callbacks(held):
    servicer, stub, _ = held
    call = _get(stub, "watch")
    _, context, gone = servicer.calls.get(timeout=LIVENESS)
    assert not gone.is_set()
    call.cancel()
    assert gone.wait(LIVENESS)
    context.respond(b"")  # answering a call that is over does no harm
    assert stub.PutTag(registry_pb2.PutTagRequest(tag="next"), timeout=LIVENESS).revision == 1


def test_callers_are_checked_before_their_message_is_read(unary_server, tmp_path):
    callers = tmp_path / "callers.toml"
    callers.write_text(
        f'[[token]]\nname = "viewer"\nrole = "reader"\nsha256 = "{auth.token_hash(READER_TOKEN)}"\n'
    )
    servicer = Held()
    checks = auth.AuthInterceptor(auth.CallersFile(str(callers)), "cluster-secret")
    endpoint = unary_server(registry_pb2_grpc.add_RegistryServicer_to_server, servicer, checks)
    reader = (("authorization", f"Bearer {READER_TOKEN}"),)
    denied_before = _requests("PutTag", "PERMISSION_DENIED")
    with grpc.insecure_channel(endpoint) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        call = stub.GetManifest.future(
            registry_pb2.GetManifestRequest(reference="v1"), timeout=LIVENESS, metadata=reader
        )
        _, context, _ = servicer.calls.get(timeout=LIVENESS)
        assert context.caller.actor == "token:viewer"
        context.respond(registry_pb2.GetManifestResponse(revision=3).SerializeToString())
        assert call.result().revision == 3
        with pytest.raises(grpc.RpcError) as caught:
            stub.PutTag(registry_pb2.PutTagRequest(tag="x"), timeout=LIVENESS, metadata=reader)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "needs role registry" in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            stub.PutTag(registry_pb2.PutTagRequest(tag="x"), timeout=LIVENESS)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert servicer.tags == []
    assert _requests("PutTag", "PERMISSION_DENIED") == denied_before + 1


def test_calls_waiting_for_their_message_count_among_the_replicas(unary_server):
    waiting = arrivals.Arrivals(limit=3)
    servicer = Held()
    endpoint = unary_server(
        registry_pb2_grpc.add_RegistryServicer_to_server, servicer, waiting=waiting
    )
    cancelled = metrics.grpc_awaiting_cancelled._value.get()
    unimplemented = _requests("PutTag", "UNIMPLEMENTED")
    held_calls = held_back_calls(endpoint, "/regraft.v1.Registry/PutTag", 5)
    try:
        wait_for(
            lambda: metrics.grpc_awaiting_cancelled._value.get() == cancelled + 2,
            "two of five held-back calls cancelled",
            LIVENESS,
        )
        assert len(waiting) == 3
        with grpc.insecure_channel(endpoint) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            assert stub.PutTag(registry_pb2.PutTagRequest(tag="t"), timeout=LIVENESS).revision
    finally:
        held_calls.close()
    wait_for(lambda: len(waiting) == 0, "no call waiting", LIVENESS)
    # Cancelled, by the server or by their connection's end: not refusals of the caller.
    assert _requests("PutTag", "UNIMPLEMENTED") == unimplemented


def test_a_call_ended_without_its_message_is_unimplemented_and_counted(unary_server):
    servicer = Held()
    endpoint = unary_server(registry_pb2_grpc.add_RegistryServicer_to_server, servicer)
    before = _requests("PutTag", "UNIMPLEMENTED")
    conn = calls_without_message(endpoint, "/regraft.v1.Registry/PutTag", 3)
    try:
        assert ended_streams(conn, 3) == {1, 3, 5}
    finally:
        conn.close()
    wait_for(lambda: _requests("PutTag", "UNIMPLEMENTED") == before + 3, "3 refusals counted")
    assert servicer.tags == []


def test_a_caller_check_that_fails_ends_the_call_at_once(unary_server):
    class Broken(auth.AuthInterceptor):
        def check(self, method, metadata, auth_context):
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    servicer = Held()
    checks = Broken(None, "cluster-secret")
    endpoint = unary_server(registry_pb2_grpc.add_RegistryServicer_to_server, servicer, checks)
    with grpc.insecure_channel(endpoint) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.PutTag(registry_pb2.PutTagRequest(tag="x"), timeout=LIVENESS)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert servicer.tags == []


def served_alone():
    """(pool, server, served, servicer, endpoint): Held served as in a replica, on a
    server of the test's own, which the test stops."""
    pool = Workers(2)
    server = grpc.server(pool)
    served = UnaryServer(server, arrivals.Arrivals())
    servicer = Held()
    served.add_servicer(registry_pb2_grpc.add_RegistryServicer_to_server, servicer)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    served.start()
    return pool, server, served, servicer, f"127.0.0.1:{port}"


def test_stopping_ends_a_call_that_waits():
    pool, server, served, servicer, endpoint = served_alone()
    assert served.methods == [
        f"/regraft.v1.Registry/{name}" for name in ("DeleteTag", "GetManifest", "PutTag")
    ]
    with grpc.insecure_channel(endpoint) as channel:
        call = _get(registry_pb2_grpc.RegistryStub(channel), "watch")
        _, _, gone = servicer.calls.get(timeout=LIVENESS)
        stopped = threading.Thread(target=lambda: (server.stop(0.1).wait(), served.stop()))
        stopped.start()
        stopped.join(LIVENESS)
        assert not stopped.is_alive()
        assert gone.is_set()  # its method learnt that it ended
        with pytest.raises(grpc.RpcError):
            call.result()
    pool.shutdown(wait=True)


def test_an_answer_started_as_the_server_stops_is_settled_by_stop():
    """grpcio's serving thread ends with the server's own calls: an answer to one of
    ours started after that completes on the queue, and `stop()` handles it."""
    pool, server, served, servicer, endpoint = served_alone()
    before = REGISTRY.get_sample_value("regraft_grpc_unread_answer_bytes")
    with grpc.insecure_channel(endpoint) as channel:
        call = _get(registry_pb2_grpc.RegistryStub(channel), "late")
        _, context, _ = servicer.calls.get(timeout=LIVENESS)
        server.stop(0.1).wait()
        assert context.respond(b"x" * unary.LARGE_ANSWER) == grpc.StatusCode.OK  # counted
        served.stop()
        assert REGISTRY.get_sample_value("regraft_grpc_unread_answer_bytes") == before
        with pytest.raises(grpc.RpcError):
            call.result()
    pool.shutdown(wait=True)


_ANSWER_AFTER_STOP = """
import grpc
from regraft.v1 import registry_pb2_grpc
from tests.unit.test_unary import _get, served_alone

pool, server, served, servicer, endpoint = served_alone()
with grpc.insecure_channel(endpoint) as channel:
    call = _get(registry_pb2_grpc.RegistryStub(channel), "late")
    _, context, _ = servicer.calls.get(timeout=10)
    server.stop(0.1).wait()
    served.stop()
    context.respond(b"")  # as a write settled while Raft closes
    context.finish(grpc.StatusCode.UNAVAILABLE, "stopping")
    print("answered after stop:", call.exception().code().name)
"""


def test_a_call_answered_after_the_server_stopped_is_dropped():
    """grpcio's core aborts the process if an operation is started on a completion
    queue that is shut down: so in a process of its own."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(
        [sys.executable, "-c", _ANSWER_AFTER_STOP],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "answered after stop: UNAVAILABLE" in done.stdout
