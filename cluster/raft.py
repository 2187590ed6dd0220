"""The PySyncObj adapter: propose(command) -> future result, applied to LMDB.

What this adds to PySyncObj, and why (../shared/DESIGN.md has the measurements):
- Durability. The journal is cluster/journal.py (fsynced at the end of every tick
  that appended to it); the transport fsyncs it before a vote or a follower's reply
  leaves. Committed entries are applied into one LMDB write transaction per tick (a
  batch), committed without fsync at the end of the tick (storage/db.py says why
  that is safe). A proposal's result is released only once its batch is committed,
  so an acknowledged write is in the journal of a majority and readable here.
- Apply never raises. LMDB errors (a full map) abort the batch, which is replayed.
- Snapshots without stalls. The serializer only starts a thread that copies LMDB
  from a read transaction; heartbeats go on meanwhile. Installing never rolls back.
- Deadlines. A proposal whose callback never comes (a lost forward) fails at its
  deadline with an unknown outcome, instead of hanging.
- Latency. A proposal wakes the tick loop, and a leader that appended entries sends
  them at the end of the same tick, before its own fsync, so that its disk and the
  followers' work at the same time.
"""

import base64
import concurrent.futures
import contextlib
import heapq
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import lmdb
import pysyncobj.syncobj
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.node import TCPNode
from pysyncobj.pipe_notifier import PipeNotifier
from pysyncobj.syncobj import _COMMAND_TYPE, SyncObjException

from cluster import cipher, metrics
from cluster.commitnotice import CommitNotice
from cluster.config import ConfigError
from cluster.journal import DurableJournal
from cluster.prevote import PreVote
from cluster.readindex import ReadIndex
from cluster.transport import DurableTransport
from regraft.v1 import command_pb2
from storage import machine, snapshot, versions
from storage.db import Store
from storage.files import fsync_dir, fsync_file

log = logging.getLogger(__name__)

# PySyncObj failures after which the command is certainly not in the log.
_DEFINITE = {
    FAIL_REASON.QUEUE_FULL: "the leader's queue is full",
    FAIL_REASON.MISSING_LEADER: "no leader is known (election in progress or no quorum)",
    FAIL_REASON.DISCARDED: "the entry was overwritten by a new leader",
    FAIL_REASON.NOT_LEADER: "the replica it was forwarded to is no longer the leader",
    FAIL_REASON.REQUEST_DENIED: "the leader refused the request",
}
_UNKNOWN = {
    FAIL_REASON.LEADER_CHANGED: "the leader changed while the command was in flight",
    FAIL_REASON.UNKNOWN_OUTCOME: "the leader restarted while the command was in flight",
}


# PySyncObj's states (_RAFT_STATE), as the log says them.
_ROLES = {0: "follower", 1: "candidate", 2: "leader"}

# PySyncObj's own log entries start with their type: a no-op, or a voter change.
NO_OP_ENTRY = bytes([_COMMAND_TYPE.NO_OP])


def is_voter_change(command: bytes) -> bool:
    return command[:1] == bytes([_COMMAND_TYPE.MEMBERSHIP])


class ProposalError(Exception):
    """A command was not applied (`definite`), or may or may not have been."""

    def __init__(self, message: str, definite: bool) -> None:
        super().__init__(message)
        self.definite = definite


@dataclass
class RaftSettings:
    """Timing and storage of one Raft member; defaults suit a loaded 2-core machine."""

    # None: a learner (PySyncObj's read-only node), which receives the log, never votes.
    address: str | None
    peers: list[str]
    data_dir: str
    secret: str | None
    tick: float = 0.01
    heartbeat: float = 0.05
    election_timeout: tuple[float, float] = (1.0, 2.0)
    # A leader that hears from no majority for this long steps down (PySyncObj: 30 s).
    leader_fallback: float = 3.0
    snapshot_entries: int = 20_000
    snapshot_seconds: float = 600.0
    # The newest machine version this code applies (storage/versions.py): past it, the
    # replica stops before it applies an entry differently from the others.
    machine_version: int = versions.LATEST


