"""The VerifyPassword handler: an unknown user looks like a wrong password, and
argon2's memory and CPU are spent by a bounded number of calls at once."""

import contextlib

import grpc
import pytest

from cluster.service_access import PASSWORD_CHECKS, AccessService
from regraft.v1 import access_pb2
from storage import commands
from tests.unit.test_rpc import Aborted, FakeContext
from tests.unit.test_storage import Replica

SECRET = "correct horse battery"


class Context(FakeContext):
    def __init__(self, seconds_left: float) -> None:
        super().__init__()
        self.seconds_left = seconds_left

    def time_remaining(self) -> float:
        return self.seconds_left


class LocalReads:
    """Reads at whatever this store holds (consistency is Reads' concern, not tested here)."""

    def __init__(self, store) -> None:
        self.store = store

    @contextlib.contextmanager
    def view(self, options, timeout):
        with self.store.read() as view:
            yield view


@pytest.fixture
def service(tmp_path):
    replica = Replica(str(tmp_path / "db"))
    replica.ok(commands.create_user(access_pb2.CreateUserRequest(name="alice", password=SECRET)))
    yield AccessService(None, LocalReads(replica.store), lambda: "")
    replica.store.close()


def verify(service, name: str, password: str, seconds_left: float = 10.0) -> bool:
    request = access_pb2.VerifyPasswordRequest(name=name, password=password)
    return service.VerifyPassword(request, Context(seconds_left)).ok


def test_unknown_users_and_wrong_passwords_get_the_same_answer(service):
    assert verify(service, "alice", SECRET)
    assert not verify(service, "alice", SECRET + "!")
    assert not verify(service, "mallory", SECRET)  # not NOT_FOUND: existence stays hidden
    assert not verify(service, "alice", "x" * (commands.MAX_PASSWORD_LENGTH + 1))


def test_password_checks_beyond_the_bound_wait_then_are_refused(service):
    slots = service._password_checks
    for _ in range(PASSWORD_CHECKS):
        assert slots.acquire(blocking=False)
    context = Context(seconds_left=0.3)
    request = access_pb2.VerifyPasswordRequest(name="alice", password=SECRET)
    with pytest.raises(Aborted):
        service.VerifyPassword(request, context)
    code, details = context.aborted
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{PASSWORD_CHECKS} password checks are already running" in details
    slots.release()
    assert verify(service, "alice", SECRET)  # a slot is free again
