"""Emergency repair: make the survivor of a lost quorum a single-replica cluster.

Like etcd's --force-new-cluster. The replica's data stays as it is; what changes is
membership (cluster/datadir.py): the member table keeps only this replica, and a new
Raft snapshot of its own state names it alone. Configured peers are then ignored.

What the log holds beyond what the replica applied is kept: those entries may never
have been committed by the old cluster, but the new single-member cluster commits them
at its first election. Dropping them instead could lose writes that were acknowledged
(committed by a majority that included this replica, not yet applied here); keeping
them can only make a write whose client saw a timeout ("outcome unknown") take effect.
Lost for good is whatever this replica never received: entries the others committed
without it.
"""

import os
from dataclasses import dataclass

from cluster import replica
from cluster.config import ConfigError
from cluster.datadir import JOURNAL, SNAPSHOT, STATE, set_sole_member, write_solo_snapshot
from cluster.journal import DurableJournal
from cluster.raft import NO_OP_ENTRY, _decode_entry, is_voter_change
from storage import members, snapshot
from storage.db import Store, TornStateError
from storage.members import Member


class RepairError(RuntimeError):
    """The data directory cannot be repaired as asked; the message says why."""


@dataclass
class Survivor:
    """How recent one replica's data is: what the operator compares before a repair."""

    source: str  # data directory or gRPC endpoint
    applied: int  # revision in LMDB: the last applied command
    last_index: int  # the Raft log's last entry
    last_term: int
    term: int  # current term
    state_hash: str = ""

    def recency(self) -> tuple[int, int, int]:
        """Raft's order of up-to-date logs, then what was applied."""
        return self.last_term, self.last_index, self.applied


def _check_data_dir(data_dir: str) -> None:
    for name in (os.path.join(STATE, "data.mdb"), JOURNAL):
        if not os.path.isfile(os.path.join(data_dir, name)):
            raise RepairError(f"{data_dir} is not a regraft data directory: it has no {name}")


class DataDir:
    """A stopped replica's data directory, locked (refused while a replica runs on it)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        _check_data_dir(self.path)
        try:
            self._lock = replica._lock_data_dir(self.path)
        except ConfigError as e:
            raise RepairError(f"{e}: stop that replica first") from None
        try:
            try:
                self.store = Store(os.path.join(self.path, STATE))
            except TornStateError as e:
                raise RepairError(
                    f"{e}. Start the replica once (regraft serve): it rebuilds its state "
                    "from its Raft snapshot and journal. Stop it, then run this again."
                ) from None
            try:
                self.journal = DurableJournal(os.path.join(self.path, JOURNAL))
            except BaseException:
                self.store.close()
                raise
        except BaseException:
            self._lock.close()
            raise
        snapshot_path = os.path.join(self.path, SNAPSHOT)
        self.snapshot = (
            snapshot.read_header(snapshot_path)[0] if os.path.isfile(snapshot_path) else None
        )

    def survivor(self) -> Survivor:
        with self.store.read() as view:
            applied, state_hash = view.revision, view.state_hash
        if len(self.journal):
            _, last_index, last_term = self.journal[-1]
        else:
            last_index, last_term = applied, 0
        return Survivor(
            self.path, applied, last_index, last_term, self.journal.getCurrentTerm(), state_hash
        )

    def commit_index(self) -> int:
        """As last recorded; not fsynced, so it may be lower than the truth."""
        return self.journal.getRaftCommitIndex()

    def members(self) -> list[Member]:
        with self.store.read() as view:
            return members.members(view)

    def make_single(self, member_id: str) -> dict:
        """Rewrite membership so that this replica (`member_id`) starts alone; returns
        the new Raft snapshot's header."""
        snapshot_path = os.path.join(self.path, SNAPSHOT)
        if self.snapshot is not None:
            # A snapshot received but not yet installed (a crash in between): install it
            # first, as the replica would at start-up, so the new one is not older.
            snapshot.install(self.store, snapshot_path)
        table = self.members()
        me = next((m for m in table if m.id == member_id), None)
        if table and me is None:
            raise RepairError(
                f"the member table of {self.path} has no member {member_id!r} "
                f"(it has {', '.join(m.id for m in table)}): give this replica's --id"
            )
        index = max(self.store.revision, self.snapshot["raft_index"] if self.snapshot else 0)
        if index < 2:
            raise RepairError(
                f"{self.path} has applied nothing: there is no data to keep; "
                "start a new cluster instead"
            )
        entries = {entry[1]: tuple(entry) for entry in self.journal}
        if self.snapshot is not None:
            for name in ("previous_entry", "last_entry"):
                entry = _decode_entry(self.snapshot[name])
                entries.setdefault(entry[1], entry)
        missing = [i for i in (index - 1, index) if i not in entries]
        if missing:
            raise RepairError(
                f"the Raft journal of {self.path} lacks entries {missing}, which the state "
                f"(revision {index}) needs: this data directory cannot be repaired"
            )
        # The table first: the snapshot copies it. Interrupted in between, running the
        # repair again finishes it.
        set_sole_member(self.store, me)
        nodes = [me.raft_address] if me else []
        last, previous = entries[index], entries[index - 1]
        header = write_solo_snapshot(self.store, self.path, last, previous, nodes)
        self._drop_voter_changes_after(index)
        return header

    def _drop_voter_changes_after(self, index: int) -> None:
        """PySyncObj's voter changes in the kept log tail become no-ops.

        Replayed after the repair, an "add voter" would bring back a member that the
        repair removed (a promotion cut short when the quorum was lost), and the
        single-replica cluster would need that dead voter's vote again.
        """
        kept = list(self.journal)
        changes = [
            i for i, (cmd, idx, _) in enumerate(kept) if idx > index and is_voter_change(cmd)
        ]
        first = changes[0] if changes else None
        if first is None:
            return
        self.journal.deleteEntriesFrom(first)
        for command, idx, term in kept[first:]:
            self.journal.add(NO_OP_ENTRY if is_voter_change(command) else command, idx, term)
        self.journal.sync()

    def close(self) -> None:
        self.journal._destroy()
        self.store.close()
        self._lock.close()
