"""PreVote on a fake Raft: when a replica may raise its term, and what voters grant."""

import time

import pytest

from cluster.prevote import ANSWER, FIRST_TIMEOUT, REQUEST, PreVote

FOLLOWER, CANDIDATE, LEADER = 0, 1, 2
MIN_TIMEOUT = 1.0


class FakeRaft:
    """What PreVote reads and changes of PySyncObj's state, and what it sends."""

    def __init__(self, state=FOLLOWER, term=3, voters=("b", "c"), log=(20, 3)):
        self._SyncObj__raftState = state
        self.raftCurrentTerm = term
        self._SyncObj__selfNode = "a"
        self._SyncObj__otherNodes = set(voters)
        self._SyncObj__transferInProgress = False
        self._SyncObj__raftElectionDeadline = time.monotonic() - 0.1  # passed
        self._SyncObj__raftLeader = "b"
        self.log = log  # (last index, last term)
        self.connected = True
        self.sent = []
        self._SyncObj__transport = self
        self.leader_changes = 0  # PySyncObj fails the commands waiting on the leader

    def _SyncObj__onLeaderChanged(self):
        self.leader_changes += 1

    def _SyncObj__connectedToAnyone(self):
        return self.connected

    def _SyncObj__generateRaftTimeout(self):
        return 1.5

    def _SyncObj__getCurrentLogIndex(self):
        return self.log[0]

    def _SyncObj__getCurrentLogTerm(self):
        return self.log[1]

    def _SyncObj__setCurrentTerm(self, term, voted_for):
        self.raftCurrentTerm = term

    def _SyncObj__setState(self, state):
        self._SyncObj__raftState = state

    def send(self, node, message):
        self.sent.append((node, message))
        return True

    def election_held(self) -> bool:
        """Whether PySyncObj's own check, next, would find the timeout not passed."""
        return self._SyncObj__raftElectionDeadline >= time.monotonic()


def asking(raft: FakeRaft) -> PreVote:
    pre_vote = PreVote(raft, MIN_TIMEOUT)
    pre_vote.enabled = True
    return pre_vote


def grant(pre_vote: PreVote, node: str, term: int = 4, granted: bool = True, current=3) -> None:
    pre_vote.on_answer(
        node, {"type": ANSWER, "term": term, "granted": granted, "current_term": current}
    )


def test_a_follower_past_its_timeout_asks_before_it_raises_its_term():
    raft = FakeRaft()
    pre_vote = asking(raft)
    pre_vote.before_election_check()
    assert raft.election_held() and raft.raftCurrentTerm == 3
    request = {"type": REQUEST, "term": 4, "last_log_index": 20, "last_log_term": 3}
    assert sorted(raft.sent, key=lambda s: s[0]) == [("b", request), ("c", request)]
    grant(pre_vote, "b")  # with itself: 2 of 3
    assert not raft.election_held()
    pre_vote.before_election_check()  # lets PySyncObj start the election
    assert not raft.election_held() and len(raft.sent) == 2


def test_a_replica_that_asks_no_longer_names_a_leader():
    """It stopped hearing it: while it asks (maybe for ever, if the others still hear
    the leader and it does not), it must not look ready or forward writes there."""
    raft = FakeRaft()
    pre_vote = asking(raft)
    pre_vote.before_election_check()
    assert raft._SyncObj__raftLeader is None and raft.leader_changes == 1
    raft._SyncObj__raftElectionDeadline = time.monotonic() - 0.1
    pre_vote.before_election_check()
    assert raft.leader_changes == 1  # once


def test_grants_older_than_the_shortest_timeout_are_asked_for_again(monkeypatch):
    """Connections lost after a majority granted: who grants now is asked anew."""
    raft = FakeRaft()
    pre_vote = asking(raft)
    pre_vote.before_election_check()
    grant(pre_vote, "b")
    raft.connected = False
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + MIN_TIMEOUT / 2)
    pre_vote.before_election_check()  # alone: nothing to do
    raft.connected = True
    monkeypatch.setattr(time, "monotonic", lambda: now + MIN_TIMEOUT + 0.1)
    pre_vote.before_election_check()
    assert raft.election_held() and len(raft.sent) == 4


def test_a_replica_that_did_not_run_reads_what_arrived_before_it_asks(monkeypatch):
    """Paused or starved past the timeout, its leader's appends may wait unread: it
    keeps its leader for a moment rather than forgetting it at once."""
    raft = FakeRaft()
    pre_vote = asking(raft)
    later = time.monotonic() + MIN_TIMEOUT + 0.5
    monkeypatch.setattr(time, "monotonic", lambda: later)
    pre_vote.before_election_check()
    assert raft.sent == [] and raft._SyncObj__raftLeader == "b" and raft.election_held()
    later += MIN_TIMEOUT / 4 + 0.01  # nothing came: the next tick after that asks
    pre_vote.before_election_check()
    assert len(raft.sent) == 2 and raft._SyncObj__raftLeader is None


