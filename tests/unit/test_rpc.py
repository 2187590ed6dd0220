"""How exceptions of the layers below become gRPC statuses a front-end can act on."""

import grpc
import pytest

from cluster import rpc
from cluster.raft import ProposalError
from cluster.reads import ReadTimeout
from storage.errors import FailedPrecondition, InvalidArgument, NotFound


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self):
        self.trailers = ()
        self.aborted = None

    def is_active(self):
        return True

    def set_trailing_metadata(self, trailers):
        self.trailers = trailers

    def abort(self, code, details):
        self.aborted = (code, details)
        raise Aborted


class Servicer:
    def __init__(self, error, leader="10.0.0.2:7401"):
        self.error = error
        self._leader = leader

    def leader_hint(self):
        return self._leader

    @rpc.handler
    def Unary(self, request, context):
        raise self.error

    @rpc.handler
    def Stream(self, request, context):
        yield 1
        raise self.error


def status_of(error, leader="10.0.0.2:7401", streaming=False):
    context = FakeContext()
    servicer = Servicer(error, leader)
    with pytest.raises(Aborted):
        if streaming:
            list(servicer.Stream(None, context))
        else:
            servicer.Unary(None, context)
    return context.aborted[0], context.aborted[1], dict(context.trailers)


def test_invalid_argument_names_the_field_and_its_oci_code_if_any():
    error = InvalidArgument("tag", "'-x' must start with a letter", "TAG_INVALID")
    code, details, trailers = status_of(error)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "tag: '-x' must start with a letter"
    assert trailers == {"oci-code": "TAG_INVALID"}
    _, _, trailers = status_of(InvalidArgument("n", "must not be negative, got -1"))
    assert trailers == {}


def test_refusals_carry_the_oci_code():
    code, details, trailers = status_of(NotFound("MANIFEST_UNKNOWN", "no such manifest"))
    assert (code, trailers["oci-code"]) == (grpc.StatusCode.NOT_FOUND, "MANIFEST_UNKNOWN")
    assert "no such manifest" in details
    code, _, trailers = status_of(FailedPrecondition("TAG_CONFLICT", "tag moved"))
    assert (code, trailers["oci-code"]) == (grpc.StatusCode.FAILED_PRECONDITION, "TAG_CONFLICT")


def test_unavailable_points_at_the_leader_and_says_whether_it_applied():
    code, details, trailers = status_of(ProposalError("no answer", definite=False))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert trailers["leader"] == "10.0.0.2:7401"
    assert "may or may not have applied" in details and "10.0.0.2:7401" in details
    code, details, trailers = status_of(ReadTimeout("behind"), leader="")
    assert code == grpc.StatusCode.UNAVAILABLE and "no leader known" in details
    assert "leader" not in trailers
    _, details, _ = status_of(ProposalError("read not confirmed: no leader known", True), leader="")
    assert details == "read not confirmed: no leader known"  # not twice
    # The leader itself (a min_revision it has not reached): not sent back to itself.
    code, details, trailers = status_of(ReadTimeout("behind"), leader=None)
    assert code == grpc.StatusCode.UNAVAILABLE and details == "behind; this replica is the leader"
    assert "leader" not in trailers


def test_a_compacted_watch_revision_is_out_of_range_with_the_oldest_one():
    code, details, trailers = status_of(rpc.OutOfRange(5, 120), streaming=True)
    assert code == grpc.StatusCode.OUT_OF_RANGE
    assert trailers["oldest-revision"] == "120"
    assert "5" in details and "120" in details


def test_a_full_watch_limit_is_resource_exhausted():
    code, details, _ = status_of(rpc.Exhausted("2 password checks"), streaming=True)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "2 password checks" in details


def test_a_bug_is_internal_not_a_crash():
    code, details, _ = status_of(KeyError("boom"))
    assert code == grpc.StatusCode.INTERNAL and "boom" in details
