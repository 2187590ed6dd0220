"""Backup files offline: verify checks everything, restore refuses what it cannot trust
and leaves nothing behind, and a restored data directory starts a new cluster above the
backup's revision."""

import hashlib
import io
import os
import threading
from types import SimpleNamespace

import pytest

from cluster import backup, datadir
from regraft.v1 import cluster_pb2, registry_pb2
from storage import commands, db, keys, members, snapshot
from storage.db import FormatError, Store
from storage.members import Member, Role
from storage.snapshot import SnapshotError
from tests.unit.test_storage import Replica, _damaged_copies, _populate


@pytest.fixture
def source(tmp_path):
    replica = Replica(str(tmp_path / "source"))
    # The first leader's seeding names the cluster.
    replica.ok(commands.seed_members([], cluster_id="5eed" * 8))
    _populate(replica)
    _populate(replica, repo="team/other", tags=("a", "b", "c"))
    yield replica
    replica.store.close()


def _backup(replica, path: str) -> dict:
    with replica.store.read() as view:
        return snapshot.write(replica.store, view, path, {"kind": "backup"})


def _listing(path: str) -> list[str]:
    return sorted(os.listdir(path))


def test_inspect_reports_the_state_and_recomputes_its_hash(source, tmp_path):
    path = str(tmp_path / "backup")
    header = _backup(source, path)
    found = backup.inspect(path)
    assert (found.revision, found.state_hash) == (source.index, source.state_hash())
    assert found.state_hash == header["state_hash"] != "0" * 64
    with source.store.read() as view:
        assert found.entries == {name: view.count(name) for name in db.DATABASES}
        assert found.cluster_id == view.cluster_id != ""
    assert found.entries["repos"] == 2 and found.entries["tags"] == 5
    assert found.size == os.path.getsize(path)
    assert found.data_format == db.FORMAT_VERSION


def test_inspect_finds_records_that_do_not_match_the_state_hash(source, tmp_path):
    # A record changed behind the hash's back: the file's checksum is fine, the
    # state is not what the hash says.
    with source.store.env.begin(write=True) as txn:
        handle = source.store.env.open_db(b"tags", txn=txn)
        key, _ = next(iter(txn.cursor(db=handle)))
        txn.put(key, b"sha256:" + b"0" * 64, db=handle)
    path = str(tmp_path / "backup")
    _backup(source, path)
    with pytest.raises(SnapshotError, match="state hash mismatch"):
        backup.inspect(path)


def test_restore_refuses_damaged_backups_and_leaves_nothing(source, tmp_path):
    path = str(tmp_path / "backup")
    _backup(source, path)
    parent = tmp_path / "restores"
    parent.mkdir()
    target = str(parent / "r1")
    for name, damaged in _damaged_copies(path, tmp_path):
        with pytest.raises(SnapshotError) as caught:
            backup.restore(damaged, target)
        assert str(caught.value).startswith(damaged + ": "), name
        assert _listing(str(parent)) == [], name


def test_a_directory_is_refused_as_not_a_backup_file(tmp_path):
    directory = str(tmp_path / "backups")
    os.mkdir(directory)
    for check in (backup.inspect, lambda path: backup.restore(path, str(tmp_path / "r1"))):
        with pytest.raises(SnapshotError, match="not a file"):
            check(directory)
    assert not os.path.exists(tmp_path / "r1")


def test_restore_refuses_a_newer_backup_format(source, tmp_path):
    path = str(tmp_path / "backup")
    _backup(source, path)
    with open(path, "rb") as f:
        data = f.read()
    newer = str(tmp_path / "newer")
    with open(newer, "wb") as f:
        f.write(data.replace(snapshot.MAGIC, b"REGRAFT-SNAP-v2\n", 1))
    target = str(tmp_path / "r1")
    with pytest.raises(SnapshotError, match="snapshot format version 2 is newer than this"):
        backup.restore(newer, target)
    with pytest.raises(SnapshotError, match="snapshot format version 2 is newer than this"):
        backup.inspect(newer)
    assert not os.path.exists(target)


def test_restore_refuses_a_newer_data_format(source, tmp_path):
    with source.store.env.begin(write=True) as txn:
        txn.put(b"format_version", keys.u64(db.FORMAT_VERSION + 1))
    path = str(tmp_path / "backup")
    _backup(source, path)
    parent = tmp_path / "restores"
    parent.mkdir()
    with pytest.raises(FormatError, match="newer than this regraft understands"):
        backup.restore(path, str(parent / "r1"))
    assert _listing(str(parent)) == []


def test_restore_refuses_a_non_empty_data_dir(source, tmp_path):
    path = str(tmp_path / "backup")
    _backup(source, path)
    target = tmp_path / "r1"
    target.mkdir()
    (target / "something").write_text("keep me")
    with pytest.raises(backup.BackupError, match="is not empty"):
        backup.restore(path, str(target))
    assert _listing(str(target)) == ["something"]
    assert (target / "something").read_text() == "keep me"


