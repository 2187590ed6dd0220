"""A follower commits the writes it forwarded on the leader's word, not its commit index.

A write sent to a follower is forwarded to the leader and answered once the follower
has applied it, which PySyncObj's follower does when an append carries a commit index
that covers it: the follower's reply to the append, then the leader's tick that reads
it, commits, applies and writes LMDB, then the leader's next append. With three
voters (or two) the leader and that follower are a majority, and an entry both hold
on disk is committed: so, right after its own fsync, the leader tells each follower
that forwarded commands since its last word "my journal holds my log up to X, and X
is of my term T" (SYNCED), and the follower commits up to X, or up to its own last
entry Y below X if that is of term T, once it holds it on disk.

Why this is safe: it commits what the leader's own rule would commit on the
follower's reply (PySyncObj's leader: an entry of its term on a majority of its
latest configuration). It rests on:
- One leader per term (votes are fsynced before they leave; a voter that lost its
  disk withholds its vote: cluster/transport.py).
- The follower acts only in term T, on its current leader's word: it stored its
  entry of term T while in term T, from that leader (a stale notice of an earlier
  term, arriving after the follower moved on, is refused: its entry of term T may
  have come from a log a later leader overwrites). A leader never overwrites its own
  entries, so the leader's entry is the same, and by Log Matching every one before.
- Both fsynced it: the transport syncs the journal before any message leaves a
  replica, this one included, and the follower syncs before it commits.
- The leader sends it only while it and any one other voter are a majority of its
  latest configuration, X being its last entry. A voter change appended after it
  leaves a configuration in which any majority includes one of the two, and regraft
  makes one change at a time (cluster/membership.py). The follower's own check of its
  configuration only refuses more.

Reads. A client told of a write by the follower may then read from the leader, whose
commit index may not have reached the write yet: a leader's read index is at least
the highest X it has announced in its term (cluster/readindex.py); a read served there
waits until that replica has applied X. Should X never commit (the follower lacked it,
then the leader lost its term), such a read waits until the new history reaches
index X, or its deadline.

Older releases ignore the message (an unknown type), and send none: no machine
version gates it. Everything here runs on the Raft thread.
"""

from pysyncobj.syncobj import _RAFT_STATE

from cluster import metrics
from cluster.readindex import pair_is_a_majority

SYNCED = "regraft_synced"


class CommitNotice:
    def __init__(self, raft) -> None:
        self._raft = raft  # cluster.raft.Raft: PySyncObj's state, read on its thread
        # Leader, in term _term: per follower, the highest index a command it forwarded
        # got, and the highest index announced to it; the highest announced to anyone.
        self._term = 0
        self._forwarded: dict = {}
        self._told: dict = {}
        self._announced = 0

    def _this_term(self) -> None:
        """Forget what was forwarded and told in an earlier term (another log)."""
        term = self._raft.raftCurrentTerm
        if term != self._term:
            self._term, self._forwarded, self._told, self._announced = term, {}, {}, 0

    # -- the leader --------------------------------------------------------------------

    def on_forwarded(self, node, index: int) -> None:
        """The leader appended a command `node` forwarded, at `index`."""
        self._this_term()
        if node in self._raft._SyncObj__otherNodes and index > self._forwarded.get(node, 0):
            self._forwarded[node] = index  # a voter: learners are in no majority

    def after_sync(self) -> None:
        """Called by the leader right after its journal is fsynced: tell the followers
        waiting for their forwarded commands that it holds them."""
        raft = self._raft
        voters = raft._SyncObj__otherNodes
        if not pair_is_a_majority(voters) or raft._SyncObj__raftState != _RAFT_STATE.LEADER:
            return
        self._this_term()
        index, term = raft._SyncObj__getCurrentLogIndex(), raft.raftCurrentTerm
        if raft._SyncObj__getCurrentLogTerm() != term:
            return  # before its own no-op: nothing of its term yet
        commit = raft.raftCommitIndex
        notice = {"type": SYNCED, "index": index, "term": term}
        for node in voters:
            forwarded = self._forwarded.get(node, 0)
            if forwarded <= max(commit, self._told.get(node, 0)):
                continue  # nothing of its waits, or already said
            # Announced before it leaves: a send that fails may have left (PySyncObj).
            self._announced = index
            if raft._SyncObj__transport.send(node, notice):
                self._told[node] = index

    def announced(self) -> int:
        """The highest index this leader announced in its current term (0 if none)."""
        return self._announced if self._term == self._raft.raftCurrentTerm else 0

    # -- a follower ----------------------------------------------------------------------

    def on_synced(self, node, message: dict) -> None:
        """The leader holds its log up to message["index"] on disk: commit that far, or
        to this replica's last entry below it, if it holds that of the same term (see
        the module's docstring)."""
        raft = self._raft
        index, term = message.get("index"), message.get("term")
        if type(index) is not int or type(term) is not int:
            return
        if (
            raft._SyncObj__selfNode is None  # a learner: not part of any majority
            or not pair_is_a_majority(raft._SyncObj__otherNodes)
            or raft._SyncObj__raftState != _RAFT_STATE.FOLLOWER
            or term != raft.raftCurrentTerm  # it stored its entries of term T in term T
            or raft._getLeader() != node
        ):
            return
        upto = min(index, raft._SyncObj__getCurrentLogIndex())
        log = raft._SyncObj__raftLog
        first = log[0][1]
        if upto <= raft.raftCommitIndex or upto < first or log[upto - first][2] != term:
            return
        raft.journal.sync()  # its reply to the append synced it already; cheap then
        raft._SyncObj__raftCommitIndex = upto
        log.setRaftCommitIndex(upto)
        metrics.commits_on_notice.inc()
