"""Reads.view: how long a read may hold a server thread while it waits; Reads.when_ready:
the same waits without a thread."""

import concurrent.futures
import contextlib
import itertools
import threading
import time

import pytest

from cluster import reads
from cluster.raft import ProposalError, Raft
from cluster.readindex import NotConfirmed
from cluster.reads import Cancelled, Reads, ReadTimeout
from regraft.v1 import command_pb2, registry_pb2
from storage.errors import InvalidArgument
from tests.polling import wait_for

STALE = registry_pb2.STALE


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


class TickingRaft(FakeRaft):
    """FakeRaft with Raft's own deadlines and waiters for an applied revision, and a
    tick thread that expires deadlines as Raft's does."""

    deadline_future = Raft.deadline_future
    settle_when_applied = Raft.settle_when_applied
    _publish_revision = Raft._publish_revision
    _expire = Raft._expire
    _answered_early = Raft._answered_early

    def __init__(self, revision: int, last_log_index: int) -> None:
        super().__init__(revision, last_log_index)
        self._deadlines, self._applied_waiters, self._done_in_heap = [], [], 0
        self._deadline_lock = threading.Lock()
        self._sequence = itertools.count()
        self._stop = threading.Event()
        self._ticks = threading.Thread(target=self._tick, daemon=True)
        self._ticks.start()

    def _tick(self) -> None:
        while not self._stop.wait(0.02):
            self._expire(time.monotonic())

    def apply_up_to(self, revision: int) -> None:
        self.last_log_index = max(self.last_log_index, revision)
        self._publish_revision(revision)

    def close(self) -> None:
        self._stop.set()
        self._ticks.join()


@pytest.fixture
def ticking():
    made = []

    def make(revision: int, last_log_index: int) -> TickingRaft:
        made.append(TickingRaft(revision, last_log_index))
        return made[-1]

    yield make
    for raft in made:
        raft.close()


def test_without_waiting_a_stale_read_is_ready_at_once(ticking):
    ready = Reads(ticking(10, 20)).when_ready(registry_pb2.ReadOptions(consistency=STALE), 30.0)
    assert ready.done() and ready.result() == 10


def test_without_waiting_a_read_is_ready_once_its_revision_is_applied(ticking):
    raft = ticking(10, 20)
    ready = Reads(raft).when_ready(at_least(15), 30.0)
    assert not ready.done()
    raft.apply_up_to(14)
    assert not ready.done()
    raft.apply_up_to(16)
    assert ready.result(timeout=5) == 15
    assert raft._applied_waiters == []


def test_without_waiting_a_revision_past_the_log_fails_after_the_grace(ticking):
    raft = ticking(10, 20)
    started = time.monotonic()
    ready = Reads(raft).when_ready(at_least(10**15), 30.0)
    with pytest.raises(ReadTimeout) as caught:
        ready.result(timeout=10)
    assert time.monotonic() - started < 10  # the grace (0.5 s), not the deadline (30 s)
    assert f"revision {10**15} is past the end of this replica's log (20)" in str(caught.value)
    wait_for(lambda: raft._applied_waiters == [], "the waiter forgotten")


def test_without_waiting_a_revision_in_the_log_that_never_comes_times_out(ticking):
    raft = ticking(10, 20)
    ready = Reads(raft).when_ready(at_least(12), 0.3)
    with pytest.raises(ReadTimeout) as caught:
        ready.result(timeout=10)
    assert "has applied revision 10, not yet 12" in str(caught.value)


def test_without_waiting_a_linearizable_read_waits_for_its_barrier_then_the_apply(ticking):
    raft = ticking(10, 20)
    barrier = concurrent.futures.Future()
    raft.propose = lambda data, timeout: barrier
    linearizable = registry_pb2.ReadOptions(consistency=registry_pb2.LINEARIZABLE)
    first, second = (Reads(raft).when_ready(linearizable, 30.0) for _ in range(2))
    barrier.set_result(command_pb2.Result(revision=21))
    assert not first.done()  # committed at 21, not yet applied here
    raft.apply_up_to(21)
    assert first.result(timeout=5) == 21 and second.result(timeout=5) == 21


def test_without_waiting_an_unconfirmed_read_is_unavailable(ticking):
    raft = ticking(10, 20)
    raft.reads_by_round = True
    unconfirmed = concurrent.futures.Future()
    unconfirmed.set_exception(NotConfirmed("the leader changed while the read waited"))
    raft.read_index = type("Rounds", (), {"request": lambda self: unconfirmed})()
    linearizable = registry_pb2.ReadOptions(consistency=registry_pb2.LINEARIZABLE)
    ready = Reads(raft).when_ready(linearizable, 30.0)
    with pytest.raises(ProposalError, match="read not confirmed: the leader changed"):
        ready.result(timeout=5)


def test_futures_answered_early_do_not_pile_up_behind_one_that_waits(ticking):
    """A done future holds its call until it leaves the heap: with one earlier deadline
    still waiting at the top, the heap keeps only what waits."""
    raft = ticking(10, 20)
    waiting = raft.deadline_future(30.0, ReadTimeout("late"))
    for _ in range(1000):
        raft.deadline_future(3600.0, ReadTimeout("late")).set_result(11)
    wait_for(lambda: len(raft._deadlines) < 100, "the answered futures dropped")
    assert not waiting.done()


def test_without_waiting_only_a_few_reads_wait_for_revisions_past_the_log(ticking, monkeypatch):
    monkeypatch.setattr(reads, "AHEAD_WAITERS", 2)
    raft = ticking(10, 20)
    reads_ = Reads(raft)  # its bound is made from AHEAD_WAITERS
    first, second = (reads_.when_ready(at_least(10**15), 30.0) for _ in range(2))
    with pytest.raises(ReadTimeout, match="2 reads already wait for such revisions"):
        reads_.when_ready(at_least(10**15), 30.0)
    for ready in (first, second):
        with pytest.raises(ReadTimeout):
            ready.result(timeout=10)
    raft.apply_up_to(21)  # their slots are free again
    assert reads_.when_ready(at_least(21), 30.0).result(timeout=5) == 21
