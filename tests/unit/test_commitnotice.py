"""The leader's SYNCED notice on a fake Raft: who is told, and when a follower commits."""

import pytest

from cluster import metrics
from cluster.commitnotice import SYNCED, CommitNotice

FOLLOWER, LEADER = 0, 2


class FakeLog(list):
    """PySyncObj's log (entries (command, index, term)) with the journal's commit index."""

    commit_saved = None

    def setRaftCommitIndex(self, index):
        self.commit_saved = index


class FakeRaft:
    """What CommitNotice reads and changes of PySyncObj's state, and what it sends."""

    def __init__(self, state=FOLLOWER, term=3, voters=("a", "c"), leader="a"):
        self._SyncObj__raftState = state
        self.raftCurrentTerm = term
        self._SyncObj__selfNode = "b"
        self._SyncObj__otherNodes = set(voters)
        self.leader = leader
        # Entries 10..12 of term 2, then 13..16 of term 3 (13: the leader's no-op).
        self._SyncObj__raftLog = FakeLog(
            [(b"c", i, 2) for i in range(10, 13)] + [(b"c", i, 3) for i in range(13, 17)]
        )
        self._SyncObj__raftCommitIndex = 13
        self.events = []  # journal syncs and sends, in order
        self.reachable = {node: True for node in voters}
        self._SyncObj__transport = self
        self.journal = self

    @property
    def raftCommitIndex(self):
        return self._SyncObj__raftCommitIndex

    def _getLeader(self):
        return self.leader

    def _SyncObj__getCurrentLogIndex(self):
        return self._SyncObj__raftLog[-1][1]

    def _SyncObj__getCurrentLogTerm(self):
        return self._SyncObj__raftLog[-1][2]

    def sync(self):
        self.events.append("sync")

    def send(self, node, message):
        self.events.append((node, message))
        return self.reachable[node]


def notice(index=16, term=3):
    return {"type": SYNCED, "index": index, "term": term}


# -- the leader ---------------------------------------------------------------------


def leading(voters=("b", "c")) -> tuple[FakeRaft, CommitNotice]:
    raft = FakeRaft(state=LEADER, voters=voters, leader="a")
    raft._SyncObj__selfNode = "a"
    return raft, CommitNotice(raft)


def test_the_leader_tells_the_followers_whose_forwarded_commands_it_holds():
    raft, notices = leading()
    notices.on_forwarded("b", 15)
    notices.after_sync()
    assert raft.events == [("b", notice(16))]
    assert notices.announced() == 16


def test_the_leader_tells_a_follower_once_per_forwarded_command():
    raft, notices = leading()
    notices.on_forwarded("b", 15)
    notices.on_forwarded("b", 14)  # an older one, answered later: nothing new
    notices.after_sync()
    notices.after_sync()
    assert raft.events == [("b", notice(16))]
    raft._SyncObj__raftLog.append((b"c", 17, 3))
    notices.on_forwarded("b", 17)
    notices.after_sync()
    assert raft.events[1:] == [("b", notice(17))]


def test_commands_the_commit_index_covers_need_no_notice():
    raft, notices = leading()
    notices.on_forwarded("b", 15)
    raft._SyncObj__raftCommitIndex = 15
    notices.after_sync()
    assert raft.events == [] and notices.announced() == 0


@pytest.mark.parametrize("why", ["five voters", "own term not reached", "not leader"])
def test_no_notice_where_the_two_may_not_be_a_majority_or_the_log_not_its_own(why):
    raft, notices = leading(voters=("b", "c", "d", "e") if why == "five voters" else ("b", "c"))
    if why == "own term not reached":
        raft._SyncObj__raftLog[:] = raft._SyncObj__raftLog[:3]  # last entry of term 2
    if why == "not leader":
        raft._SyncObj__raftState = FOLLOWER
    raft._SyncObj__raftCommitIndex = 11
    notices.on_forwarded("b", raft._SyncObj__getCurrentLogIndex())
    notices.after_sync()
    assert raft.events == [] and notices.announced() == 0


def test_a_notice_that_could_not_be_sent_is_announced_and_sent_again():
    # PySyncObj's send may fail after part of it left: reads must cover it anyway.
    raft, notices = leading()
    raft.reachable["b"] = False
    notices.on_forwarded("b", 15)
    notices.after_sync()
    assert notices.announced() == 16
    raft.reachable["b"] = True
    notices.after_sync()  # tried again
    assert raft.events == [("b", notice(16)), ("b", notice(16))]


