"""The password handlers: an unknown user looks like a wrong password, and argon2's
memory and CPU are spent by a bounded number of calls at once (setting a password too)."""

import contextlib
import time

import grpc
import pytest

from cluster import rpc
from cluster.service_access import PASSWORD_CHECKS, PASSWORD_WAITERS, AccessService
from regraft.v1 import access_pb2
from storage import access, commands
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
    def view(self, options, timeout, active):
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


def refusal(service, seconds_left: float) -> tuple[grpc.StatusCode, str]:
    context = Context(seconds_left)
    request = access_pb2.VerifyPasswordRequest(name="alice", password=SECRET)
    with pytest.raises(Aborted):
        service.VerifyPassword(request, context)
    return context.aborted


def test_password_checks_beyond_the_bound_wait_briefly_then_are_refused(service):
    slots = service._password_checks
    for _ in range(PASSWORD_CHECKS):
        assert slots.acquire(blocking=False)
    started = time.monotonic()
    code, details = refusal(service, seconds_left=3600)  # no deadline: waits 1 s at most
    assert time.monotonic() - started < 10
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{PASSWORD_CHECKS} password hashes are being computed" in details
    slots.release()
    assert verify(service, "alice", SECRET)  # a slot is free again


def test_callers_beyond_the_waiting_room_are_refused_at_once(service):
    """Waiting holds a server thread: only a few may, the rest are refused at once."""
    callers = service._password_callers
    for _ in range(PASSWORD_CHECKS + PASSWORD_WAITERS):
        assert callers.acquire(blocking=False)
    started = time.monotonic()
    code, _ = refusal(service, seconds_left=3600)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert time.monotonic() - started < 0.5  # did not wait for a check slot
    callers.release()
    assert verify(service, "alice", SECRET)


def test_unknown_users_cost_the_same_argon2_work(service, monkeypatch):
    """Without the dummy check, an unknown user would answer at once: a timing oracle."""
    hashes = []

    class Counting:
        def __init__(self, hasher) -> None:
            self._hasher = hasher

        def verify(self, password_hash, password):
            hashes.append(password_hash)
            return self._hasher.verify(password_hash, password)

        def __getattr__(self, name):
            return getattr(self._hasher, name)

    monkeypatch.setattr(access, "_PASSWORDS", Counting(access._PASSWORDS))
    assert not verify(service, "mallory", SECRET)
    assert not verify(service, "alice", SECRET + "!")
    assert len(hashes) == 2 and all(h.startswith("$argon2id$") for h in hashes)


@pytest.mark.parametrize("method", ["CreateUser", "UpdateUser"])
def test_setting_a_password_takes_a_turn_and_is_served_off_the_serving_thread(service, method):
    """Eight callers creating users held a replica's other calls for a second each."""
    handler = getattr(AccessService, method)
    assert handler.served_on_pool
    build = handler.__wrapped__  # the command, before rpc.write proposes it
    request = getattr(access_pb2, f"{method}Request")
    slots = service._password_checks
    for _ in range(PASSWORD_CHECKS):
        assert slots.acquire(blocking=False)
    with pytest.raises(rpc.Exhausted):
        build(service, request(name="bob", password=SECRET), Context(0.2))
    assert build(service, request(name="bob"), Context(0.2)).put_user.name == "bob"
    slots.release()
    command = build(service, request(name="bob", password=SECRET), Context(10.0))
    assert command.put_user.password_hash.startswith("$argon2id$")
