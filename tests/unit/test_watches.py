"""Watch streams without a thread (cluster/watches.py).

A state machine drives the streams' hand-offs between pages read from LMDB and the
hub in every order (sends completed late or never, pool jobs run late, the hub behind
or ahead of a stream) against a list of the events written; then the same streams
over a real gRPC server.
"""

import collections
import hashlib
import itertools
import shutil
import tempfile
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cluster import streams, watches
from cluster.service_registry import RegistryService
from cluster.workers import Workers
from regraft.v1 import registry_pb2, registry_pb2_grpc
from storage import commands, machine
from storage.db import Store
from tests.polling import wait_for

REPOSITORIES = ("a/x", "a/y", "ab/c", "b/x")
PREFIXES = ("", "a", "a/", "ab", "b/x", "c")
LIVENESS = 30


class Applied:
    """What Watches needs of Raft: a store that this test writes to, entry by entry."""

    def __init__(self, path: str) -> None:
        self.store = Store(path, map_size=64 << 20)
        self.revision = 0
        self.applied = threading.Condition()
        self.events: list[tuple[int, str, str]] = []  # (revision, repository, digest)

    def write(self, repository: str | None) -> int:
        """Apply one entry: a blob link in `repository`, or (None) one without events."""
        index = self.revision + 1
        if repository is None:
            command = commands.unlink_blob(
                registry_pb2.UnlinkBlobRequest(repository="none/x", digest=_digest(index))
            )
        else:
            command = commands.link_blob(
                registry_pb2.LinkBlobRequest(repository=repository, digest=_digest(index), size=1)
            )
            self.events.append((index, repository, _digest(index)))
        batch = self.store.batch()
        machine.apply(batch, index, command.SerializeToString())
        batch.commit()
        with self.applied:
            self.revision = index
            self.applied.notify_all()
        return index

    def keep_only(self, revisions: int) -> None:
        """Set the event retention (an entry without events)."""
        retention = commands.set_event_retention(revisions=revisions, max_age_seconds=0)
        batch = self.store.batch()
        machine.apply(batch, self.revision + 1, retention.SerializeToString())
        batch.commit()
        with self.applied:
            self.revision += 1

    def expected(self, prefix: str, position: int, last: int) -> list[tuple[int, str, str]]:
        return [
            e
            for e in self.events
            if e[1].startswith(prefix) and e[0] >= position and not (last and e[0] > last)
        ]


def _digest(index: int) -> str:
    return "sha256:" + hashlib.sha256(str(index).encode()).hexdigest()


def _parsed(data: bytes) -> tuple[int, str, str]:
    event = registry_pb2.Event.FromString(data)
    return event.revision, event.repository, event.digest


class FakeCall:
    """A call whose sends complete when the test says so; it checks that a stream
    keeps grpcio's rules: one send at a time, nothing after the status."""

    def __init__(self) -> None:
        self.received: list[tuple[int, str, str]] = []
        # PROGRESS events: (their revision, how many events had come before).
        self.progress: list[tuple[int, int]] = []
        self.pending = None  # the completion callback of the send under way
        self.status: grpc.StatusCode | None = None
        self.trailers: tuple = ()
        self.cancelled = False
        self.broken = False  # send raises, as grpcio might on a bug or out of memory

    def send(self, data, then) -> bool:
        assert self.pending is None, "a second send while one is under way"
        assert self.status is None, "a send after the status"
        if self.broken:
            raise MemoryError("out of memory")
        if self.cancelled:
            return False
        event = registry_pb2.Event.FromString(data)
        if event.kind == registry_pb2.PROGRESS:
            self.progress.append((event.revision, len(self.received)))
        else:
            self.received.append(_parsed(data))
        self.pending = then
        return True

    def finish(self, code=grpc.StatusCode.OK, details="", trailers=()) -> None:
        assert self.pending is None, "the status would overtake a send"
        if self.status is None and not self.cancelled:
            self.status, self.trailers = code, trailers

    def cancel(self) -> None:
        self.cancelled = True

    def complete(self) -> None:
        then, self.pending = self.pending, None
        then()


class ManualPool:
    """An executor that runs its jobs when the test says so."""

    def __init__(self) -> None:
        self.jobs: collections.deque = collections.deque()

    def submit(self, fn, *args):
        self.jobs.append((fn, args))

    def run_one(self) -> None:
        fn, args = self.jobs.popleft()
        fn(*args)


class WatchesMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="regraft-watches-")
        self.raft = Applied(self.dir)
        self.pool = ManualPool()
        # Small pages and outboxes, so that streams move between pages and the hub.
        self.watches = watches.Watches(
            self.raft, lambda: "", self.pool, outbox=3, page=2, progress_interval=0
        )
        self.streams: list[tuple[watches.Stream, FakeCall, tuple[str, int, int]]] = []

    def teardown(self) -> None:
        self.raft.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(repository=st.sampled_from((*REPOSITORIES, None)), count=st.integers(1, 4))
    def write(self, repository, count):
        for _ in range(count):
            self.raft.write(repository)

    @rule(
        prefix=st.sampled_from(PREFIXES),
        start=st.integers(-1, 3),
        length=st.one_of(st.just(None), st.integers(0, 6)),
        progress=st.booleans(),
    )
    def open(self, prefix, start, length, progress):
        """From now on (start -1) or from a revision near the present; to a last one or
        not; with PROGRESS events or not."""
        position = self.raft.revision + 1 if start < 0 else max(1, self.raft.revision - start)
        last = 0 if length is None else position + length
        call = FakeCall()
        stream = watches.Stream(call, prefix, position, last, progress)
        self.watches.add(stream)
        self.streams.append((stream, call, (prefix, position, last)))

    @precondition(lambda self: any(call.pending for _, call, _ in self.streams))
    @rule(pick=st.integers(0, 1000))
    def complete_a_send(self, pick):
        sending = [call for _, call, _ in self.streams if call.pending]
        sending[pick % len(sending)].complete()

    @precondition(lambda self: self.pool.jobs)
    @rule()
    def run_a_job(self):
        self.pool.run_one()

    @rule()
    def hub(self):
        self.watches.catch_up()

    @rule()
    def progress(self):
        self.watches.report_progress()

    @precondition(lambda self: self.streams)
    @rule(pick=st.integers(0, 1000))
    def cancel(self, pick):
        """As grpcio does: the send under way completes (failed), then the call ends."""
        stream, call, _ = self.streams[pick % len(self.streams)]
        call.cancel()
        if call.pending:
            call.complete()
        self.watches.closed(stream)

    @precondition(lambda self: self.streams)
    @rule(pick=st.integers(0, 1000))
    def break_a_call(self, pick):
        """Its next send raises: that stream is cancelled, and the others go on."""
        self.streams[pick % len(self.streams)][1].broken = True

    @rule()
    def quiesce(self):
        """Let everything run: every stream then has all it asked for so far."""
        moved = True
        while moved:
            moved = False
            self.watches.catch_up()
            while self.pool.jobs:
                self.pool.run_one()
                moved = True
            for _, call, _ in self.streams:
                while call.pending:
                    call.complete()
                    moved = True
        for stream, call, (prefix, position, last) in self.streams:
            if call.status is not None or call.cancelled:
                self.watches.closed(stream)  # what grpcio does once the call is over
            if call.cancelled:
                continue
            assert call.received == self.raft.expected(prefix, position, last)
            if last and last <= self.raft.revision:
                assert call.status == grpc.StatusCode.OK
            else:
                assert call.status is None
        assert len(self.watches) == sum(
            1 for _, call, _ in self.streams if not call.cancelled and call.status is None
        )

    @invariant()
    def what_was_sent_is_in_order_each_once_and_asked_for(self):
        for stream, call, (prefix, position, last) in self.streams:
            expected = self.raft.expected(prefix, position, last)
            assert call.received == expected[: len(call.received)]
            # A PROGRESS event comes after every event up to its revision, and before
            # any past it; its revisions only grow; only for streams that asked.
            assert stream.progress or not call.progress
            revisions = [revision for revision, _ in call.progress]
            assert revisions == sorted(set(revisions))
            for revision, before in call.progress:
                assert before == len([e for e in expected if e[0] <= revision])
                assert position <= revision <= self.raft.revision  # news, and true


