"""ReadIndex on a fake Raft: when a heartbeat round confirms a linearizable read."""

from types import SimpleNamespace

import pytest

from cluster import readindex
from cluster.readindex import CARRIED, ECHO, REQUEST, VOUCH, NotConfirmed, ReadIndex

LEADER, FOLLOWER = 2, 0
COMMAND, NO_OP = b"\x00cmd", b"\x01"


class FakeRaft:
    """What ReadIndex reads of PySyncObj's state, and what it sends."""

    def __init__(self, state=LEADER, leader="a", term=3, voters=("b", "c")):
        self._SyncObj__raftState = state
        self.leader = leader
        self.raftCurrentTerm = term
        self._SyncObj__otherNodes = set(voters)
        # Entries 10..14: commands of term 2, then this leader's no-op (term 3).
        self._SyncObj__raftLog = [(COMMAND, i, 2) for i in range(10, 14)] + [(NO_OP, 14, 3)]
        self.raftCommitIndex = 14
        self.revision = 13
        self.appends_sent = 0
        self.sent = []
        self.reachable = True
        self._SyncObj__transport = self
        self.reads: ReadIndex | None = None  # set by started()
        self.connected = set(voters)
        self.carried = []  # (follower, what its append carried), as the transport sends
        # The highest index announced to a follower (cluster/commitnotice.py).
        self.announced = 0
        self.commit_notice = SimpleNamespace(announced=lambda: self.announced)

    def _getLeader(self):
        return self.leader

    def _send_appends(self):
        self.appends_sent += 1
        for node in sorted(self.reads.to_carry if self.reads else ()):
            if node in self.connected:
                self.carried.append((node, self.reads.to_carry.pop(node)))

    def send(self, node, message):
        self.sent.append((node, message))
        return self.reachable


def started(raft: FakeRaft):
    reads = ReadIndex(raft, wake=lambda: None)
    raft.reads = reads
    reads.on_tick()  # learns the term and leader
    return reads


def echo(reads: ReadIndex, node: str, round_: int, term: int = 3) -> None:
    reads.on_reply(node, {"type": "next_node_idx", ECHO: (round_, term)})


def test_a_read_is_confirmed_once_a_majority_echoed_a_round_sent_after_it():
    raft = FakeRaft()
    reads = started(raft)
    future = reads.request()
    reads.on_tick()
    assert (reads.sent_round, raft.appends_sent) == (1, 1)  # the round's heartbeats
    assert not future.done()
    echo(reads, "b", 1)  # with the leader: 2 of 3
    # The commit index is the no-op (14): the last command below it is 13.
    assert future.result(0) == 13


@pytest.mark.parametrize(
    ("node", "round_", "term"),
    [("b", 0, 3), ("b", 1, 2), ("learner", 1, 3)],
    ids=["an earlier round", "another term", "not a voter"],
)
def test_echoes_that_prove_nothing_do_not_confirm(node, round_, term):
    raft = FakeRaft()
    reads = started(raft)
    future = reads.request()
    reads.on_tick()
    echo(reads, node, round_, term)
    assert not future.done()


def test_with_five_voters_three_are_needed():
    raft = FakeRaft(voters=("b", "c", "d", "e"))
    reads = started(raft)
    future = reads.request()
    reads.on_tick()
    echo(reads, "b", 1)
    assert not future.done()
    echo(reads, "c", 2)  # a later round confirms the earlier ones too
    assert future.result(0) == 13


def test_no_round_before_the_leader_committed_an_entry_of_its_term():
    raft = FakeRaft()
    raft.raftCommitIndex = 13  # the no-op (term 3) is not committed yet
    reads = started(raft)
    future = reads.request()
    reads.on_tick()
    assert reads.sent_round == 0 and not future.done()
    raft.raftCommitIndex = 14
    reads.on_tick()
    echo(reads, "c", 1)
    assert future.result(0) == 13


@pytest.mark.parametrize(("announced", "served_at"), [(0, 13), (15, 15), (16, 15)])
def test_a_round_covers_what_the_leader_announced_to_a_follower(announced, served_at):
    # Commands 15 and a no-op 16 of this term are appended, not committed here; a
    # follower told the leader holds them may have committed and answered them.
    raft = FakeRaft()
    raft._SyncObj__raftLog += [(COMMAND, 15, 3), (NO_OP, 16, 3)]
    raft.announced = announced
    reads = started(raft)
    future = reads.request()
    reads.on_tick()
    echo(reads, "c", 1)
    assert future.result(0) == served_at


