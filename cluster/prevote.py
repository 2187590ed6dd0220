"""Raft's PreVote: a replica asks the voters whether they would elect it before it
raises its term.

PySyncObj starts an election whenever a follower's timeout passes: it raises its term,
and every replica that hears the higher term drops its leader. A replica that was cut
off or paused (a partition, a stopped process, a VM migrated) came back with a higher
term, or raised it at once, and deposed a healthy leader: a leader stopped for 3 s
and resumed set off three elections in a row. Here, once its timeout passes, a
follower first asks the voters (REQUEST, with the term it would take and its log's
last index and term); a voter grants it only if it has not heard from a leader for
the shortest election timeout, is not itself the leader, and would vote for that log.
The election starts once a majority, itself included, granted; until then its term
stays, so the leader's appends still reach it and it simply follows again (a replica
whose own Raft thread did not run for that long, paused or starved, first reads what
arrived meanwhile). Asking changes nothing on the voters; a voter past the term asked
for says its own, which the replica takes (as any Raft message's higher term), so
that it can ask for a term that voter can grant. A leadership transfer (TimeoutNow)
skips the question: the leader asked for that election.

Every member must answer, so a replica asks only from machine version PRE_VOTE on
(storage/versions.py). Everything here runs on the Raft thread.

Since asking deposes no one, a replica that has just started asks after a short
timeout rather than a whole one (etcd's initial election tick advance does the same):
a new or restarted cluster elects its leader about a second sooner, and a restarted
follower that has not yet heard the leader is only told no.
"""

import contextlib
import math
import random
import time
from collections.abc import Iterator

from pysyncobj.syncobj import _RAFT_STATE

REQUEST = "regraft_pre_vote"
ANSWER = "regraft_pre_vote_answer"
# Sent in reply to an append of an older term (PySyncObj ignores those silently): the
# leader learns a newer term exists and steps down.
TERM = "regraft_term"
# A replica's first timeout after start-up, as fractions of the shortest one.
FIRST_TIMEOUT = (0.1, 0.3)