TestWatchesMachine = WatchesMachine.TestCase
TestWatchesMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_subscribers_whose_history_is_gone_are_told_out_of_range(tmp_path):
    """The hub fell behind history that is gone (a snapshot was installed): each of its
    subscribers ends with OUT_OF_RANGE and the oldest revision, rather than a gap."""
    raft, pool = Applied(str(tmp_path)), ManualPool()
    hub = watches.Watches(raft, lambda: "", pool)
    raft.keep_only(1000)
    calls = [FakeCall() for _ in PREFIXES]
    for prefix, call in zip(PREFIXES, calls, strict=True):
        hub.add(watches.Stream(call, prefix, raft.revision + 1))
    for _ in range(1100):  # the hub does not run meanwhile
        raft.write("a/x")
    hub.catch_up()
    while pool.jobs:
        pool.run_one()
    for call in calls:
        assert call.received == []
        assert call.status == grpc.StatusCode.OUT_OF_RANGE
        assert 2 < int(dict(call.trailers)["oldest-revision"]) < raft.revision
    raft.store.close()


def test_a_stream_whose_call_ended_before_it_was_added_takes_no_place(tmp_path):
    """grpcio may run the call's end callback (closed) between open's registering it
    and add: cancelled at once by its caller. Such a stream held one of the MAX_OPEN
    places, and counted in the gauge, until the replica restarted."""
    raft = Applied(str(tmp_path))
    hub = watches.Watches(raft, lambda: "", ManualPool(), limit=1)
    try:
        gone, call = watches.Stream(FakeCall()), FakeCall()
        hub.closed(gone)
        hub.add(gone)
        assert len(hub) == 0
        hub.add(watches.Stream(call))  # the one place is free
        assert len(hub) == 1 and call.status is None
    finally:
        raft.store.close()