_journal_factory_lock = threading.Lock()
_STATUS_PERIOD = 0.2
# A voter whose last answer to the leader's appends is older than this (or than 4
# heartbeats, when they are slower) counts as unreachable.
ANSWERED_WITHIN = 2.0
# Deadlines are expired by the Raft thread after each tick (every 10 ms); when it has
# not done so for this long (it is stuck), a thread of their own does.
DEADLINE_WATCH = 0.1
# A leadership transfer may hold new proposals back this long, for a target at most
# TRANSFER_MAX_LAG entries behind, to let it catch up (transfer_leadership).
TRANSFER_HOLD = 1.0
TRANSFER_HOLD_EVERY = 5.0
TRANSFER_MAX_LAG = 2000
# Attempts, one second apart, to bind the peer port before the replica gives up.
BIND_ATTEMPTS = 5


@contextlib.contextmanager
def _durable_journal(owner: "Raft") -> Iterator[None]:
    """PySyncObj builds its journal through a module-level function: swap in ours."""

    def create(path):
        owner.journal = DurableJournal(path)
        return owner.journal

    with _journal_factory_lock:
        original = pysyncobj.syncobj.createJournal
        pysyncobj.syncobj.createJournal = create
        try:
            yield
        finally:
            pysyncobj.syncobj.createJournal = original


