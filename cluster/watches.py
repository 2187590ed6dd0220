"""Watch streams that hold no thread.

A Watch may stay open for hours and be idle most of that time: front-ends watch to
keep their caches fresh, operators tail the audit trail. grpcio's synchronous server
would give each stream a thread for its whole life, which capped a replica at a few
dozen. Here a stream holds no thread (cluster/nonblocking.py):

- A stream that is behind (it asked for history, or its client reads more slowly than
  events come) reads a page of events from LMDB, and sends them one message at a
  time: each send's completion starts the next, and the page's last starts the next
  page. Pages are read on one thread of their own, in turn: streams scanning a long
  history with a narrow prefix (pages that find nothing and go on at once) slow each
  other, not unary calls, whose pool runs two at a time.
- A stream that has caught up subscribes to the hub instead. The hub's thread wakes
  when Raft applies, reads the new events from LMDB once, and hands each subscriber
  those under its repository prefix. A subscriber with OUTBOX events not yet sent
  (its client reads slowly) leaves the hub and goes back to pages: a slow client costs
  bounded memory and never holds up the others.

Events reach a stream in revision order, each once, whichever way they come: the hub
hands out only events past a subscriber's position, and a stream subscribes only if
the hub has not yet handed out anything past its position. A stream that asked for
progress_notify and has sent nothing for PROGRESS_INTERVAL gets a PROGRESS event
naming the revision up to which it has everything (the hub's, once its outbox is
empty), so that a consumer of a quiet prefix can resume from a recent revision. At
most MAX_OPEN streams
are open on a replica; one more is refused with RESOURCE_EXHAUSTED (an idle stream is
what a Watch is, so none is cancelled to make room).
"""

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Protocol

import grpc

from cluster import auth, metrics, nonblocking, rpc, streams
from regraft.v1 import registry_pb2
from storage import names, registry
from storage.db import Store
from storage.errors import InvalidArgument

log = logging.getLogger(__name__)

MAX_OPEN = 1024
PAGE = 256  # events read from LMDB at a time, by a stream or by the hub
OUTBOX = 1024  # events waiting to be sent, past which a stream leaves the hub
PROGRESS_INTERVAL = 10.0  # seconds without a message before a PROGRESS event


class Applied(Protocol):
    """What the hub needs of Raft (cluster/raft.py): the state, the last revision
    applied to it, and a condition notified when that moves."""

    store: Store
    revision: int
    applied: threading.Condition


class Sending(Protocol):
    """Where a stream's events go: a call (nonblocking.Call)."""

    def send(self, data: bytes, then: Callable[[], None]) -> bool: ...

    def finish(
        self,
        code: grpc.StatusCode = grpc.StatusCode.OK,
        details: str = "",
        trailers: tuple[tuple[str, str], ...] = (),
    ) -> None: ...

    def cancel(self) -> None: ...


class Stream:
    """One Watch stream: where it is, and what waits to be sent. Guarded by Watches'
    lock once added."""

    def __init__(
        self,
        call: Sending,
        prefix: str = "",
        position: int = 0,
        last: int = 0,
        progress: bool = False,
        holder: str = "",
    ):
        self.call = call
        self.holder = holder  # its caller, for its share (auth.caller_key)
        self.prefix = prefix
        self.position = position  # the first revision not yet in the outbox or sent
        self.last = last  # 0: no end
        self.progress = progress  # PROGRESS events when quiet
        self.quiet_since = time.monotonic()  # when it last sent, or opened
        self.reported = 0  # the revision of its last PROGRESS event
        self.outbox: collections.deque[bytes] = collections.deque()
        self.code = grpc.StatusCode.OK  # how it ended, for the metrics
        self.sending = False
        self.filling = False
        self.subscribed = False
        self.ended = False

    def wants(self, revision: int) -> bool:
        return revision >= self.position and not (self.last and revision > self.last)


