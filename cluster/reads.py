"""Read consistency: STALE, min_revision, and LINEARIZABLE.

A partitioned leader believes in itself for a while, so a linearizable read is never
served on a leader's word. From machine version 4 a round of heartbeats confirms it
(cluster/readindex.py). Before, during an upgrade from older releases, it is confirmed
through the log: a no-op barrier is committed and the read waits until this replica
has applied it. One barrier serves every read that arrived before it was proposed;
reads arriving while it is in flight wait for the next one (a barrier proposed before
a read began could be ordered before a write that completed before the read began).

Registry and Access reads wait without a thread (`when_ready`, rpc.read): a future
settled by the Raft thread once the read index is confirmed and applied here, and
the read then served on the gRPC serving thread (unary.Call.soon); a read for a
revision past every entry this replica knows of (a revision nobody was given, or a
replica cut off) fails after AHEAD_GRACE, and a waiter is forgotten at its deadline.
Other reads (VerifyPassword, Cluster) wait in `view()`, holding one of the server's
threads (cluster/workers.py), so their waits are bounded by more than the caller's
deadline: such a read stops waiting when its caller goes away, and one for a
revision past the log waits at most AHEAD_GRACE, with at most AHEAD_WAITERS such
reads at once. Otherwise about 64 such reads would leave no thread for anything
else, health checks and Status included, until their deadlines.
"""

import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from cluster import metrics, workers
from cluster.raft import ProposalError, Raft, settle
from cluster.readindex import NotConfirmed
from regraft.v1 import registry_pb2
from storage import commands
from storage.db import View
from storage.errors import InvalidArgument

BARRIER_TIMEOUT = 10.0
# A revision past this replica's log: how long a read waits for it to arrive, and how
# many reads may wait so at once (the others are answered at once).
AHEAD_GRACE = 2.0
AHEAD_WAITERS = 8
# How often a waiting read looks whether its caller is still there.
_SLICE = 0.1
_CONSISTENCIES = frozenset(registry_pb2.Consistency.values())


class ReadTimeout(Exception):
    """This replica did not reach the requested revision in time; try another."""


class Cancelled(Exception):
    """The caller went away while its read waited."""