class Raft(SyncObj):
    """One Raft member whose state machine is storage.machine over `store`."""

    def __init__(self, settings: RaftSettings, store: Store) -> None:
        self.store = store
        # Read by PySyncObj's transport through the `encryptor` property, from __init__ on.
        self._cipher = (
            cipher.PeerCipher(cipher.key_from_secret(settings.secret))
            if settings.secret is not None
            else None
        )
        self.journal: DurableJournal | None = None
        self.snapshot_path = os.path.join(settings.data_dir, "raft.snapshot")
        # Set when the replica cannot go on (its snapshot is unreadable at start-up).
        self.fatal_error: str | None = None
        self._loading_at_startup = os.path.isfile(self.snapshot_path)
        self._machine_version = settings.machine_version
        self.revision = store.revision
        self.pre_vote = PreVote(self, settings.election_timeout[0])
        self._answered_within = max(ANSWERED_WITHIN, 4 * settings.heartbeat)
        self._note_machine_version()
        self.applied = threading.Condition()
        self.last_snapshot_index = 0
        self._batch = None
        self._batch_entries: list[tuple[int, bytes]] = []
        self._batch_done = 0
        self._deferred: list[tuple[concurrent.futures.Future, command_pb2.Result]] = []
        self._deadlines: list[tuple[float, int, concurrent.futures.Future, Exception]] = []
        # Futures settled once an index is applied (settle_when_applied), lowest first.
        self._applied_waiters: list[tuple[int, int, concurrent.futures.Future]] = []
        self._done_in_heap = 0
        self._deadline_lock = threading.Lock()
        self._expired_at = time.monotonic()
        self._closing = threading.Event()
        self._sequence = itertools.count()
        self._tick_calls: queue.SimpleQueue = queue.SimpleQueue()
        self._snapshot_state = SERIALIZER_STATE.NOT_SERIALIZING
        self._snapshot_thread: threading.Thread | None = None
        self._snapshot_written: dict | None = None
        self._installs = 0
        self._installs_before_snapshot = 0
        self._sent_upto = 0
        self._commit_announced = 0
        self._status: dict = {}
        self._status_at = 0.0
        self.leader_changes = 0
        self._last_leader = None
        self._last_role = ""
        # (target node, hold until, TimeoutNow sent) while leadership is handed over.
        self._transfer_pending: tuple | None = None
        self._last_hold = -TRANSFER_HOLD_EVERY
        self.read_index = ReadIndex(self, self._wake)
        self.commit_notice = CommitNotice(self)
        self._wake_pending = True  # until the waker exists below: _wake does nothing
        conf = SyncObjConf(
            password=settings.secret,
            autoTick=True,
            autoTickPeriod=settings.tick,
            appendEntriesPeriod=settings.heartbeat,
            raftMinTimeout=settings.election_timeout[0],
            raftMaxTimeout=settings.election_timeout[1],
            connectionTimeout=max(3.5, settings.election_timeout[1]),
            connectionRetryTime=1.0,
            leaderFallbackTimeout=settings.leader_fallback,
            commandsWaitLeader=False,
            journalFile=os.path.join(settings.data_dir, "raft.journal"),
            fullDumpFile=self.snapshot_path,
            serializer=self._start_snapshot,
            deserializer=self._install_snapshot,
            serializeChecker=self._snapshot_progress,
            logCompactionMinEntries=settings.snapshot_entries,
            logCompactionMinTime=settings.snapshot_seconds,
            logCompactionBatchSize=1 << 20,
            appendEntriesBatchSizeBytes=1 << 20,
            dynamicMembershipChange=True,
            bindAddress=settings.address,
            # Give up on a peer port in use after a few seconds instead of retrying
            # forever: a replica that cannot be reached must not look alive.
            bindRetryTime=1.0,
            maxBindRetries=BIND_ATTEMPTS,
        )
        with _durable_journal(self):
            super().__init__(
                settings.address, settings.peers, conf, transportClass=DurableTransport
            )
        if settings.address is not None:
            try:
                self.waitBinded()
            except SyncObjException:
                self.destroy_synchronous()  # the tick thread would retry the bind
                raise ConfigError(
                    f"cannot listen on raft_address {settings.address!r}: the port is in "
                    "use or the host is not an address of this machine"
                ) from None
        self._wake_pending = False
        self._waker = PipeNotifier(self._poller, callback=self._woken)
        self.addOnTickCallback(self._after_tick)
        self.on_tick(self.pre_vote.hasten_first_election)
        self._deadline_watch = threading.Thread(
            target=self._watch_deadlines, name="raft-deadlines", daemon=True
        )
        self._deadline_watch.start()

    @property
    def encryptor(self) -> cipher.PeerCipher | None:
        """PySyncObj's peer-message cipher, replaced: its tokens made faster, and
        sealed messages once every member reads them (cluster/cipher.py)."""
        return self._cipher

    # -- proposing --------------------------------------------------------------------

    def propose(self, data: bytes, timeout: float) -> concurrent.futures.Future:
        """Replicate a serialized Command; the future yields its Result once applied here.

        Fails with ProposalError; at `timeout` the outcome is unknown (it may still
        commit), which is why writes carry request ids.
        """
        future = self._future(timeout)
        self._apply(data, callback=lambda result, error: self._on_result(future, result, error))
        self._wake()
        return future

    def change_voters(self, add: bool, address: str, timeout: float) -> concurrent.futures.Future:
        """Add or remove one Raft voter (PySyncObj's own log entry); done once committed.

        PySyncObj refuses (ProposalError, definite) while an earlier change is
        uncommitted; storage/members.py keeps changes one at a time before that.
        """
        future = self._future(timeout)
        change = self.addNodeToCluster if add else self.removeNodeFromCluster
        change(
            TCPNode(address), callback=lambda result, error: self._on_result(future, result, error)
        )
        self._wake()
        return future

    def on_tick(self, call: Callable[[], object]) -> concurrent.futures.Future:
        """Run `call` on the Raft thread (PySyncObj's state is not thread-safe)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._tick_calls.put((call, future))
        self._wake()
        return future

    def transfer_leadership(self, address: str | None) -> bool:
        """Send TimeoutNow to a caught-up voter (the most caught-up one if None).

        True if it was sent. PySyncObj refuses while the target's log is behind the
        leader's last entry, which under continuous writes it almost always is: then,
        if the target is connected and close behind, the leader stops appending new
        proposals (they wait in the queue) for up to TRANSFER_HOLD and sends TimeoutNow
        the moment the target has caught up (see _checkCommandsToApply). The new leader
        shows in status() once it won its election; the caller polls it.
        """

        def attempt() -> bool:
            if self._send_timeout_now(address):
                return True
            target = self._transfer_candidate(address)
            now = time.monotonic()
            # At most one hold per TRANSFER_HOLD_EVERY: a target that does not catch up
            # must not keep the cluster's writes held for as long as the caller retries.
            if target is not None and now - self._last_hold >= TRANSFER_HOLD_EVERY:
                self._last_hold = now
                self._transfer_pending = (target, now + TRANSFER_HOLD, False)
            return False

        try:
            return self.on_tick(attempt).result(5.0)
        except concurrent.futures.TimeoutError:  # the Raft thread is busy: try again later
            return False

    def _send_timeout_now(self, target) -> bool:
        outcome = []
        self.transferLeadership(target, callback=lambda _, error: outcome.append(error))
        return outcome == [FAIL_REASON.SUCCESS]

    def _transfer_candidate(self, address: str | None):
        """The voter to hand leadership to, if it is connected and can catch up soon."""
        connected = self._SyncObj__connectedNodes
        voters = [n for n in self._SyncObj__otherNodes if n in connected]
        if address is not None:
            voters = [n for n in voters if n.id == address]
        if not voters:
            return None
        match = self._SyncObj__raftMatchIndex
        best = max(voters, key=lambda n: (match.get(n, 0), n.id))
        behind = self._last_log_index() - match.get(best, 0)
        return best if behind <= TRANSFER_MAX_LAG else None

    def _onTick(self, timeToWait: float = 0.0) -> None:
        """PySyncObj's tick, which starts an election once the timeout has passed:
        PreVote asks the voters first (cluster/prevote.py)."""
        if self.pre_vote.before_election_check():
            super()._onTick(timeToWait)
            return
        with self.pre_vote.holding_election():
            super()._onTick(timeToWait)

    def _checkCommandsToApply(self) -> None:
        """PySyncObj's: append the queued proposals, except while leadership is being
        handed over (transfer_leadership): then TimeoutNow goes out as soon as the
        target caught up, and nothing new is appended in this term until the hold ends
        (entries of the old term that the new leader lacks would be discarded); the
        proposals held go to the new leader once it is known."""
        if self._transfer_pending is not None:
            target, until, sent = self._transfer_pending
            leading = self._isLeader()
            # Held on until the new leader is known, to be forwarded there.
            if time.monotonic() < until and (leading or self._getLeader() is None):
                if leading and not sent and self._send_timeout_now(target):
                    self._transfer_pending = (target, until, True)
                return
            self._transfer_pending = None
        super()._checkCommandsToApply()

    def _future(self, timeout: float) -> concurrent.futures.Future:
        return self.deadline_future(
            timeout, ProposalError("no answer within the deadline: outcome unknown", False)
        )

    def deadline_future(self, timeout: float, error: Exception) -> concurrent.futures.Future:
        """A future failed with `error` at `timeout` seconds (by the tick thread), unless
        it is done before."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.add_done_callback(self._answered_early)
        with self._deadline_lock:
            heapq.heappush(
                self._deadlines, (time.monotonic() + timeout, next(self._sequence), future, error)
            )
        return future

    def _answered_early(self, _future: concurrent.futures.Future) -> None:
        # A count of done futures in the heap for _expire; approximate, never harmful.
        self._done_in_heap += 1

    def settle_when_applied(self, revision: int, future: concurrent.futures.Future) -> None:
        """Set `future` to `revision` once this replica has applied it, at once if it
        has; forgotten if it is done otherwise first (its deadline, say)."""
        with self._deadline_lock:
            if self.revision < revision:
                heapq.heappush(self._applied_waiters, (revision, next(self._sequence), future))
                return
        settle(future, result=revision)

    def _wake(self) -> None:
        """Make the tick loop's poll return now; one pipe write per tick at most."""
        if self._wake_pending:
            return
        self._wake_pending = True
        with contextlib.suppress(BlockingIOError):
            self._waker.notify()

    def _woken(self) -> None:
        # Runs inside the poll, before the tick drains the command queue: a proposal
        # queued before this point is drained, one queued after it writes again.
        self._wake_pending = False

    def _on_result(self, future, result, error) -> None:
        if error == FAIL_REASON.SUCCESS:
            if self._batch is not None:
                self._deferred.append((future, result))
            else:
                settle(future, result=result)
        elif error in _DEFINITE:
            settle(future, error=ProposalError(_DEFINITE[error], definite=True))
        else:
            reason = _UNKNOWN.get(error, f"PySyncObj failure {error}")
            settle(future, error=ProposalError(reason, definite=False))

    # -- applying ---------------------------------------------------------------------

    @replicated
    def _apply(self, data: bytes) -> command_pb2.Result:
        self._batch_entries.append((self.raftLastApplied + 1, data))
        while True:
            try:
                return self._fill_batch()
            except lmdb.Error as e:
                self._recover(e)

    def _fill_batch(self) -> command_pb2.Result:
        """Apply the entries not yet in the open batch; the last one's result."""
        if self._batch is None:
            self._batch = self.store.batch()
            self._batch_done = 0
        result = None
        for index, data in self._batch_entries[self._batch_done :]:
            if self._batch.machine_version > self._machine_version:
                self._halt(self._batch.machine_version)
            result = machine.apply(self._batch, index, data)
            self._batch_done += 1
        return result

    def _halt(self, in_force: int) -> None:
        """Exit before applying an entry the way older code does: the other replicas
        apply it the newer way, and a replica never applies an entry twice, so one
        applied here would stay different after an upgrade. What was applied (up to the
        entry that raised the version) is committed; the rest stays in the journal for
        the release that can apply it."""
        reason = versions.too_new(in_force, self._machine_version)
        del self._batch_entries[self._batch_done :]
        self._commit()
        log.critical("%s", reason)
        logging.shutdown()
        os._exit(1)  # this is Raft's thread: a clean stop would wait for it to end

    def _recover(self, error: lmdb.Error) -> None:
        """Abort the batch after an LMDB error; it is replayed from _batch_entries."""
        if self._batch is not None:
            with contextlib.suppress(lmdb.Error):
                self._batch.abort()
            self._batch = None
        if isinstance(error, lmdb.MapFullError):
            log.warning("LMDB map full: doubling it")
            self.store.grow()
        else:
            # Nothing after this entry can be applied until it is: the tick thread
            # waits here (a full disk, say), and health reports why.
            log.error("LMDB write failed (%s): retrying in 1 s", error)
            self._status = {**self._status, "storage_error": str(error)}
            time.sleep(1.0)

    def _commit(self) -> None:
        """Commit the open batch, then release the results it holds."""
        if self._batch is None:
            return
        started = time.monotonic()
        self.journal.sync()
        while True:
            try:
                if self._batch is None:
                    self._fill_batch()
                revision, version = self._batch.revision, self._batch.machine_version
                self._batch.commit()
                break
            except lmdb.Error as e:
                self._recover(e)
        metrics.apply_seconds.observe(time.monotonic() - started)
        metrics.apply_batch_entries.observe(len(self._batch_entries))
        self._note_versions(version)
        self._batch = None
        self._batch_entries = []
        deferred, self._deferred = self._deferred, []
        self._publish_revision(revision)
        for future, result in deferred:
            settle(future, result=result)

    def _publish_revision(self, revision: int) -> None:
        """This replica's state is now at `revision`: wake who waits for it."""
        with self.applied:
            self.revision = revision
            self.applied.notify_all()
        ready = []
        with self._deadline_lock:
            while self._applied_waiters and self._applied_waiters[0][0] <= revision:
                ready.append(heapq.heappop(self._applied_waiters))
        for wanted, _, future in ready:
            settle(future, result=wanted)

    def _after_tick(self) -> None:
        # Before the appends: a follower learns a forwarded command's index before the
        # entry can commit (else it could not tell its caller the outcome).
        self._SyncObj__transport.flush()
        leading = self._isLeader()
        if leading and self._last_log_index() > self._sent_upto:
            # New entries go out before this replica's own fsync, so that the followers
            # write meanwhile; the leader's copy counts towards a majority from the next
            # tick on, when the replies are read, after the fsync.
            self._send_appends()
        self.journal.sync()
        if leading:
            self.commit_notice.after_sync()
        self._commit()
        self.read_index.on_tick()
        while not self._tick_calls.empty():
            call, future = self._tick_calls.get()
            try:
                future.set_result(call())
            except Exception as e:  # handed to the caller
                future.set_exception(e)
        now = time.monotonic()
        self._expire(now)
        if now - self._status_at > _STATUS_PERIOD:
            self._refresh_status(now)
        if leading and self.raftCommitIndex > self._commit_announced:
            # Followers apply, and answer the writes they forwarded, only when they hear
            # of a higher commit index: tell them after this replica's answers are out.
            self._send_appends()

    def _send_appends(self) -> None:
        """Send new entries and the commit index now rather than at the next heartbeat."""
        self._sent_upto, self._commit_announced = self._last_log_index(), self.raftCommitIndex
        self._SyncObj__sendAppendEntries()

    def _refresh_status(self, now: float) -> None:
        """Copy PySyncObj's status on its own thread: its dicts change under other threads."""
        status = self.getStatus()
        status["last_log_index"] = self._last_log_index()
        status["revision"] = self.revision
        leader = status["leader"].id if status["leader"] is not None else None
        if leader != self._last_leader and leader is not None:
            self.leader_changes += 1
        role = "learner" if status["self"] is None else _ROLES.get(status["state"], "?")
        if (leader, role) != (self._last_leader, self._last_role):
            # What an operator reads first after a failover (at most one line per 0.2 s).
            log.info("%s in term %d; leader: %s", role, status["raft_term"], leader or "none known")
        self._last_leader, self._last_role = leader, role
        status["leader"] = leader
        status["self"] = status["self"].id if status["self"] is not None else None
        status["peers"] = {node.id: self._reachable(node, now) for node in self.otherNodes}
        status["at"] = now  # time.monotonic() when copied
        self._status = status
        self._status_at = now

    def _reachable(self, node, now: float) -> bool:
        """Its Raft link is up and, seen from the leader, it answered this term lately: a
        stopped process keeps its connections (a SIGSTOPped leader showed as reachable
        to the next, and a member could be added although it never answered)."""
        if not self.isNodeConnected(node):
            return False
        if not self._isLeader():
            return True  # followers hear from the leader only
        at, term = self._SyncObj__transport.replied.get(node, (0.0, -1))
        return term == self.raftCurrentTerm and now - at < self._answered_within

    def status(self) -> dict:
        """A recent copy (at most a fraction of a second old) of the Raft state.

        `storage_error` says why the journal or LMDB cannot be written (a full disk):
        the Raft thread may then be stuck retrying, and the copy old.
        """
        problem = self.journal.write_error if self.journal is not None else None
        if problem:
            return {**self._status, "storage_error": problem}
        return self._status

    def _last_log_index(self) -> int:
        return self._SyncObj__raftLog[-1][1]

    def _watch_deadlines(self) -> None:
        """Expire deadlines while the Raft thread cannot (retrying a full disk, installing
        a long snapshot): every caller is answered by its deadline, none waits on."""
        while not self._closing.wait(DEADLINE_WATCH):
            now = time.monotonic()
            if now - self._expired_at > DEADLINE_WATCH:
                self._expire(now)

    def _expire(self, now: float) -> None:
        self._expired_at = now
        expired = []
        with self._deadline_lock:
            while self._deadlines:
                deadline, _, future, error = self._deadlines[0]
                if deadline > now and not future.done():
                    break
                expired.append(heapq.heappop(self._deadlines)[2:])
            # A future answered early stays in the heap until the ones before it go, and
            # holds its call (its callbacks do): once most are done, keep the waiting.
            self._done_in_heap -= sum(1 for future, _ in expired if future.done())
            if len(self._deadlines) > 64 and 2 * self._done_in_heap > len(self._deadlines):
                self._deadlines = [d for d in self._deadlines if not d[2].done()]
                heapq.heapify(self._deadlines)
                self._done_in_heap = 0
        timed_out = [future for future, error in expired if not future.done()]
        for future, error in expired:
            settle(future, error=error)
        if timed_out:  # what waited for a revision in vain is forgotten
            with self._deadline_lock:
                waiting = [w for w in self._applied_waiters if not w[2].done()]
                heapq.heapify(waiting)
                self._applied_waiters = waiting

    # -- snapshots --------------------------------------------------------------------

    def _start_snapshot(self, _tmp_path: str, data) -> None:
        """PySyncObj's serializer, on the tick thread: start a copy and return at once.

        PySyncObj then tries to rename a temporary file that is deliberately not
        there; the copy thread writes its own file, and _snapshot_progress (on the
        tick thread) moves it into place, so that it never races a snapshot received
        from the leader, which PySyncObj also writes to `fullDumpFile` on that thread.
        """
        last, previous, nodes = data
        self._commit()
        # The read transaction starts here, on the tick thread, so the copy holds
        # exactly the entries up to `last`: a replica that installs it applies every
        # later entry itself (and answers the proposals it forwarded).
        # A learner (PySyncObj's read-only node) counts itself as None among the nodes.
        header = snapshot_header(last, previous, [node.id for node in nodes if node is not None])
        reading = contextlib.ExitStack()
        view = reading.enter_context(self.store.read())
        self._snapshot_state = SERIALIZER_STATE.SERIALIZING
        self._installs_before_snapshot = self._installs
        self._snapshot_thread = threading.Thread(
            target=self._write_snapshot, args=(reading, view, header), name="snapshot", daemon=True
        )
        self._snapshot_thread.start()

    def _write_snapshot(self, reading: contextlib.ExitStack, view, header: dict) -> None:
        started = time.monotonic()
        try:
            with reading:
                snapshot.write(self.store, view, self.snapshot_path + ".new", header)
        except Exception:
            log.exception("writing snapshot at index %d failed", header["raft_index"])
            metrics.snapshots.labels("failed").inc()
            self._snapshot_state = SERIALIZER_STATE.FAILED
            return
        metrics.snapshot_seconds.observe(time.monotonic() - started)
        self._snapshot_written = header
        self._snapshot_state = SERIALIZER_STATE.SUCCESS

    def _snapshot_progress(self) -> int:
        """PySyncObj's serializeChecker, on the tick thread: SUCCESS lets it trim the log.

        The new file replaces `fullDumpFile` here, and durably, before PySyncObj trims
        the journal: a crash in between leaves a snapshot whose entries the journal
        still holds (see _align_journal). If a snapshot from the leader was installed
        meanwhile, the log no longer holds what ours covers: ours is dropped, and
        reported as failed so that PySyncObj trims nothing.
        """
        state = self._snapshot_state
        if state == SERIALIZER_STATE.SUCCESS:
            header, self._snapshot_written = self._snapshot_written, None
            if self._installs == self._installs_before_snapshot:
                os.replace(self.snapshot_path + ".new", self.snapshot_path)
                fsync_dir(os.path.dirname(os.path.abspath(self.snapshot_path)))
                self.last_snapshot_index = header["raft_index"]
                metrics.snapshots.labels("taken").inc()
            else:
                os.unlink(self.snapshot_path + ".new")
                state = SERIALIZER_STATE.FAILED
        if state in (SERIALIZER_STATE.SUCCESS, SERIALIZER_STATE.FAILED):
            self._snapshot_state = SERIALIZER_STATE.NOT_SERIALIZING
        return state

    def _install_snapshot(self, path: str):
        """PySyncObj's deserializer: at start-up, and when a leader sent a snapshot."""
        at_startup, self._loading_at_startup = self._loading_at_startup, False
        try:
            loaded = self._load_snapshot(path, at_startup)
        except Exception as e:
            if at_startup:
                # PySyncObj would log this and go on with a log it cannot apply.
                self.fatal_error = f"cannot load the Raft snapshot {path}: {e}"
                log.critical("%s", self.fatal_error)
            raise
        finally:
            # Installing may take longer than an election timeout: do not call one
            # for the time spent here.
            self._SyncObj__raftElectionDeadline = (
                time.monotonic() + self._SyncObj__generateRaftTimeout()
            )
        return loaded

    def _load_snapshot(self, path: str, at_startup: bool):
        self._commit()
        # PySyncObj writes and renames a received snapshot without fsync.
        fsync_file(path)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
        header, replaced = snapshot.install(self.store, path)
        self._installs += 1
        self.last_snapshot_index = max(self.last_snapshot_index, header["raft_index"])
        if replaced:
            metrics.snapshot_installs.inc()
            log.info("installed snapshot at revision %d", header["revision"])
            self._note_machine_version()
            self._publish_revision(self.store.revision)
        last, previous = (
            _decode_entry(header["last_entry"]),
            _decode_entry(header["previous_entry"]),
        )
        if at_startup:  # one from the leader: PySyncObj clears the journal anyway
            self._align_journal(previous, last)
        return last, previous, [TCPNode(node) for node in header["nodes"]]

    def _align_journal(self, previous: tuple, last: tuple) -> None:
        """Start the journal at the snapshot's entries when it holds them.

        PySyncObj keeps the journal only if its first two entries are exactly the
        snapshot's; otherwise it clears it, losing the entries after the snapshot,
        which may be acknowledged. A crash between a snapshot and the journal's trim
        leaves it longer at the front: drop that prefix instead.
        """
        journal = self.journal
        if not len(journal):
            return
        position = previous[1] - journal[0][1]
        if 0 < position < len(journal) - 1 and (
            tuple(journal[position]) == previous and tuple(journal[position + 1]) == last
        ):
            journal.deleteEntriesTo(position)

    def _note_machine_version(self) -> None:
        with self.store.read() as view:
            version, empty = view.machine_version, view.revision == 0
        self._note_versions(version)
        self.pre_vote.version_unknown = empty  # until the first state (prevote.py)

    def _note_versions(self, version: int) -> None:
        """What every member's code can do, by the machine version in force: read
        batched peer messages (cluster/transport.py), confirm reads by a round of
        heartbeats (cluster/readindex.py), read sealed peer messages (cluster/cipher.py),
        answer PreVote questions (cluster/prevote.py)."""
        self.batch_peer_messages = version >= versions.BATCHED_PEER_MESSAGES
        self.reads_by_round = version >= versions.READ_INDEX
        self.pre_vote.enabled = version >= versions.PRE_VOTE
        self.pre_vote.version_unknown = False
        if self._cipher is not None:
            self._cipher.seal = version >= versions.SEALED_PEER_MESSAGES

    def close(self) -> None:
        self.destroy_synchronous()
        self._closing.set()
        self._deadline_watch.join()
        self._commit()
        if self._snapshot_thread is not None:
            # It reads from the store, which the caller closes next.
            self._snapshot_thread.join()


def settle(future: concurrent.futures.Future, result=None, error=None) -> None:
    """Set a future's result or exception unless it is done (its deadline passed, say)."""
    if future.done():
        return
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def snapshot_header(last: tuple, previous: tuple, nodes: list[str]) -> dict:
    """The header of a Raft snapshot covering log entries up to `last` (command, index,
    term), with the cluster's members by Raft address: what _install_snapshot reads.

    PySyncObj makes `nodes` the membership when it loads the snapshot, which is how
    restore and emergency repair start a replica alone (cluster/datadir.py).
    """
    return {
        "raft_index": last[1],
        "raft_term": last[2],
        "last_entry": _encode_entry(last),
        "previous_entry": _encode_entry(previous),
        "nodes": sorted(nodes),
    }


def _encode_entry(entry) -> list:
    command, index, term = entry
    return [base64.b64encode(bytes(command)).decode(), index, term]


def _decode_entry(entry: list) -> tuple[bytes, int, int]:
    command, index, term = entry
    return base64.b64decode(command), index, term
