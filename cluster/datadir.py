"""A replica's data directory, offline: its layout, and starting it as a cluster alone.

Alone means twice: Raft's voters (the nodes of the Raft snapshot, which PySyncObj
loads at start-up) and the replicated member table (storage/members.py), from which
cluster/replica.py takes the Raft peers it starts with.

Used by restore and emergency repair, which prepare a data directory while no replica
runs on it, and by cluster/replica.py to open its state. The names are those
cluster/replica.py and cluster/raft.py use.
"""

import logging
import os
import shutil

from cluster.raft import snapshot_header
from storage import members, snapshot
from storage.db import FormatError, Store, TornStateError
from storage.members import Member, Role
from storage.snapshot import SnapshotError

STATE = "state"  # the LMDB environment
JOURNAL = "raft.journal"
SNAPSHOT = "raft.snapshot"  # PySyncObj's fullDumpFile

log = logging.getLogger(__name__)


def open_state(data_dir: str) -> Store:
    """The replica's LMDB state, rebuilt if a crash of the machine may have torn it.

    LMDB commits without fsync (storage/db.py), so after such a crash only the Raft
    snapshot and the journal, both fsynced, are trusted: the state starts again from
    the snapshot (here, so that the member table is read from it), and Raft applies
    the journal's entries after it as it does after any restart.
    """
    path = os.path.join(data_dir, STATE)
    try:
        return Store(path)
    except TornStateError as e:
        log.warning("%s: rebuilding it from the Raft snapshot and journal", e)
    shutil.rmtree(path)
    store = Store(path)
    snapshot_path = os.path.join(data_dir, SNAPSHOT)
    if os.path.isfile(snapshot_path):
        try:
            snapshot.install(store, snapshot_path)
        except SnapshotError as e:
            store.close()
            raise FormatError(f"cannot rebuild the state of {data_dir}: {e}") from None
    return store


def write_solo_snapshot(
    store: Store, data_dir: str, last: tuple, previous: tuple, nodes: list[str]
) -> dict:
    """Write the store's state as the Raft snapshot of `data_dir`, covering the log up
    to `last` (command, index, term), with `nodes` (this replica's Raft address, or
    none) as the whole membership: PySyncObj loads it at start-up and drops every
    configured peer that it does not name."""
    header = snapshot_header(last, previous, nodes)
    with store.read() as view:
        return snapshot.write(store, view, os.path.join(data_dir, SNAPSHOT), header)


def set_sole_member(store: Store, member: Member | None) -> list[str]:
    """Make `member` (as a VOTER) the whole replicated member table, or empty it (the
    replica's first leadership then records its configuration); returns the ids of
    the members forgotten. Done outside the log, like the snapshot above."""
    batch = store.batch()
    try:
        forgotten = [m.id for m in members.members(batch) if member is None or m.id != member.id]
        for member_id in forgotten:
            batch.delete("members", member_id.encode())
        if member is not None:
            voter = Member(
                id=member.id,
                raft_address=member.raft_address,
                grpc_address=member.grpc_address,
                role=Role.VOTER,
            )
            batch.put("members", member.id.encode(), voter.SerializeToString(deterministic=True))
        batch.commit()
    except BaseException:
        batch.abort()
        raise
    return forgotten