def test_a_change_of_leader_or_term_fails_the_waiting_reads():
    raft = FakeRaft()
    reads = started(raft)
    future = reads.request()
    reads.on_tick()
    raft.raftCurrentTerm, raft.leader, raft._SyncObj__raftState = 4, "b", FOLLOWER
    reads.on_tick()
    with pytest.raises(NotConfirmed):
        future.result(0)


def test_a_follower_asks_the_leader_and_waits_for_its_answer():
    raft = FakeRaft(state=FOLLOWER, leader="a")
    reads = started(raft)
    first, second = reads.request(), reads.request()
    reads.on_tick()
    ((to, asked),) = raft.sent  # one request for both reads
    assert to == "a" and asked["type"] == REQUEST
    reads.on_answer("b", {"id": asked["id"], "index": 99})  # not whom it asked
    reads.on_answer("a", {"id": ("an earlier run", 1), "index": 99})
    assert not first.done()
    reads.on_answer("a", {"id": asked["id"], "index": 57})
    assert (first.result(0), second.result(0)) == (57, 57)
    third = reads.request()
    reads.on_tick()
    reads.on_answer("a", {"id": raft.sent[-1][1]["id"], "index": None})  # no longer leads
    with pytest.raises(NotConfirmed):
        third.result(0)


def test_request_ids_differ_from_one_run_of_a_replica_to_the_next():
    ids = []
    for _ in range(2):
        raft = FakeRaft(state=FOLLOWER, leader="a")
        reads = started(raft)
        reads.request()
        reads.on_tick()
        ids.append(raft.sent[0][1]["id"])
    assert ids[0] != ids[1]


def test_a_follower_that_cannot_reach_the_leader_fails_at_once():
    raft = FakeRaft(state=FOLLOWER, leader="a")
    raft.reachable = False
    reads = started(raft)
    future = reads.request()
    reads.on_tick()
    with pytest.raises(NotConfirmed, match="cannot be reached"):
        future.result(0)


def test_a_round_is_confirmed_when_fewer_voters_make_its_echoes_a_majority():
    """Four voters, two of them down: one echo is not enough until one down voter is
    removed; nothing else echoes, and the next tick confirms it."""
    raft = FakeRaft(voters=("b", "c", "d"))
    reads = started(raft)
    future = reads.request()
    reads.on_tick()
    echo(reads, "b", 1)
    assert not future.done()
    raft._SyncObj__otherNodes = {"b", "c"}
    reads.on_tick()
    assert future.result(0) == 13


def test_a_follower_without_a_leader_fails_at_once():
    reads = started(FakeRaft(state=FOLLOWER, leader=None))
    future = reads.request()
    reads.on_tick()
    with pytest.raises(NotConfirmed, match="no leader known"):
        future.result(0)


def test_an_unanswered_request_fails_after_a_while(monkeypatch):
    raft = FakeRaft(state=FOLLOWER, leader="a")
    reads = started(raft)
    future = reads.request()
    reads.on_tick()
    monkeypatch.setattr(readindex, "ASK_TIMEOUT", 0.0)
    reads.on_tick()
    with pytest.raises(NotConfirmed, match="did not answer"):
        future.result(0)


def test_the_leader_answers_a_followers_request_once_confirmed():
    raft = FakeRaft()
    reads = started(raft)
    reads.on_request("b", {"type": REQUEST, "id": 7})
    reads.on_tick()
    assert raft.sent == []
    echo(reads, "c", 1)
    assert raft.sent == [("b", {"type": readindex.ANSWER, "id": 7, "index": 13})]


def test_reads_arriving_while_a_round_flies_share_the_next_one():
    raft = FakeRaft()
    reads = started(raft)
    first = reads.request()
    reads.on_tick()
    later = [reads.request() for _ in range(3)]
    reads.on_tick()
    reads.on_tick()
    assert (reads.sent_round, raft.appends_sent) == (1, 1)  # no second round yet
    raft._SyncObj__raftLog.append((COMMAND, 15, 3))
    raft.raftCommitIndex = 15  # a write committed before the later reads are confirmed
    echo(reads, "b", 1)
    assert first.result(0) == 13 and not any(f.done() for f in later)
    reads.on_tick()
    assert reads.sent_round == 2  # one round for all three
    echo(reads, "c", 2)
    assert [f.result(0) for f in later] == [15, 15, 15]


