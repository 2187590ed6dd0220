"""Linearizable reads confirmed by a round of heartbeats (Raft's ReadIndex), not the log.

A read may be served at index R once R is at least the commit index of a leader that,
after the read arrived, still was the leader: a majority of the voters answered, in
its term, an append sent after the read arrived. Then no other leader can have
committed anything the read should see. PySyncObj has no such round, so it is built
from its own messages: the leader numbers its appends (ROUND, an extra key that
PySyncObj ignores), a follower's transport copies the number into its reply, and a
round is confirmed once a majority, the leader included, echoed it or a later one.
One round serves every read that arrived before it started. Before, each read batch
appended a barrier entry: three fsyncs, an apply on every replica, and a commit.

One round is in flight at a time, and a follower has one request in flight (one
unanswered for ASK_AGAIN_AFTER may be lost: its reads are asked for again, with the
reads that arrived since): reads that arrive meanwhile
wait for the next, all together (as etcd's read loop does).
Every round costs each follower a heartbeat to handle and answer, and under many
readers a round per tick cost more than the reads did; alone, a read finds nothing
in flight and waits no longer.

A follower's reads need fewer messages when a majority is two (three voters or two):
the leader and the follower that asked. Its request says it may vouch (VOUCH), and
the round's append to it carries the index and the ids of its requests (CARRIED).
Accepting that append in its current term, it completes the majority itself: the
leader led in that term when it sent the append, after the request arrived, and the
follower had not moved past the term when it received it; a leader of a later term
that committed anything before the send needed one of the two. The reads are served
then, with no echo and no answer: two messages on their path instead of four. An
append that could not carry them (the follower not connected, or a large entry in
pieces) leaves them to the answer once the round is confirmed.

The round's index is the commit index when it starts (the last command at or below
it: revisions count commands), and only once that commit index has reached an entry
of the leader's own term (its no-op): until then it may lag entries earlier leaders
committed. A read on a follower asks the leader for a confirmed index (REQUEST) and
waits until it applied that far. Every member must echo and answer, so this runs
only from machine version READ_INDEX on (storage/versions.py); before, reads append
barriers (cluster/reads.py).

Everything here runs on the Raft thread, except `request`.
"""

import concurrent.futures
import itertools
import os
import queue
import time
from collections.abc import Callable
from typing import NamedTuple

from pysyncobj.syncobj import _COMMAND_TYPE, _RAFT_STATE

from cluster import metrics

# The keys and messages this module adds to PySyncObj's protocol: an append's round,
# echoed with the append's term (PySyncObj's replies carry none).
ROUND = "regraft_round"
ECHO = "regraft_echo"
REQUEST = "regraft_read_index"
ANSWER = "regraft_read_index_answer"
# A request's flag: the follower confirms its reads itself on the round's append,
# which then carries (index, request ids) under CARRIED.
VOUCH = "regraft_vouch"
CARRIED = "regraft_carried"
# A request to the leader unanswered this long (a lost message) fails its reads.
ASK_TIMEOUT = 5.0
# One unanswered this long may be lost (a reset connection drops what it had not sent
# yet): its reads, and those that arrived since, are asked for anew.
ASK_AGAIN_AFTER = 0.5


def pair_is_a_majority(other_voters) -> bool:
    """Whether the leader and any one of `other_voters` (a replica's other voters) are
    a majority: with three voters or two."""
    return len(other_voters) <= 2


class _Request(NamedTuple):
    """A follower's request for an index, on the leader."""

    node: object
    id: object
    vouch: bool  # its reads are confirmed by the follower's acceptance of the append


class NotConfirmed(Exception):
    """No leader confirmed an index for the read (leadership changed, or none known)."""


