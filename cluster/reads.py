"""Read consistency: STALE, min_revision, and LINEARIZABLE through a shared log barrier.

PySyncObj has no ReadIndex and no leases, and a partitioned leader believes in itself
for a while, so a linearizable read is confirmed through the log: a no-op barrier is
committed and the read waits until this replica has applied it. One barrier serves
every read that arrived before it was proposed; reads arriving while it is in flight
wait for the next one (a barrier proposed before a read began could be ordered before
a write that completed before the read began).
"""

import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Iterator

from cluster import metrics
from cluster.raft import ProposalError, Raft
from regraft.v1 import registry_pb2
from storage import commands
from storage.db import View

BARRIER_TIMEOUT = 10.0


class ReadTimeout(Exception):
    """This replica did not reach the requested revision within the deadline."""


class Reads:
    def __init__(self, raft: Raft) -> None:
        self._raft = raft
        self._lock = threading.Lock()
        self._next: concurrent.futures.Future | None = None
        self._in_flight = False
        self._barrier = commands.barrier().SerializeToString()
        self._joined = 0

    @contextlib.contextmanager
    def view(self, options: registry_pb2.ReadOptions, timeout: float) -> Iterator[View]:
        """A view of this replica's state that is as fresh as `options` asks."""
        deadline = time.monotonic() + timeout
        wanted = options.min_revision
        if not wanted and options.consistency == registry_pb2.LINEARIZABLE:
            wanted = self._linearizable_revision(timeout)
        if wanted and not self._raft.wait_applied(wanted, max(0.0, deadline - time.monotonic())):
            raise ReadTimeout(
                f"this replica has applied revision {self._raft.revision}, not yet {wanted}, "
                f"within the deadline: retry, or read from another replica"
            )
        with self._raft.store.read() as view:
            yield view

    def _linearizable_revision(self, timeout: float) -> int:
        with self._lock:
            if self._next is None:
                self._next = concurrent.futures.Future()
            future = self._next
            self._joined += 1
            waiting = None if self._in_flight else self._take()
        if waiting is not None:
            self._propose(waiting, timeout)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise ProposalError("read barrier not committed within the deadline", True) from None

    def _take(self) -> concurrent.futures.Future:
        """The reads that the next barrier serves (called with the lock held)."""
        waiting, self._next = self._next, None
        self._in_flight = True
        metrics.read_barriers.inc()
        metrics.read_barrier_batch.observe(self._joined)
        self._joined = 0
        return waiting

    def _propose(self, waiting: concurrent.futures.Future, timeout: float) -> None:
        # A fixed deadline: each read bounds its own wait, and one impatient caller must
        # not pass a short deadline on to the barriers that follow.
        proposal = self._raft.propose(self._barrier, BARRIER_TIMEOUT)
        proposal.add_done_callback(lambda done: self._landed(waiting, done, timeout))

    def _landed(self, waiting, proposal, timeout: float) -> None:
        with self._lock:
            self._in_flight = False
            following = self._take() if self._next is not None else None
        if following is not None:
            self._propose(following, timeout)
        error = proposal.exception()
        if error is not None:
            waiting.set_exception(error)
        else:
            waiting.set_result(proposal.result().revision)