def test_a_follower_has_one_request_in_flight_and_asks_for_the_rest_together():
    raft = FakeRaft(state=FOLLOWER, leader="a")
    reads = started(raft)
    first = reads.request()
    reads.on_tick()
    later = [reads.request() for _ in range(3)]
    reads.on_tick()
    ((_, asked),) = raft.sent
    reads.on_answer("a", {"id": asked["id"], "index": 20})
    assert first.result(0) == 20 and not any(f.done() for f in later)
    reads.on_tick()
    assert len(raft.sent) == 2
    reads.on_answer("a", {"id": raft.sent[1][1]["id"], "index": 21})
    assert [f.result(0) for f in later] == [21, 21, 21]


def test_reads_waiting_behind_a_request_fail_when_the_leader_changes():
    raft = FakeRaft(state=FOLLOWER, leader="a")
    reads = started(raft)
    reads.request()
    reads.on_tick()
    waiting = reads.request()
    reads.on_tick()
    raft.leader, raft.raftCurrentTerm = "b", 4
    reads.on_tick()
    with pytest.raises(NotConfirmed, match="leader changed"):
        waiting.result(0)


def test_a_request_unanswered_for_a_while_is_asked_again_with_the_reads_after_it(
    monkeypatch,
):
    """It may be lost with a reset connection: its reads and the later ones are asked
    for anew; a late answer to it changes nothing then."""
    raft = FakeRaft(state=FOLLOWER, leader="a")
    reads = started(raft)
    first = reads.request()
    reads.on_tick()
    monkeypatch.setattr(readindex, "ASK_AGAIN_AFTER", 0.0)
    later = reads.request()
    reads.on_tick()
    assert len(raft.sent) == 2
    reads.on_answer("a", {"id": raft.sent[1][1]["id"], "index": 30})
    assert (first.result(0), later.result(0)) == (30, 30)
    reads.on_answer("a", {"id": raft.sent[0][1]["id"], "index": 29})
    assert first.result(0) == 30


def test_the_reads_of_a_lost_request_are_asked_for_again_without_new_reads(monkeypatch):
    """Not held until ASK_TIMEOUT (5 s, longer than many deadlines)."""
    raft = FakeRaft(state=FOLLOWER, leader="a")
    reads = started(raft)
    lost = reads.request()
    reads.on_tick()
    reads.on_tick()
    assert len(raft.sent) == 1  # in flight: not asked again yet
    monkeypatch.setattr(readindex, "ASK_AGAIN_AFTER", 0.0)
    reads.on_tick()
    assert len(raft.sent) == 2
    reads.on_answer("a", {"id": raft.sent[1][1]["id"], "index": 40})
    assert lost.result(0) == 40
    reads.on_tick()
    assert len(raft.sent) == 2  # nothing left to ask for