def test_denials_hold_the_election_and_it_asks_again_at_the_next_timeout():
    raft = FakeRaft()
    pre_vote = asking(raft)
    pre_vote.before_election_check()
    grant(pre_vote, "b", granted=False)
    grant(pre_vote, "c", granted=False)
    assert raft.election_held() and raft.raftCurrentTerm == 3
    raft._SyncObj__raftElectionDeadline = time.monotonic() - 0.1
    pre_vote.before_election_check()
    assert raft.election_held() and len(raft.sent) == 4  # asked again


@pytest.mark.parametrize(
    ("node", "term"),
    [("b", 5), ("learner", 4)],
    ids=["another question's", "not a voter"],
)
def test_grants_that_prove_nothing_do_not_start_an_election(node, term):
    raft = FakeRaft()
    pre_vote = asking(raft)
    pre_vote.before_election_check()
    grant(pre_vote, node, term=term)
    assert raft.election_held()


def test_grants_after_the_asker_heard_from_a_leader_start_no_election():
    """The leader was only slow: its append came after the question."""
    raft = FakeRaft()
    pre_vote = asking(raft)
    pre_vote.before_election_check()
    pre_vote.heard_from_leader = time.monotonic() + 0.001
    grant(pre_vote, "b")
    grant(pre_vote, "c")
    assert raft.election_held()


def test_a_majority_granted_before_a_leader_spoke_is_not_used_later():
    """Its append came between the grants and the election: when the timeout passes
    again, the replica asks again."""
    raft = FakeRaft()
    pre_vote = asking(raft)
    pre_vote.before_election_check()
    grant(pre_vote, "b")
    pre_vote.heard_from_leader = time.monotonic() + 0.001
    raft._SyncObj__raftElectionDeadline = time.monotonic() - 0.1  # passed again later
    pre_vote.before_election_check()
    assert raft.election_held() and len(raft.sent) == 4


def test_a_voter_past_the_term_asked_for_gives_its_term_to_the_asker():
    """Else a replica behind in term could never be granted one, nor the others win
    its vote with a log it finds behind."""
    raft = FakeRaft()
    pre_vote = asking(raft)
    pre_vote.before_election_check()
    grant(pre_vote, "b", granted=False, current=7)
    assert (raft.raftCurrentTerm, raft._SyncObj__raftState) == (7, FOLLOWER)
    assert raft._SyncObj__raftLeader is None


def test_a_leader_told_of_a_newer_term_steps_down():
    """A replica that raised its term but whose votes were lost answers the leader's
    appends with its term (PySyncObj ignores them silently): else it stayed out."""
    raft = FakeRaft(state=LEADER)
    raft._SyncObj__raftLeader = "a"
    pre_vote = asking(raft)
    pre_vote.on_term({"type": "regraft_term", "term": 3})  # not newer
    assert raft._SyncObj__raftState == LEADER
    pre_vote.on_term({"type": "regraft_term", "term": 4})
    assert (raft.raftCurrentTerm, raft._SyncObj__raftState) == (4, FOLLOWER)
    assert raft._SyncObj__raftLeader is None and raft.leader_changes == 1


@pytest.mark.parametrize(
    ("change", "asks"),
    [
        ({"enabled": False}, False),
        ({"enabled": False, "unknown": True, "log": (1, 0)}, True),
        ({"enabled": False, "unknown": True}, False),
        ({"transfer": True}, False),
        ({"deadline": 60.0}, False),
        ({"connected": False}, False),
        ({"state": LEADER}, False),
        ({"state": CANDIDATE}, True),
    ],
    ids=[
        "before its machine version",
        "no state and an empty log: a new cluster or a wiped disk",
        "no state but a log: it may hold the longest",
        "a transfer",
        "timeout not passed",
        "alone",
        "leader",
        "candidate",
    ],
)
def test_when_it_asks(change, asks):
    raft = FakeRaft(state=change.get("state", FOLLOWER), log=change.get("log", (20, 3)))
    raft._SyncObj__transferInProgress = change.get("transfer", False)
    raft.connected = change.get("connected", True)
    if "deadline" in change:
        raft._SyncObj__raftElectionDeadline = time.monotonic() + change["deadline"]
    pre_vote = asking(raft)
    pre_vote.enabled = change.get("enabled", True)
    pre_vote.version_unknown = change.get("unknown", False)
    held_before = raft.election_held()
    pre_vote.before_election_check()
    assert bool(raft.sent) is asks
    if not asks:
        assert raft.election_held() is held_before  # PySyncObj decides, as before