# -- over gRPC --------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    """served(limit=..., outbox=...) -> (stub, address, raft, watches): the Registry
    service's Watch on a grpc.server over loopback, with the replica's pool."""
    made = []

    def serve(**options):
        raft = Applied(str(tmp_path / f"store{len(made)}"))
        pool = Workers(streams.WORKERS)
        hub = watches.Watches(raft, lambda: "", **options)
        server = grpc.server(pool)
        registry_pb2_grpc.add_RegistryServicer_to_server(
            RegistryService(raft, None, lambda: "", hub), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        hub.start()
        server.start()
        address = f"127.0.0.1:{port}"
        channel = grpc.insecure_channel(address)
        made.append((server, hub, pool, channel, raft))
        return registry_pb2_grpc.RegistryStub(channel), address, raft, hub

    yield serve
    for server, hub, pool, channel, raft in made:
        channel.close()
        server.stop(None).wait()
        hub.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        raft.store.close()


def _read(stream, count: int) -> list[tuple[int, str, str]]:
    return [(e.revision, e.repository, e.digest) for e in itertools.islice(stream, count)]


def test_more_idle_streams_than_threads_all_get_each_event(served):
    """Each stream held a server thread; now 3x as many as the pool has threads stay
    open, a unary call is answered meanwhile, and one write reaches them all."""
    stub, address, raft, hub = served()
    count = 3 * streams.WORKERS
    opened = [stub.Watch(registry_pb2.WatchRequest(), timeout=LIVENESS) for _ in range(count)]
    try:
        wait_for(lambda: len(hub) == count, "every stream to be open")
        with grpc.insecure_channel(address) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            assert check(health_pb2.HealthCheckRequest(), timeout=LIVENESS).status
        revision = raft.write("a/x")
        for stream in opened:
            assert _read(stream, 1) == [(revision, "a/x", _digest(revision))]
    finally:
        for stream in opened:
            stream.cancel()
    wait_for(lambda: len(hub) == 0, "the cancelled streams to be let go")


def test_one_caller_holds_a_share_of_the_streams_not_all(served):
    """One client opening Watch streams in a loop took every slot of the replica."""
    stub, _, _, hub = served(limit=8)
    mine = [stub.Watch(registry_pb2.WatchRequest(), timeout=LIVENESS) for _ in range(2)]
    wait_for(lambda: len(hub) == 2, "two streams to be open")
    with pytest.raises(grpc.RpcError) as refused:
        next(stub.Watch(registry_pb2.WatchRequest(), timeout=LIVENESS))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "ipv4:127.0.0.1 already holds 2 Watch streams" in refused.value.details()
    mine.pop().cancel()
    wait_for(lambda: len(hub) == 1, "the cancelled stream to be let go")
    mine.append(stub.Watch(registry_pb2.WatchRequest(from_revision=1), timeout=LIVENESS))
    wait_for(lambda: len(hub) == 2, "its share to be taken again")
    for stream in mine:
        stream.cancel()


def test_past_the_limit_a_stream_is_refused_until_one_ends(served):
    stub, _, raft, hub = served(limit=3, caller_share=1)
    opened = [stub.Watch(registry_pb2.WatchRequest(), timeout=LIVENESS) for _ in range(3)]
    wait_for(lambda: len(hub) == 3, "three streams to be open")
    with pytest.raises(grpc.RpcError) as refused:
        next(stub.Watch(registry_pb2.WatchRequest(), timeout=LIVENESS))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "already serves 3 Watch streams" in refused.value.details()
    opened.pop().cancel()
    wait_for(lambda: len(hub) == 2, "the cancelled stream to be let go")
    again = stub.Watch(registry_pb2.WatchRequest(from_revision=1), timeout=LIVENESS)
    revision = raft.write("b/x")
    assert _read(again, 1) == [(revision, "b/x", _digest(revision))]
    for stream in (*opened, again):
        stream.cancel()


def test_a_client_that_stops_reading_gets_everything_once_it_reads_again(served):
    """Its events fill its HTTP/2 window (kept small here), then its outbox; past
    OUTBOX it leaves the hub, and reads pages once it reads again: nothing lost,
    nothing twice, in order, while a stream beside it keeps up."""
    stub, address, raft, _ = served(outbox=8)
    small_window = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
    with grpc.insecure_channel(address, options=small_window) as other:
        slow = registry_pb2_grpc.RegistryStub(other).Watch(
            registry_pb2.WatchRequest(from_revision=1), timeout=LIVENESS * 4
        )
        keeping_up = stub.Watch(
            registry_pb2.WatchRequest(from_revision=1, repository_prefix="a/"), timeout=LIVENESS
        )
        events = []
        for i in range(3000):
            raft.write(REPOSITORIES[i % len(REPOSITORIES)])
            if i % 100 == 99:
                events += _read(keeping_up, 50)  # half of each hundred is under a/
        assert events == raft.expected("a/", 1, 0)
        assert _read(slow, 3000) == raft.expected("", 1, 0)
        slow.cancel()
        keeping_up.cancel()


def test_a_forgotten_revision_is_out_of_range_naming_the_oldest(served):
    stub, _, raft, _ = served()
    raft.keep_only(1000)
    for _ in range(1100):
        raft.write("a/x")
    with pytest.raises(grpc.RpcError) as gone:
        next(stub.Watch(registry_pb2.WatchRequest(from_revision=2), timeout=LIVENESS))
    assert gone.value.code() == grpc.StatusCode.OUT_OF_RANGE
    oldest = int(dict(gone.value.trailing_metadata())["oldest-revision"])
    assert 2 < oldest <= raft.revision - 1000 + 1
    assert f"the oldest available is {oldest}" in gone.value.details()
    first = next(stub.Watch(registry_pb2.WatchRequest(from_revision=oldest), timeout=LIVENESS))
    assert first.revision == oldest


def test_a_range_ends_by_itself_and_deadlines_end_the_rest(served):
    stub, _, raft, hub = served()
    first = raft.write("a/x")
    ranged = stub.Watch(
        registry_pb2.WatchRequest(from_revision=first, to_revision=first + 2), timeout=LIVENESS
    )
    short = stub.Watch(registry_pb2.WatchRequest(), timeout=1)
    for _ in range(3):
        raft.write("a/y")
    assert [e.revision for e in ranged] == [first, first + 1, first + 2]
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as expired:
        list(short)
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < LIVENESS
    wait_for(lambda: len(hub) == 0, "the ended streams to be let go")


def test_a_quiet_prefix_hears_how_far_it_has_everything(served):
    """progress_notify: nothing under the prefix changes, yet the stream learns a recent
    revision to resume from; a stream that did not ask hears nothing."""
    stub, _, raft, hub = served(progress_interval=0.2)
    asked = stub.Watch(
        registry_pb2.WatchRequest(repository_prefix="quiet/", progress_notify=True),
        timeout=LIVENESS,
    )
    silent = stub.Watch(registry_pb2.WatchRequest(repository_prefix="never/"), timeout=3)
    wait_for(lambda: len(hub) == 2, "both streams to be open")
    written = [raft.write("a/x") for _ in range(5)][-1]
    for event in asked:
        assert event.kind == registry_pb2.PROGRESS and not event.repository
        if event.revision >= written:
            break
    raft.write("quiet/app")
    following = next(event for event in asked if event.kind != registry_pb2.PROGRESS)
    assert (following.repository, following.revision) == ("quiet/app", written + 1)
    asked.cancel()
    with pytest.raises(grpc.RpcError) as ended:
        next(silent)
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