class Wakes:
    """Counts the wake-ups ReadIndex asks of the Raft thread."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.mark.parametrize("state", [LEADER, FOLLOWER])
def test_reads_arriving_while_a_round_or_request_flies_do_not_wake_the_raft_thread(state):
    """Its answer runs the tick that takes them; a read arriving when nothing flies
    wakes it."""
    raft, wakes = FakeRaft(state=state), Wakes()
    reads = ReadIndex(raft, wake=wakes)
    reads.on_tick()
    first = reads.request()
    assert wakes.count == 1
    reads.on_tick()  # the round starts, or the request goes out
    later = [reads.request() for _ in range(5)]
    assert wakes.count == 1
    if state == LEADER:
        echo(reads, "b", 1)
    else:
        reads.on_answer("a", {"id": raft.sent[0][1]["id"], "index": 20})
    assert first.done()
    reads.on_tick()  # the answer's tick takes the later reads: a new round or request
    if state == LEADER:
        echo(reads, "c", 2)
    else:
        reads.on_answer("a", {"id": raft.sent[1][1]["id"], "index": 21})
    assert all(f.done() for f in later)
    reads.on_tick()  # nothing flies now
    reads.request()
    assert wakes.count == 2


def test_a_read_queued_after_the_tick_took_the_queue_wakes_the_raft_thread(monkeypatch):
    """Told "busy" just before that tick found nothing in flight, it is not left
    waiting for a tick that nothing causes."""
    raft, wakes = FakeRaft(state=FOLLOWER), Wakes()
    reads = ReadIndex(raft, wake=wakes)
    reads.on_tick()
    reads.request()
    reads.on_tick()  # a request flies
    reads.request()  # told busy: no wake-up
    assert wakes.count == 1
    # The next tick took the queue just before that read was put, and nothing flies.
    monkeypatch.setattr(reads, "_take_arrived", lambda: False)
    reads.on_tick()
    assert wakes.count == 2


def test_a_vouching_followers_reads_go_with_the_rounds_append_when_two_make_a_majority():
    """Three voters: the leader and the follower that asked are a majority, so the
    append carries the index and nothing more is sent for those reads."""
    raft = FakeRaft()
    reads = started(raft)
    reads.on_request("b", {"type": REQUEST, "id": 7, VOUCH: True})
    reads.on_request("b", {"type": REQUEST, "id": 8, VOUCH: True})
    reads.on_request("c", {"type": REQUEST, "id": 9})  # a release that does not vouch
    reads.on_tick()
    assert raft.carried == [("b", (13, [7, 8]))]
    echo(reads, "c", 1)
    assert raft.sent == [("c", {"type": readindex.ANSWER, "id": 9, "index": 13})]


@pytest.mark.parametrize(
    ("voters", "connected"),
    [(("b", "c", "d", "e"), ("b", "c", "d", "e")), (("b", "c"), ("c",))],
    ids=["five voters", "its append not sent"],
)
def test_vouched_reads_are_answered_once_confirmed_when_no_append_carried_them(voters, connected):
    raft = FakeRaft(voters=voters)
    raft.connected = set(connected)
    reads = started(raft)
    reads.on_request("b", {"type": REQUEST, "id": 7, VOUCH: True})
    reads.on_tick()
    assert raft.carried == [] and raft.sent == []
    for node in ("c", "d"):
        echo(reads, node, 1)
    assert raft.sent == [("b", {"type": readindex.ANSWER, "id": 7, "index": 13})]


def test_a_leader_that_loses_its_term_fails_the_vouched_reads_it_could_not_carry():
    raft = FakeRaft()
    raft.connected = set()
    reads = started(raft)
    reads.on_request("b", {"type": REQUEST, "id": 7, VOUCH: True})
    reads.on_tick()
    raft.raftCurrentTerm, raft.leader, raft._SyncObj__raftState = 4, "b", FOLLOWER
    reads.on_tick()
    assert raft.sent == [("b", {"type": readindex.ANSWER, "id": 7, "index": None})]


def carried(raft: FakeRaft, index: int, term: int = 3) -> dict:
    """The leader's append that carries `index` for the request the follower sent."""
    (_, asked), *_ = raft.sent
    return {"type": "append_entries", "term": term, CARRIED: (index, [asked["id"]])}


def test_a_follower_vouches_and_serves_its_reads_on_the_append_that_carries_them():
    raft = FakeRaft(state=FOLLOWER, leader="a")
    reads = started(raft)
    future = reads.request()
    reads.on_tick()
    ((_, asked),) = raft.sent
    assert asked[VOUCH] is True
    reads.on_carried("a", carried(raft, 55))
    assert future.result(0) == 55


@pytest.mark.parametrize(
    ("sender", "append_term", "term_here"),
    [("b", 3, 3), ("a", 2, 3), ("a", 3, 4)],
    ids=["not the leader asked", "an older term", "this replica moved on"],
)
def test_an_append_this_replica_did_not_accept_as_its_leaders_confirms_nothing(
    sender, append_term, term_here
):
    raft = FakeRaft(state=FOLLOWER, leader="a")
    reads = started(raft)
    future = reads.request()
    reads.on_tick()
    raft.raftCurrentTerm = term_here
    reads.on_carried(sender, carried(raft, 55, term=append_term))
    assert not future.done()


def test_a_followers_request_does_not_wake_the_raft_thread_it_arrives_on():
    """It arrives inside the Raft thread's poll, and the tick after it starts the
    round: a wake-up would only cost a tick more."""
    raft, wakes = FakeRaft(), Wakes()
    reads = ReadIndex(raft, wake=wakes)
    raft.reads = reads
    reads.on_tick()
    reads.on_request("b", {"type": REQUEST, "id": 7, VOUCH: True})
    assert wakes.count == 0
    reads.on_tick()
    assert raft.carried == [("b", (13, [7]))]


def test_ids_a_follower_never_sent_are_ignored():
    """Not a (run, number) pair: nothing to answer, and no exception on the Raft thread."""
    raft = FakeRaft(state=FOLLOWER, leader="a")
    reads = started(raft)
    future = reads.request()
    reads.on_tick()
    reads.on_carried("a", {"type": "append_entries", "term": 3, CARRIED: (50, [["x"], 7])})
    reads.on_answer("a", {"id": ["x"], "index": 50})
    assert not future.done()