class Watches:
    """The Watch streams of one replica, and the hub that feeds those caught up."""

    def __init__(
        self,
        raft: Applied,
        leader_hint: Callable[[], str],
        pool: Executor | None = None,
        limit: int = MAX_OPEN,
        caller_share: int = streams.CALLER_SHARE,
        outbox: int = OUTBOX,
        page: int = PAGE,
        progress_interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self._raft = raft
        # Where pages are read: one thread, streams in turn.
        self._pool = pool or ThreadPoolExecutor(1, thread_name_prefix="watch-pages")
        self._leader_hint = leader_hint
        self._limit = limit
        self._shares = streams.Shares(limit, "Watch", caller_share)
        self._outbox = outbox
        self._page = page
        self._progress_interval = progress_interval
        self._lock = threading.Lock()
        self._open: set[Stream] = set()
        self._prefixes: dict[str, set[Stream]] = {}  # subscribers by repository prefix
        self._lengths: list[int] = []  # the prefixes' lengths, shortest first
        self._ranged: set[Stream] = set()  # subscribers with a last revision
        self._seen = raft.revision  # the hub has handed out every event up to here
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch-hub", daemon=True)

    def __len__(self) -> int:
        return len(self._open)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the hub and the page reads; streams still open get no more events (stop
        the server first)."""
        self._stopping.set()
        with self._raft.applied:
            self._raft.applied.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- opening and ending -----------------------------------------------------------

    def open(self, request: registry_pb2.WatchRequest, context: grpc.ServicerContext) -> None:
        """Start a stream and return: its events are sent from callbacks and the pool."""
        stream = Stream(nonblocking.Call(context), holder=auth.caller_key(context))
        counted = rpc.Counted("Watch").start()

        def ended() -> None:
            self.closed(stream)
            counted.code = stream.code if stream.call.statused else grpc.StatusCode.CANCELLED
            counted.end()

        if not context.add_callback(ended):
            ended()  # the call is already over
            return
        stream.progress = request.progress_notify
        try:
            stream.prefix, stream.position, stream.last = self._arguments(request)
        except InvalidArgument as error:
            with self._lock:
                self._fail(stream, error)
            return
        self.add(stream)

    def _arguments(self, request: registry_pb2.WatchRequest) -> tuple[str, int, int]:
        prefix = names.validate_repository_prefix(request.repository_prefix)
        position = request.from_revision or self._raft.revision + 1
        last = request.to_revision
        if last and last < position:
            first = (
                f"from_revision {position}"
                if request.from_revision
                else f"the next revision, {position} (from_revision 0 means from now on)"
            )
            raise InvalidArgument("to_revision", f"{last} is before {first}: an empty range")
        return prefix, position, last

    def add(self, stream: Stream) -> None:
        """Serve a stream, or refuse it if MAX_OPEN are open."""
        with self._lock:
            if stream.ended:  # its caller left before it got here: closed() ran
                return
            refusal = self._shares.refusal(stream.holder)
            if len(self._open) >= self._limit:
                refusal = (
                    f"this replica already serves {self._limit} Watch streams: "
                    "end one, or use another replica"
                )
            if refusal is not None:
                self._fail(stream, rpc.Exhausted(refusal))
                return
            self._open.add(stream)
            self._shares.take(stream.holder)
            metrics.watch_streams.inc()
            stream.reported = max(stream.reported, stream.position - 1)  # no news yet
            self._pump(stream)

    def closed(self, stream: Stream) -> None:
        """The call is over (finished, cancelled, past its deadline)."""
        with self._lock:
            stream.ended = True
            stream.outbox.clear()
            if stream.subscribed:
                self._unsubscribe(stream, stream.position)
            if stream in self._open:
                self._open.remove(stream)
                self._shares.give_back(stream.holder)
                metrics.watch_streams.dec()

    def _fail(self, stream: Stream, error: Exception) -> None:
        """End the stream with the status for `error` (lock held, nothing being sent)."""
        stream.code, message, trailers = rpc.failure(error, self._leader_hint)
        stream.call.finish(stream.code, message, trailers)

    # -- one stream -------------------------------------------------------------------

    def _pump(self, stream: Stream) -> None:
        """Take the stream's next step, unless one is under way (lock held). Never
        raises: a stream that cannot go on is cancelled, and the others go on."""
        try:
            self._step(stream)
        except Exception:
            log.exception("cannot go on with a Watch stream: cancelling it")
            stream.sending = stream.filling = False
            with contextlib.suppress(Exception):
                stream.call.cancel()

    def _step(self, stream: Stream) -> None:
        if stream.ended or stream.sending or stream.filling:
            return
        if stream.outbox:
            data = stream.outbox.popleft()
            stream.quiet_since = time.monotonic()
            stream.sending = stream.call.send(data, lambda: self._sent(stream))
        elif stream.subscribed:
            return
        elif stream.last and stream.position > stream.last:
            stream.call.finish()
        elif stream.position > self._seen:
            self._subscribe(stream)
        else:
            stream.filling = True
            try:
                self._pool.submit(self._fill, stream)
            except RuntimeError:  # the pool is shut down: the replica is stopping
                stream.filling = False
                stream.call.cancel()

    def _sent(self, stream: Stream) -> None:  # on grpcio's serving thread
        with self._lock:
            stream.sending = False
            self._pump(stream)

    def _fill(self, stream: Stream) -> None:  # on the pool
        """Read the stream's next page of events from LMDB."""
        if stream.ended:  # read without the lock: at worst one page read for nothing
            with self._lock:
                stream.filling = False
            return
        try:
            with self._raft.store.read() as view:
                oldest = registry.events_floor(view)
                if stream.position < oldest:
                    raise rpc.OutOfRange(stream.position, oldest)
                found, position = registry.events(view, stream.position, stream.prefix, self._page)
            data = [e.SerializeToString() for e in found if stream.wants(e.revision)]
        except Exception as error:
            with self._lock:
                stream.filling = False
                if not stream.ended:
                    self._fail(stream, error)
            return
        with self._lock:
            stream.filling = False
            if not stream.ended:
                stream.outbox.extend(data)
                stream.position = position
                self._pump(stream)

    # -- the hub ----------------------------------------------------------------------

    def _subscribe(self, stream: Stream) -> None:
        stream.subscribed = True
        group = self._prefixes.setdefault(stream.prefix, set())
        group.add(stream)
        if len(group) == 1:
            self._lengths = sorted({len(p) for p in self._prefixes})
        if stream.last:
            self._ranged.add(stream)

    def _unsubscribe(self, stream: Stream, position: int) -> None:
        """Leave the hub, every event before `position` in the outbox or sent."""
        stream.subscribed = False
        stream.position = max(stream.position, position)
        group = self._prefixes[stream.prefix]
        group.discard(stream)
        if not group:
            del self._prefixes[stream.prefix]
            self._lengths = sorted({len(p) for p in self._prefixes})
        self._ranged.discard(stream)

    def _leave_all(self, upto: int) -> None:
        """The hub skips to `upto`; its subscribers go back to reading pages from where
        it was (lock held)."""
        position, self._seen = self._seen + 1, max(self._seen, upto)
        for stream in [s for group in self._prefixes.values() for s in group]:
            self._unsubscribe(stream, position)
            self._pump(stream)

    def _run(self) -> None:
        applied = self._raft.applied
        while not self._stopping.is_set():
            with applied:
                applied.wait_for(
                    lambda: self._raft.revision > self._seen or self._stopping.is_set(), 1.0
                )
            try:
                self.catch_up()
                self.report_progress()
            except Exception:
                log.exception("the Watch hub failed; its streams read pages instead")
                with self._lock:
                    self._leave_all(self._raft.revision)

    def catch_up(self) -> None:
        """Hand the subscribers every event applied since the last time."""
        while True:
            with self._lock:
                seen = self._seen
                if not self._prefixes:  # no subscribers: nothing to read
                    self._seen = max(seen, self._raft.revision)
                    return
            if self._raft.revision <= seen:
                return
            with self._raft.store.read() as view:
                complete = registry.events_floor(view) <= seen + 1
                found, following = registry.events(view, seen + 1, "", self._page)
            upto = following - 1
            with self._lock:
                if not complete:  # history lost (a snapshot was installed): each finds out
                    self._leave_all(upto)
                    continue
                woken = self._hand_out(found, upto)
                self._seen = upto
            # Sends start one stream at a time, so that grpcio's serving thread (which
            # completes sends) takes the lock in between.
            for stream in woken:
                with self._lock:
                    if stream.subscribed and (
                        len(stream.outbox) >= self._outbox or (stream.last and stream.last <= upto)
                    ):  # a slow reader goes back to pages; a range ends
                        self._unsubscribe(stream, upto + 1)
                    self._pump(stream)

    def _hand_out(self, found: list[registry_pb2.Event], upto: int) -> list[Stream]:
        """Put the events of revisions up to `upto` in the subscribers' outboxes; the
        streams that have something to do (lock held)."""
        matched: dict[str, list[tuple[int, bytes]]] = {}  # by subscribers' prefix
        for event in found:
            repository, data = event.repository, None
            for length in self._lengths:
                if length > len(repository):
                    break
                prefix = repository[:length]
                if prefix in self._prefixes:
                    data = data or event.SerializeToString()
                    matched.setdefault(prefix, []).append((event.revision, data))
        woken = [s for s in self._ranged if s.last <= upto]
        for prefix, events in matched.items():
            first, last = events[0][0], events[-1][0]
            every = [data for _, data in events]
            for stream in self._prefixes[prefix]:
                if stream.wants(first) and stream.wants(last):
                    stream.outbox.extend(every)
                else:
                    stream.outbox.extend(d for revision, d in events if stream.wants(revision))
                woken.append(stream)
        return list(dict.fromkeys(woken))

    def report_progress(self) -> None:
        """Send a PROGRESS event to each subscriber that asked for them, has sent
        nothing for the interval, and has everything up to a newer revision."""
        now = time.monotonic()
        with self._lock:
            for group in self._prefixes.values():
                for stream in group:
                    upto = max(self._seen, stream.position - 1)
                    if (
                        stream.progress
                        and not (stream.outbox or stream.sending)
                        and now - stream.quiet_since >= self._progress_interval
                        and upto > stream.reported
                    ):
                        stream.reported = upto
                        event = registry_pb2.Event(revision=upto, kind=registry_pb2.PROGRESS)
                        stream.outbox.append(event.SerializeToString())
                        self._pump(stream)