class Reads:
    def __init__(self, raft: Raft) -> None:
        self._raft = raft
        self._lock = threading.Lock()
        self._next: concurrent.futures.Future | None = None
        self._in_flight = False
        self._barrier = commands.barrier().SerializeToString()
        self._joined = 0
        self._ahead = threading.BoundedSemaphore(AHEAD_WAITERS)

    @contextlib.contextmanager
    def view(
        self,
        options: registry_pb2.ReadOptions,
        timeout: float,
        active: Callable[[], bool] = lambda: True,
    ) -> Iterator[View]:
        """A view of this replica's state that is as fresh as `options` asks; waits end
        at `timeout` seconds, or once `active()` (the caller is still there) is false."""
        _check(options)
        deadline = time.monotonic() + timeout
        wanted = options.min_revision
        if not wanted and options.consistency == registry_pb2.LINEARIZABLE:
            wanted = self._linearizable_revision(timeout, active)
        if wanted:
            with workers.blocking():
                self._wait_applied(wanted, deadline, active)
        with self._raft.store.read() as view:
            yield view

    def current(self) -> contextlib.AbstractContextManager[View]:
        """A view of this replica's state now."""
        return self._raft.store.read()

    def when_ready(
        self, options: registry_pb2.ReadOptions, timeout: float
    ) -> concurrent.futures.Future:
        """view() without a thread that waits: a future of the revision a read with
        `options` is served at, done once this replica has applied it (at once for a
        STALE read), or failed with ReadTimeout or ProposalError within `timeout`."""
        _check(options)
        wanted = options.min_revision
        if not wanted and options.consistency != registry_pb2.LINEARIZABLE:
            done: concurrent.futures.Future = concurrent.futures.Future()
            done.set_result(self._raft.revision)
            return done
        if wanted:
            applied = self._raft.revision
            problem = "" if wanted <= applied else _beyond_the_log(wanted, self._raft.status())
            if problem:  # worth a short wait only, for a few: it may be on its way here
                if not self._ahead.acquire(blocking=False):
                    raise ReadTimeout(_crowded(problem))
                timeout = min(timeout, AHEAD_GRACE)
            ready = self._raft.deadline_future(
                timeout,
                ReadTimeout(
                    f"{problem}; {_ELSEWHERE}" if problem else _not_reached(applied, wanted)
                ),
            )
            if problem:
                ready.add_done_callback(lambda _: self._ahead.release())
            self._raft.settle_when_applied(wanted, ready)
            return ready
        ready = self._raft.deadline_future(
            timeout, ProposalError("read not confirmed within the deadline", True)
        )

        def confirmed(index: concurrent.futures.Future) -> None:
            error = index.exception()
            if isinstance(error, NotConfirmed):
                error = ProposalError(f"read not confirmed: {error}", True)
            if error is not None:
                settle(ready, error=error)
            else:
                self._raft.settle_when_applied(index.result(), ready)

        self._index().add_done_callback(confirmed)
        return ready

    def _index(self) -> concurrent.futures.Future:
        """A future of the index a linearizable read may be served at."""
        if self._raft.reads_by_round:
            return self._raft.read_index.request()
        with self._lock:
            if self._next is None:
                self._next = concurrent.futures.Future()
            future = self._next
            self._joined += 1
            waiting = None if self._in_flight else self._take()
        if waiting is not None:
            self._propose(waiting)
        return future

    def _wait_applied(self, wanted: int, deadline: float, active: Callable[[], bool]) -> None:
        started = time.monotonic()
        ahead = False  # holds one of the AHEAD_WAITERS slots
        try:
            with self._raft.applied:
                while self._raft.revision < wanted:
                    now = time.monotonic()
                    if now >= deadline:
                        raise ReadTimeout(_not_reached(self._raft.revision, wanted))
                    if not active():
                        raise Cancelled()
                    if not ahead:
                        ahead = self._past_the_log(wanted, started)
                    elif now - started >= AHEAD_GRACE:
                        self._past_the_log(wanted, started)
                    self._raft.applied.wait(min(_SLICE, deadline - now))
        finally:
            if ahead:
                self._ahead.release()

    def _past_the_log(self, wanted: int, started: float) -> bool:
        """Whether `wanted` is past every entry this replica knows of (taking a slot to
        wait for it), by a status copied after `started`; raises when it may not wait."""
        status = self._raft.status()
        problem = _beyond_the_log(wanted, status)
        if not problem or status.get("at", 0.0) <= started:
            return False  # in the log here (applied soon), or not known yet
        if time.monotonic() - started >= AHEAD_GRACE:
            raise ReadTimeout(f"{problem}; {_ELSEWHERE}")
        if not self._ahead.acquire(blocking=False):
            raise ReadTimeout(_crowded(problem))
        return True

    def _linearizable_revision(self, timeout: float, active: Callable[[], bool]) -> int:
        try:
            return _result(self._index(), timeout, active, "read not confirmed")
        except NotConfirmed as e:
            raise ProposalError(f"read not confirmed: {e}", True) from None

    def _take(self) -> concurrent.futures.Future:
        """The reads that the next barrier serves (called with the lock held)."""
        waiting, self._next = self._next, None
        self._in_flight = True
        metrics.read_barriers.inc()
        metrics.read_barrier_batch.observe(self._joined)
        self._joined = 0
        return waiting

    def _propose(self, waiting: concurrent.futures.Future) -> None:
        # A fixed deadline: each read bounds its own wait, and one impatient caller must
        # not pass a short deadline on to the barriers that follow.
        proposal = self._raft.propose(self._barrier, BARRIER_TIMEOUT)
        proposal.add_done_callback(lambda done: self._landed(waiting, done))

    def _landed(self, waiting, proposal) -> None:
        with self._lock:
            self._in_flight = False
            following = self._take() if self._next is not None else None
        if following is not None:
            self._propose(following)
        error = proposal.exception()
        if error is not None:
            waiting.set_exception(error)
        else:
            waiting.set_result(proposal.result().revision)


def _check(options: registry_pb2.ReadOptions) -> None:
    if options.consistency not in _CONSISTENCIES:
        raise InvalidArgument(
            "read.consistency",
            f"{options.consistency} is not a consistency "
            f"({', '.join(registry_pb2.Consistency.keys())})",
        )


_ELSEWHERE = "read from another replica"


def _beyond_the_log(wanted: int, status: dict) -> str:
    """Why `wanted` cannot be applied here soon, if it is past the log in `status`."""
    known = max(status.get("last_log_index") or 0, status.get("leader_commit_idx") or 0)
    if wanted <= known:
        return ""
    return (
        f"revision {wanted} is past the end of this replica's log ({known}): no such "
        "revision was written, or this replica is cut off from the leader"
    )


def _crowded(problem: str) -> str:
    return (
        f"{problem}, and {AHEAD_WAITERS} reads already wait for such revisions here; {_ELSEWHERE}"
    )


def _not_reached(applied: int, wanted: int) -> str:
    return (
        f"this replica has applied revision {applied}, not yet {wanted}, within the "
        "deadline: retry, or read from another replica"
    )


def _result(future: concurrent.futures.Future, timeout: float, active, what: str):
    """The future's result within `timeout`, or Cancelled once the caller went away."""
    deadline = time.monotonic() + timeout
    with workers.blocking():
        while True:
            try:
                return future.result(max(0.0, min(_SLICE, deadline - time.monotonic())))
            except concurrent.futures.TimeoutError:
                if time.monotonic() >= deadline:
                    raise ProposalError(f"{what} within the deadline", True) from None
                if not active():
                    raise Cancelled() from None