@pytest.mark.parametrize(
    ("enabled", "learner", "hastened"),
    [(True, False, True), (False, False, False), (True, True, False)],
    ids=["it asks first", "it would not ask", "a learner"],
)
def test_at_start_up_the_first_timeout_is_short_only_when_asking_comes_first(
    enabled, learner, hastened
):
    raft = FakeRaft()
    full = time.monotonic() + 1.5  # as PySyncObj sets it at start-up
    raft._SyncObj__raftElectionDeadline = full
    if learner:
        raft._SyncObj__selfNode = None
    pre_vote = asking(raft)
    pre_vote.enabled = enabled
    started = time.monotonic()
    pre_vote.hasten_first_election()
    deadline = raft._SyncObj__raftElectionDeadline
    if hastened:
        low, high = (share * MIN_TIMEOUT for share in FIRST_TIMEOUT)
        assert started + low <= deadline <= time.monotonic() + high
    else:
        assert deadline == full
    assert raft.sent == [] and raft.raftCurrentTerm == 3  # a deadline moved, nothing else


def pysyncobj_tick(pre_vote: PreVote, raft: FakeRaft, slow: float = 0.0, heard: bool = False):
    """Raft._onTick over PySyncObj's: `slow` seconds of work (the journal's fsyncs), an
    append heard or not, then its own look at the timeout (which raises the term)."""

    def tick() -> None:
        time.sleep(slow)
        if heard:
            raft._SyncObj__raftElectionDeadline = time.monotonic() + 1.5
        if not raft.election_held() and raft.connected:
            raft.raftCurrentTerm += 1  # an election no voter was asked about

    if pre_vote.before_election_check():
        tick()
        return
    with pre_vote.holding_election():
        tick()


def test_a_timeout_passing_during_the_tick_is_asked_about_not_elected():
    """PySyncObj looks at the timeout after the journal's once-a-second fsyncs: one that
    passed in between started an election without PreVote (code review)."""
    raft = FakeRaft()
    raft._SyncObj__raftElectionDeadline = time.monotonic() + 0.02
    pre_vote = asking(raft)
    pysyncobj_tick(pre_vote, raft, slow=0.05)
    assert raft.raftCurrentTerm == 3 and raft.sent == []
    pysyncobj_tick(pre_vote, raft)  # the next tick asks first
    assert raft.raftCurrentTerm == 3 and {to for to, _ in raft.sent} == {"b", "c"}
    grant(pre_vote, "b")
    pysyncobj_tick(pre_vote, raft)  # granted: PySyncObj elects
    assert raft.raftCurrentTerm == 4


def test_a_timeout_set_during_a_held_tick_is_kept():
    raft = FakeRaft()
    raft._SyncObj__raftElectionDeadline = time.monotonic() + 0.02
    pre_vote = asking(raft)
    pysyncobj_tick(pre_vote, raft, slow=0.05, heard=True)
    assert raft._SyncObj__raftElectionDeadline > time.monotonic() + 1.0  # the append's


def test_with_no_other_voter_it_elects_itself_at_once():
    raft = FakeRaft(voters=())
    pre_vote = asking(raft)
    pre_vote.before_election_check()
    assert not raft.election_held() and raft.sent == []


def answer(raft: FakeRaft, heard_ago: float, term: int = 4, log=(20, 3), withheld=False):
    pre_vote = PreVote(raft, MIN_TIMEOUT)  # answering needs no machine version
    pre_vote.heard_from_leader = time.monotonic() - heard_ago
    request = {"type": REQUEST, "term": term, "last_log_index": log[0], "last_log_term": log[1]}
    pre_vote.on_request("b", request, withheld)
    ((to, answered),) = raft.sent
    assert to == "b" and answered["type"] == ANSWER and answered["term"] == term
    assert answered["current_term"] == raft.raftCurrentTerm
    return answered["granted"]


def test_a_voter_grants_when_it_would_vote_and_has_not_heard_from_a_leader():
    raft = FakeRaft()
    assert answer(raft, heard_ago=MIN_TIMEOUT + 0.1) is True
    assert raft.raftCurrentTerm == 3 and raft._SyncObj__raftLeader == "b"  # unchanged


@pytest.mark.parametrize(
    ("state", "heard_ago", "term", "log", "withheld"),
    [
        (FOLLOWER, 0.2, 4, (20, 3), False),
        (LEADER, 9.0, 4, (20, 3), False),
        (FOLLOWER, 9.0, 3, (20, 3), False),
        (FOLLOWER, 9.0, 4, (19, 3), False),
        (FOLLOWER, 9.0, 4, (30, 2), False),
        (FOLLOWER, 9.0, 4, (20, 3), True),
    ],
    ids=[
        "heard from a leader lately",
        "is the leader",
        "a term not past its own",
        "a shorter log",
        "a log of an older term",
        "withholds its vote",
    ],
)
def test_a_voter_denies(state, heard_ago, term, log, withheld):
    raft = FakeRaft(state=state)
    assert answer(raft, heard_ago, term, log, withheld) is False
