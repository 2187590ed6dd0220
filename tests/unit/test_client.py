"""Client.call's retries (cluster/client.py), against fake replicas in this process."""

import threading
import time

import grpc
import pytest

from cluster import client as client_module
from cluster.client import Client
from cluster.workers import Workers
from regraft.v1 import registry_pb2

DIGEST = "sha256:" + "a" * 64
PUT_TAG = registry_pb2.PutTagRequest(repository="a", tag="t", digest=DIGEST)
UNKNOWN = "no answer within the deadline: outcome unknown (may or may not have applied)"


class FakeReplica:
    """Answers PutTag as `answer(context)` says; notes the time each call had left."""

    def __init__(self, answer) -> None:
        self.left: list[float] = []
        self.endpoint = ""  # once served
        self._lock = threading.Lock()
        self._answer = answer

    def add_to(self, server: grpc.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            self._put_tag,
            request_deserializer=registry_pb2.PutTagRequest.FromString,
            response_serializer=registry_pb2.PutTagResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("regraft.v1.Registry", {"PutTag": handler}),)
        )

    def _put_tag(self, request, context):
        with self._lock:
            self.left.append(context.time_remaining())
        return self._answer(context)


def _late_unknown(context):
    """A leader that lost its quorum: the write's outcome is unknown at the deadline."""
    time.sleep(max(0.0, context.time_remaining() - 0.03))
    context.abort(grpc.StatusCode.UNAVAILABLE, UNKNOWN)


def _like_a_replica(context):
    if context.time_remaining() < 0.05:
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "nothing was written")
    return registry_pb2.PutTagResponse(revision=7)


@pytest.fixture
def replicas(health_server):
    """(unknown, other): two fake replicas, each on a server of its own."""
    made = [FakeReplica(_late_unknown), FakeReplica(_like_a_replica)]
    for replica in made:
        replica.endpoint = health_server(Workers(4), replica.add_to)
    return made


def test_a_retry_with_too_little_time_left_is_not_made(replicas):
    """The last attempt's 'may or may not have applied' is what the caller learns, not
    a refusal of a retry that had no time left."""
    unknown, other = replicas
    client = Client([unknown.endpoint, other.endpoint], timeout=0.5, attempt_timeout=0.45)
    with pytest.raises(grpc.RpcError) as caught:
        client.call("PutTag", PUT_TAG)
    # UNKNOWN, or the client's own deadline when the fake answered late: both say the
    # outcome is unknown; "nothing was written" would be wrong.
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert caught.value.details() != "nothing was written"
    assert all(left >= client_module.MIN_RETRY_SECONDS - 0.02 for left in other.left)


def test_a_retry_with_time_left_goes_to_the_next_replica(replicas):
    unknown, other = replicas
    client = Client([unknown.endpoint, other.endpoint], timeout=2.0, attempt_timeout=0.3)
    answer = client.call("PutTag", PUT_TAG)
    assert answer.revision == 7
    assert len(unknown.left) == 1 and len(other.left) == 1


def test_closing_a_client_ends_its_call_in_flight_and_refuses_the_next(replicas):
    """A writer stopped while every replica is down must not wait out its deadline."""
    unknown = replicas[0]
    client = Client([unknown.endpoint], timeout=3.0, attempt_timeout=3.0)
    outcome = []

    def call():
        try:
            client.call("PutTag", PUT_TAG)
        except grpc.RpcError as error:
            outcome.append(error.code())

    caller = threading.Thread(target=call)
    caller.start()
    while not unknown.left:
        time.sleep(0.01)
    client.close()
    caller.join(10)
    assert outcome == [grpc.StatusCode.CANCELLED]  # not the fake's answer at the deadline
    with pytest.raises(ValueError, match="closed"):
        client.call("PutTag", PUT_TAG)


def test_referrers_walks_every_page_and_pages_of_older_replicas_too(monkeypatch):
    """`last` says where a page ended (a filtered page may be empty); a replica of an
    older release leaves it empty, and its pages go on from their last descriptor."""
    digests = [f"sha256:{i:064x}" for i in range(5)]
    asked = []

    def page(repository, digest, artifact_type, consistency, n=0, last="", min_revision=0):
        assert min_revision == 42  # every page is read at least that fresh
        asked.append(last)
        rest = [d for d in digests if d > last]
        if last == digests[1]:  # a new replica's filtered page: nothing matched
            return registry_pb2.GetReferrersResponse(more=True, last=digests[3])
        if last == "":  # an older replica's: no `last`
            found = [registry_pb2.Descriptor(digest=d) for d in rest[:2]]
            return registry_pb2.GetReferrersResponse(manifests=found, more=True)
        found = [registry_pb2.Descriptor(digest=d) for d in rest]
        return registry_pb2.GetReferrersResponse(manifests=found, last=rest[-1])

    with Client(["127.0.0.1:1"]) as client:
        monkeypatch.setattr(client, "get_referrers", page)
        walked = [
            d.digest for d in client.referrers("acme/app", "sha256:" + "f" * 64, min_revision=42)
        ]
    assert walked == [digests[0], digests[1], digests[4]]
    assert asked == ["", digests[1], digests[3]]


def test_get_referrers_asks_for_the_revision_it_is_given(monkeypatch):
    sent = []
    with Client(["127.0.0.1:1"]) as client:
        monkeypatch.setattr(client, "call", lambda method, request: sent.append(request))
        client.get_referrers("acme/app", "sha256:" + "f" * 64, min_revision=7)
    assert sent[0].read.min_revision == 7