@pytest.mark.parametrize(
    ("bump", "member"),
    [(0, None), (500, Member(id="n1", raft_address="127.0.0.1:9", grpc_address="127.0.0.1:8"))],
)
def test_restore_makes_a_new_single_replica_cluster_above_the_backup(
    source, tmp_path, bump, member
):
    with source.store.read() as view:
        original = view.cluster_id
    old = [Member(id=f"r{i}", raft_address=f"10.0.0.{i}:7410", role=Role.VOTER) for i in (1, 2, 3)]
    source.ok(commands.seed_members(old))
    path = str(tmp_path / "backup")
    header = _backup(source, path)
    target = tmp_path / "r1"
    target.mkdir()  # empty: allowed
    done = backup.restore(path, str(target), member, bump=bump)
    assert (done.revision, done.state_hash) == (header["revision"], header["state_hash"])
    assert done.raft_index == header["revision"] + bump
    assert done.cluster_id != original
    assert _listing(str(target)) == [datadir.SNAPSHOT, datadir.STATE]
    raft_header, _, _ = snapshot.read_header(str(target / datadir.SNAPSHOT))
    assert raft_header["raft_index"] == done.raft_index
    assert raft_header["previous_entry"][1] == done.raft_index - 1
    assert raft_header["nodes"] == ([member.raft_address] if member else [])
    store = Store(str(target / datadir.STATE))
    try:
        with store.read() as view:
            assert view.revision == header["revision"]
            assert view.state_hash == view.recompute_state_hash() != header["state_hash"]
            assert view.cluster_id == done.cluster_id
            # The old members are forgotten: the new replica is alone.
            expected = [(member.id, member.raft_address, Role.VOTER)] if member else []
            assert [(m.id, m.raft_address, m.role) for m in members.members(view)] == expected
            restored_hash = view.state_hash
    finally:
        store.close()
    # The Raft snapshot (what a joining replica is sent) holds the same state.
    shipped = backup.inspect(str(target / datadir.SNAPSHOT))
    assert (shipped.cluster_id, shipped.state_hash) == (done.cluster_id, restored_hash)
    assert not [name for name in os.listdir(tmp_path) if "restoring" in name]


def _stream(data: bytes, size: int | None = None, sha256: str = "", version: int = 1):
    header = cluster_pb2.BackupHeader(
        revision=7, size=len(data) if size is None else size, format_version=version
    )
    yield cluster_pb2.BackupChunk(header=header)
    for i in range(0, len(data), 10):
        yield cluster_pb2.BackupChunk(data=data[i : i + 10])
    if sha256 is not None:
        digest = sha256 or hashlib.sha256(data).hexdigest()
        yield cluster_pb2.BackupChunk(trailer=cluster_pb2.BackupTrailer(sha256=digest))


def test_a_broken_backup_stream_is_refused():
    data = os.urandom(55)
    received = io.BytesIO()
    header, digest = backup._receive(_stream(data), received, lambda done, total: None)
    assert (header.revision, digest) == (7, hashlib.sha256(data).hexdigest())
    assert received.getvalue() == data
    for stream, problem in [
        (_stream(data, sha256=None), "ended before its trailer"),
        (_stream(data, size=60), "held 55 bytes, its header said 60"),
        (_stream(data, sha256="0" * 64), "sha256 mismatch"),
        (_stream(data, version=2), "backup format version 2, newer than this regraft reads"),
        (iter([cluster_pb2.BackupChunk(data=b"x")]), "unexpected data message"),
    ]:
        with pytest.raises(backup.BackupError, match=problem):
            backup._receive(stream, io.BytesIO(), lambda done, total: None)


class _Reads:
    """Reads.view over a plain store: the state as it is."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def view(self, options, timeout, active):
        return self._store.read()


def test_a_backup_whose_client_stops_reading_is_cancelled_and_frees_the_slot(
    source, tmp_path, monkeypatch
):
    """One backup at a time per replica: a client that stopped reading (its pipe
    full) held that slot, and a copy of the state on disk, until it went away."""
    monkeypatch.setattr(backup, "STALLED_AFTER", 0.3)
    raft = SimpleNamespace(store=source.store, snapshot_path=str(tmp_path / "raft.snapshot"))
    backups = backup.BackupSource(raft, _Reads(source.store), "r1")
    cancelled = threading.Event()
    read = registry_pb2.ReadOptions(consistency=registry_pb2.STALE)
    stalled = backups.stream(read, 5.0, lambda: True, cancelled.set)
    assert next(stalled).header.revision == source.index  # then it reads no more
    assert cancelled.wait(10)  # what grpcio does next: end the call, close the stream
    stalled.close()
    assert not [name for name in os.listdir(tmp_path) if name.startswith("backup-")]
    again = threading.Event()
    reading = list(backups.stream(read, 5.0, lambda: True, again.set))
    assert reading[0].header.revision == source.index and reading[-1].trailer.sha256
    assert not again.is_set()