class PreVote:
    def __init__(self, raft, min_timeout: float) -> None:
        self._raft = raft  # cluster.raft.Raft: PySyncObj's state, read on its thread
        self._min_timeout = min_timeout
        self.enabled = False  # from machine version PRE_VOTE on (Raft._note_versions)
        # No state, so no machine version known yet (Raft._note_machine_version).
        self.version_unknown = False
        self.heard_from_leader = float("-inf")  # time.monotonic() of its last append
        # The term this replica asked for, when, and the voters that granted it (itself
        # too).
        self._asking: int | None = None
        self._asked_at = 0.0
        self._granted: set = set()
        self._elect = False  # a majority granted: the next timeout starts the election
        self._last_check = time.monotonic()  # the Raft thread's last tick

    # -- the replica that would start an election --------------------------------------

    def hasten_first_election(self) -> None:
        """At start-up: the first timeout short, if this replica asks before it elects."""
        raft = self._raft
        if self._active() and raft._SyncObj__selfNode is not None:
            share = random.uniform(*FIRST_TIMEOUT)
            raft._SyncObj__raftElectionDeadline = time.monotonic() + share * self._min_timeout

    def before_election_check(self) -> bool:
        """Run before PySyncObj looks at the election timeout (each tick): when it has
        passed and no majority granted yet, ask, and hold the election until then.
        Whether PySyncObj may start an election in this tick (else `holding_election`)."""
        raft = self._raft
        now = time.monotonic()
        stalled, self._last_check = now - self._last_check, now
        if not self._active() or raft._SyncObj__selfNode is None:
            return True  # PySyncObj decides, as before
        if raft._SyncObj__raftState == _RAFT_STATE.LEADER:
            self._reset()
            return True  # it calls no election
        if raft._SyncObj__transferInProgress:  # TimeoutNow: the leader asked for it
            return True
        if raft._SyncObj__raftElectionDeadline >= now or not raft._SyncObj__connectedToAnyone():
            return False
        if stalled > self._min_timeout:
            # This thread did not run (a paused process, a starved one): the leader's
            # appends may be waiting unread. Read them first (the poll ends this tick).
            raft._SyncObj__raftElectionDeadline = now + self._min_timeout / 4
            return False
        term = raft.raftCurrentTerm + 1
        if (
            self._elect
            and self._asking == term
            and self.heard_from_leader <= self._asked_at
            and now - self._asked_at < self._min_timeout  # else ask again: who is up now
        ):
            self._reset()
            return True  # PySyncObj starts it now, at this term
        raft._SyncObj__raftElectionDeadline = now + raft._SyncObj__generateRaftTimeout()
        # It no longer hears a leader: it must not say it has one (readiness, forwarding)
        # while it asks, as PySyncObj's own election would not.
        self._forget_leader()
        self._asking, self._granted, self._elect = term, {raft._SyncObj__selfNode}, False
        self._asked_at = now
        if self._majority():  # no other voter
            self._grant()
            return True
        request = {
            "type": REQUEST,
            "term": term,
            "last_log_index": raft._SyncObj__getCurrentLogIndex(),
            "last_log_term": raft._SyncObj__getCurrentLogTerm(),
        }
        for node in raft._SyncObj__otherNodes:
            raft._SyncObj__transport.send(node, request)
        return False

    @contextlib.contextmanager
    def holding_election(self) -> Iterator[None]:
        """PySyncObj's tick, with its election timeout out of reach: it looks at it after
        slow work (the journal's once-a-second fsyncs), and a timeout that passed in
        between started an election no voter was asked about. A timeout PySyncObj sets
        meanwhile (an append heard, a vote given, TimeoutNow) is kept."""
        raft = self._raft
        timeout, raft._SyncObj__raftElectionDeadline = raft._SyncObj__raftElectionDeadline, math.inf
        try:
            yield
        finally:
            if raft._SyncObj__raftElectionDeadline == math.inf:
                raft._SyncObj__raftElectionDeadline = timeout

    def _active(self) -> bool:
        """From machine version PRE_VOTE on; and, while no version is known, as long as
        the log is empty too (a new cluster, or a wiped disk). Such a replica, restarted
        with a configuration that left out the leader, raised its term every timeout,
        and each higher term it sent a voter deposed a healthy leader; and it cannot
        win an election with an empty log, so members whose code does not answer
        PreVote cost it nothing. A log with entries but no state (rebuilt after a
        machine crash, before any snapshot) may be the longest: it elects as before."""
        if self.enabled:
            return True
        return self.version_unknown and self._raft._SyncObj__getCurrentLogTerm() == 0

    def on_answer(self, node, message: dict) -> None:
        raft = self._raft
        if (
            message.get("term") != self._asking
            or self._asking != raft.raftCurrentTerm + 1
            or node not in raft._SyncObj__otherNodes
            or raft._SyncObj__raftState == _RAFT_STATE.LEADER
        ):
            return
        if message.get("granted") is not True:
            # A voter past the term asked for: take its term (as any Raft message's),
            # so that the next question asks for one it can grant.
            self.on_term({"term": message.get("current_term")})
            return
        if self.heard_from_leader > self._asked_at:
            self._reset()  # a leader spoke since: no election (its appends hold it off)
            return
        self._granted.add(node)
        if self._majority() and not self._elect:
            self._grant()

    def on_term(self, message: dict) -> None:
        """A peer's term (a denial's, or a TERM notice): taken if it is newer, as Raft
        takes any message's, stepping down and forgetting the leader."""
        raft, term = self._raft, message.get("term")
        if not isinstance(term, int) or term <= raft.raftCurrentTerm:
            return
        raft._SyncObj__setCurrentTerm(term, None)
        raft._SyncObj__setState(_RAFT_STATE.FOLLOWER)
        self._forget_leader()
        self._reset()

    def _forget_leader(self) -> None:
        raft = self._raft
        if raft._SyncObj__raftLeader is not None:
            raft._SyncObj__raftLeader = None
            raft._SyncObj__onLeaderChanged()  # fails what waits on the leader

    def _grant(self) -> None:
        self._elect = True
        self._raft._SyncObj__raftElectionDeadline = 0.0  # the next tick starts it

    def _majority(self) -> bool:
        return len(self._granted) > (len(self._raft._SyncObj__otherNodes) + 1) / 2

    def _reset(self) -> None:
        self._asking, self._granted, self._elect = None, set(), False

    # -- a voter asked ---------------------------------------------------------------

    def on_request(self, node, message: dict, withheld: bool) -> None:
        """Answer whether this replica would vote for `node` at the term it asks for
        (`withheld`: it would not, see DurableTransport._withheld). Nothing changes here."""
        raft = self._raft
        term, index, log_term = (
            message.get(k) for k in ("term", "last_log_index", "last_log_term")
        )
        if not all(isinstance(v, int) for v in (term, index, log_term)):
            return
        own_index, own_term = (
            raft._SyncObj__getCurrentLogIndex(),
            raft._SyncObj__getCurrentLogTerm(),
        )
        granted = (
            not withheld
            and raft._SyncObj__selfNode is not None
            and node in raft._SyncObj__otherNodes
            and raft._SyncObj__raftState != _RAFT_STATE.LEADER
            and time.monotonic() - self.heard_from_leader >= self._min_timeout
            and term > raft.raftCurrentTerm
            and (log_term, index) >= (own_term, own_index)
        )
        answer = {
            "type": ANSWER,
            "term": term,
            "granted": granted,
            "current_term": raft.raftCurrentTerm,
        }
        raft._SyncObj__transport.send(node, answer)
