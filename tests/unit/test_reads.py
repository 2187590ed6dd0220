"""Reads.view: how long a read may hold a server thread while it waits."""

import concurrent.futures
import contextlib
import threading
import time

import pytest

from cluster import reads
from cluster.reads import Cancelled, Reads, ReadTimeout
from regraft.v1 import registry_pb2
from storage.errors import InvalidArgument


class FakeRaft:
    """What Reads touches of cluster.raft.Raft: applied revision, status, store."""

    def __init__(self, revision: int, last_log_index: int) -> None:
        self.applied = threading.Condition()
        self.revision = revision
        self.last_log_index = last_log_index
        self.store = self
        self.reads_by_round = False  # barriers (cluster/readindex.py: tested apart)

    def status(self) -> dict:
        return {"last_log_index": self.last_log_index, "leader_commit_idx": 0,
                "at": time.monotonic()}  # fmt: skip

    def apply_up_to(self, revision: int) -> None:
        with self.applied:
            self.last_log_index = max(self.last_log_index, revision)
            self.revision = revision
            self.applied.notify_all()

    @contextlib.contextmanager
    def read(self):
        yield f"state at {self.revision}"


def at_least(revision: int) -> registry_pb2.ReadOptions:
    return registry_pb2.ReadOptions(consistency=registry_pb2.STALE, min_revision=revision)


def read(reads_: Reads, revision: int, timeout: float = 30.0, active=lambda: True) -> str:
    with reads_.view(at_least(revision), timeout, active) as view:
        return view


def later(seconds: float, action) -> threading.Thread:
    thread = threading.Timer(seconds, action)
    thread.start()
    return thread


@pytest.fixture(autouse=True)
def short_grace(monkeypatch):
    monkeypatch.setattr(reads, "AHEAD_GRACE", 0.5)


def test_an_entry_in_the_log_is_waited_for_until_applied():
    raft = FakeRaft(revision=10, last_log_index=20)
    later(0.3, lambda: raft.apply_up_to(15))
    assert read(Reads(raft), 15) == "state at 15"


def test_a_revision_past_the_log_is_waited_for_only_briefly():
    """Nobody was given revision 10**15: the caller's 30 s are not spent here."""
    raft = FakeRaft(revision=10, last_log_index=20)
    started = time.monotonic()
    with pytest.raises(ReadTimeout) as caught:
        read(Reads(raft), 10**15)
    assert time.monotonic() - started < 10  # the grace (0.5 s), not the deadline (30 s)
    assert f"revision {10**15} is past the end of this replica's log (20)" in str(caught.value)


def test_a_revision_that_arrives_within_the_grace_is_served():
    raft = FakeRaft(revision=10, last_log_index=20)
    later(0.2, lambda: raft.apply_up_to(25))
    assert read(Reads(raft), 25) == "state at 25"


def test_only_a_few_reads_wait_for_revisions_past_the_log(monkeypatch):
    monkeypatch.setattr(reads, "AHEAD_WAITERS", 2)
    monkeypatch.setattr(reads, "AHEAD_GRACE", 30.0)
    raft = FakeRaft(revision=10, last_log_index=20)
    reads_ = Reads(raft)
    gone = threading.Event()
    outcomes = []

    def waiter():
        try:
            read(reads_, 10**15, active=lambda: not gone.is_set())
        except Exception as e:  # what ended the wait
            outcomes.append(type(e))

    waiters = [threading.Thread(target=waiter) for _ in range(2)]
    for thread in waiters:
        thread.start()
    time.sleep(0.5)  # both hold their slots
    started = time.monotonic()
    with pytest.raises(ReadTimeout) as caught:
        read(reads_, 10**15)
    assert time.monotonic() - started < 10
    assert "2 reads already wait for such revisions" in str(caught.value)
    gone.set()
    for thread in waiters:
        thread.join(10)
    assert outcomes == [Cancelled, Cancelled]
    # Their slots are free again: a revision just past the log is waited for.
    later(0.2, lambda: raft.apply_up_to(21))
    assert read(reads_, 21) == "state at 21"


def test_a_read_stops_waiting_when_its_caller_goes_away():
    raft = FakeRaft(revision=10, last_log_index=20)  # entry 12 is never applied
    gone = threading.Event()
    later(0.3, gone.set)
    started = time.monotonic()
    with pytest.raises(Cancelled):
        read(Reads(raft), 12, active=lambda: not gone.is_set())
    assert time.monotonic() - started < 10


def test_a_linearizable_read_stops_waiting_for_its_barrier_when_its_caller_goes_away():
    raft = FakeRaft(revision=10, last_log_index=20)
    never = concurrent.futures.Future()
    raft.propose = lambda data, timeout: never  # a barrier that never commits
    gone = threading.Event()
    later(0.3, gone.set)
    options = registry_pb2.ReadOptions(consistency=registry_pb2.LINEARIZABLE)
    with pytest.raises(Cancelled), Reads(raft).view(options, 30.0, lambda: not gone.is_set()):
        pass


def test_an_unknown_consistency_is_refused():
    options = registry_pb2.ReadOptions(consistency=7)
    with pytest.raises(InvalidArgument) as caught, Reads(FakeRaft(1, 1)).view(options, 1.0):
        pass
    assert caught.value.field == "read.consistency"
    assert "7 is not a consistency (LINEARIZABLE, STALE)" in str(caught.value)