class ReadIndex:
    def __init__(self, raft, wake: Callable[[], None]) -> None:
        self._raft = raft  # cluster.raft.Raft: PySyncObj's state, read on its thread
        self._wake = wake
        self._arrived: queue.SimpleQueue = queue.SimpleQueue()
        self._term = -1
        self._leader = None
        # Leader: reads (local futures, or a follower's _Request) for the
        # next round; the round started and not yet confirmed: (round, index, reads).
        self._next: list = []
        self._round_in_flight: tuple[int, int, list] | None = None
        # While a round's appends are sent: per follower, what its append carries.
        self.to_carry: dict = {}
        self._round = itertools.count(1)
        # A round or request is in flight: its answers will run a tick that takes the
        # reads arrived meanwhile, so they need not wake the Raft thread each (under
        # many readers, a wake-up and a tick per read cost more than the read).
        self._busy = False
        self.sent_round = 0  # put on every append sent from now on
        self._echoed: dict = {}  # voter -> highest round it echoed, this term
        # Follower: reads waiting for the request in flight to be answered.
        self._waiting: list[concurrent.futures.Future] = []
        # Follower: requests sent to the leader, by id: when, to whom, and their reads.
        # An id names this run too: the leader may answer a request of an earlier run
        # of this replica (restarted meanwhile) over the new connection.
        self._asked: dict[tuple, tuple[float, object, list[concurrent.futures.Future]]] = {}
        self._run = os.urandom(8).hex()
        self._ids = itertools.count(1)

    def request(self) -> concurrent.futures.Future:
        """A future of the index a linearizable read may be served at (any thread)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._arrived.put(future)
        # Queued first, read second: a True read here was written before the queue was
        # last looked at (on_tick), so the tick that will run anyway takes this read.
        if not self._busy:
            self._wake()
        return future

    # -- each tick --------------------------------------------------------------------

    def on_tick(self) -> None:
        self._busy = self._take_arrived()
        # Written first, looked at second (see request): a read queued meanwhile and
        # told "busy" must not wait for a tick that nothing will cause.
        if not self._busy and not self._arrived.empty():
            self._wake()

    def _take_arrived(self) -> bool:
        """Take the reads arrived since the last tick; whether a round or request is in
        flight (its answers will run a tick)."""
        raft = self._raft
        leader, term = raft._getLeader(), raft.raftCurrentTerm
        leading = raft._SyncObj__raftState == _RAFT_STATE.LEADER
        if term != self._term or leader != self._leader:
            self._fail_all("the leader changed while the read waited")
            self._term, self._leader = term, leader
        arrived = []
        while not self._arrived.empty():
            arrived.append(self._arrived.get())
        if leading:
            self._next.extend(arrived)
            self._confirm()  # also when fewer voters now make a majority
            if self._next and self._round_in_flight is None and self._own_term_committed():
                self._start_round()
            return self._round_in_flight is not None
        now = time.monotonic()
        for number in [n for n, (sent, _, _) in self._asked.items() if now - sent > ASK_TIMEOUT]:
            for future in self._asked.pop(number)[2]:
                _fail(future, f"{self._leader_name()} did not answer within {ASK_TIMEOUT} s")
        self._waiting.extend(arrived)
        in_flight = any(now - sent < ASK_AGAIN_AFTER for sent, _, _ in self._asked.values())
        if not in_flight:
            # Requests unanswered this long may be lost: their reads are asked for again
            # (an index confirmed after a read arrived serves it), and still served by
            # a late answer, or failed at ASK_TIMEOUT.
            unanswered = [f for _, _, reads in self._asked.values() for f in reads]
            reads = [f for f in dict.fromkeys([*unanswered, *self._waiting]) if not f.done()]
            self._waiting = []
            if reads:
                in_flight = self._ask_leader(reads, leader)
        return in_flight

    def _own_term_committed(self) -> bool:
        raft = self._raft
        log, commit = raft._SyncObj__raftLog, raft.raftCommitIndex
        first = log[0][1]
        return first <= commit and log[commit - first][2] == raft.raftCurrentTerm

    def _read_index(self) -> int:
        """The revision that reflects every committed write: the index of the last
        command at or below the commit index (no-ops and Raft's membership entries
        are not applied, so no revision ever reaches them), or below the highest
        index announced to a follower, which may have committed and answered it
        before this leader's commit index got there (cluster/commitnotice.py)."""
        raft = self._raft
        log = raft._SyncObj__raftLog
        first = log[0][1]
        top = max(raft.raftCommitIndex, raft.commit_notice.announced())
        for index in range(top, first - 1, -1):
            if log[index - first][0][0] == _COMMAND_TYPE.REGULAR:
                return index
        return raft.revision  # every command is in the snapshot, applied here

    def _start_round(self) -> None:
        number = next(self._round)
        reads, self._next = self._next, []
        index = self._read_index()
        metrics.read_barriers.inc()
        metrics.read_barrier_batch.observe(len(reads))
        self.sent_round = number
        carry = self._carried(reads, index)
        self.to_carry = dict(carry)  # the transport takes each follower's (send)
        self._raft._send_appends()  # the round's heartbeats, now
        left, self.to_carry = self.to_carry, {}
        # Requests that went with their appends are done here; the rest wait for echoes.
        gone = {(node, id_) for node in carry.keys() - left.keys() for id_ in carry[node][1]}
        reads = [r for r in reads if not (isinstance(r, _Request) and (r.node, r.id) in gone)]
        self._round_in_flight = (number, index, reads)
        self._confirm()  # alone, a replica is its own majority

    def _carried(self, reads: list, index: int) -> dict:
        """Per follower, the (index, request ids) its append carries: those of the
        followers that vouch, when with the leader they make a majority."""
        voters = self._voters()
        if not pair_is_a_majority(voters):
            return {}
        carried: dict = {}
        for read in reads:
            if isinstance(read, _Request) and read.vouch and read.node in voters:
                carried.setdefault(read.node, (index, []))[1].append(read.id)
        return carried

    def _ask_leader(self, reads: list, leader) -> bool:
        """Ask the leader for an index for `reads`; whether the request went out."""
        if leader is None:
            for future in reads:
                _fail(future, "no leader known")
            return False
        number = (self._run, next(self._ids))
        request = {"type": REQUEST, "id": number, VOUCH: True}
        if not self._raft._SyncObj__transport.send(leader, request):
            for future in reads:
                _fail(future, f"{self._leader_name()} cannot be reached")
            return False
        self._asked[number] = (time.monotonic(), leader, reads)
        return True

    # -- messages, from the transport -------------------------------------------------

    def on_reply(self, node, message: dict) -> None:
        """A follower's answer to an append: it echoes the append's round and term."""
        echo = message.get(ECHO)
        if not isinstance(echo, tuple) or len(echo) != 2 or node not in self._voters():
            return
        echoed, term = echo
        if term != self._term or self._raft._SyncObj__raftState != _RAFT_STATE.LEADER:
            return
        if echoed > self._echoed.get(node, 0):
            self._echoed[node] = echoed
            self._confirm()

    def on_request(self, node, message: dict) -> None:
        request = _Request(node, message.get("id"), message.get(VOUCH) is True)
        try:
            hash(request)
        except TypeError:
            return  # not an id this code sends
        if self._raft._SyncObj__raftState != _RAFT_STATE.LEADER:
            self._answer(request, None)
            return
        # No wake-up: this runs inside the Raft thread's poll, and the tick after it
        # starts the round (a wake-up would cost a tick more).
        self._next.append(request)

    def on_answer(self, node, message: dict) -> None:
        self._answered(node, message.get("id"), message.get("index"))

    def on_carried(self, node, append: dict) -> None:
        """An append from `node` that carries the index of requests of ours, handled by
        PySyncObj: its reads are confirmed if this replica accepted it in its term."""
        carried = append.get(CARRIED)
        if not isinstance(carried, tuple) or len(carried) != 2:
            return
        index, numbers = carried
        raft = self._raft
        if not isinstance(index, int) or not isinstance(numbers, list):
            return
        if append.get("term") != raft.raftCurrentTerm or raft._getLeader() != node:
            return  # not accepted as the leader's append in this replica's term
        for number in numbers:
            self._answered(node, number, index)

    def _answered(self, node, number, index) -> None:
        asked = self._asked.get(number) if isinstance(number, tuple) else None
        if asked is None or asked[1] != node:
            return  # not a request of this run, or not to this node
        _, _, reads = self._asked.pop(number)
        for future in reads:
            if isinstance(index, int):
                _settle(future, index)
            else:
                _fail(future, f"{self._leader_name()} is no longer the leader")

    # -- confirming -------------------------------------------------------------------

    def _voters(self) -> set:
        return self._raft._SyncObj__otherNodes

    def _confirm(self) -> None:
        if self._round_in_flight is None:
            return
        voters = self._voters()
        majority = (len(voters) + 1) // 2 + 1
        number, index, reads = self._round_in_flight
        echoed = 1 + sum(1 for node in voters if self._echoed.get(node, 0) >= number)
        if echoed < majority:
            return
        self._round_in_flight = None
        for read in reads:
            self._answer(read, index)

    def _answer(self, read, index: int | None) -> None:
        if isinstance(read, concurrent.futures.Future):
            if index is None:
                _fail(read, "leadership was lost before the read was confirmed")
            else:
                _settle(read, index)
            return
        self._raft._SyncObj__transport.send(
            read.node, {"type": ANSWER, "id": read.id, "index": index}
        )

    def _fail_all(self, reason: str) -> None:
        in_flight = self._round_in_flight[2] if self._round_in_flight is not None else []
        for read in [*in_flight, *self._next]:
            self._answer(read, None)
        for _, _, reads in self._asked.values():
            for future in reads:
                _fail(future, reason)
        for future in self._waiting:
            _fail(future, reason)
        self._round_in_flight, self._next, self._asked, self._echoed = None, [], {}, {}
        self._waiting = []

    def _leader_name(self) -> str:
        return getattr(self._leader, "id", "the leader")


def _settle(future: concurrent.futures.Future, index: int) -> None:
    if not future.done():
        future.set_result(index)


def _fail(future: concurrent.futures.Future, reason: str) -> None:
    if not future.done():
        future.set_exception(NotConfirmed(reason))