def test_what_was_forwarded_told_or_announced_in_an_earlier_term_counts_for_nothing():
    raft, notices = leading()
    notices.on_forwarded("b", 16)
    notices.after_sync()
    notices.on_forwarded("c", 16)
    raft.raftCurrentTerm = 4  # leader again, in a log of its new term up to 15
    raft._SyncObj__raftLog[3:] = [(b"c", 13, 4), (b"c", 14, 4), (b"c", 15, 4)]
    assert notices.announced() == 0
    notices.after_sync()
    assert raft.events == [("b", notice(16))]  # c's command of term 3 is gone
    notices.on_forwarded("b", 15)  # below what b was told in term 3
    notices.after_sync()
    assert raft.events[1:] == [("b", notice(15, term=4))] and notices.announced() == 15


def test_a_learners_forwarded_commands_get_no_notice_and_are_not_kept():
    # Each connection of a learner is a node of its own: keeping them would grow.
    raft, notices = leading()
    for connection in range(100):
        notices.on_forwarded(f"learner-{connection}", 15)
    raft.reachable["learner-0"] = True
    notices.after_sync()
    assert raft.events == [] and notices.announced() == 0 and notices._forwarded == {}


# -- a follower ---------------------------------------------------------------------


@pytest.mark.parametrize("voters", [("a", "c"), ("a",)], ids=["three voters", "two voters"])
def test_a_follower_commits_on_its_leaders_notice_after_syncing_its_journal(voters):
    raft = FakeRaft(voters=voters)
    before = metrics.commits_on_notice._value.get()
    CommitNotice(raft).on_synced("a", notice(15))
    assert raft.raftCommitIndex == 15 and raft._SyncObj__raftLog.commit_saved == 15
    assert raft.events == ["sync"]
    assert metrics.commits_on_notice._value.get() == before + 1


def test_a_notice_past_its_log_commits_its_entries_of_that_term():
    """The leader holds more than the follower got (an append in batches): the
    follower's entries of the leader's term are the leader's, hence committed too."""
    raft = FakeRaft()
    CommitNotice(raft).on_synced("a", notice(19))
    assert raft.raftCommitIndex == 16 and raft._SyncObj__raftLog.commit_saved == 16


REFUSED = {
    "a learner": ({"self": None}, notice()),
    "five voters": ({"voters": ("a", "c", "d", "e")}, notice()),
    "a candidate": ({"state": 1}, notice()),
    # A leader of term 2's word arriving late, in term 3: the follower's entry 12 of
    # term 2 may be from a log a later leader overwrites.
    "an earlier term's notice": ({"commit": 11}, notice(index=12, term=2)),
    "a later term's notice": ({}, notice(term=4)),
    "not from its leader": ({"from": "c"}, notice()),
    "already committed": ({}, notice(index=13)),
    "its last entry of another term": ({"log_to": 12, "commit": 11}, notice()),
    "its entry of another term": ({"commit": 11}, notice(index=12, term=3)),
    "compacted away": ({"first": 14}, notice(index=13)),
    "not a number": ({}, {"type": SYNCED, "index": "16", "term": 3}),
    "a bool": ({}, {"type": SYNCED, "index": True, "term": 3}),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_notice_that_proves_nothing_commits_nothing(case):
    setup, message = REFUSED[case]
    raft = FakeRaft(state=setup.get("state", FOLLOWER), voters=setup.get("voters", ("a", "c")))
    if "self" in setup:
        raft._SyncObj__selfNode = setup["self"]
    if "first" in setup:
        raft._SyncObj__raftLog[:] = [e for e in raft._SyncObj__raftLog if e[1] >= setup["first"]]
        raft._SyncObj__raftCommitIndex = 12  # in the snapshot
    if "log_to" in setup:
        raft._SyncObj__raftLog[:] = [e for e in raft._SyncObj__raftLog if e[1] <= setup["log_to"]]
    raft._SyncObj__raftCommitIndex = setup.get("commit", raft.raftCommitIndex)
    commit = raft.raftCommitIndex
    CommitNotice(raft).on_synced(setup.get("from", "a"), message)
    assert raft.raftCommitIndex == commit and raft._SyncObj__raftLog.commit_saved is None
