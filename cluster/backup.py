"""Backup and restore: an online, consistent copy of the state, streamed over gRPC.

A backup file is a snapshot file (storage/snapshot.py): the format Raft already ships
to replicas that fall behind, so one reader verifies both, its checksum covers the
whole file, and restore accepts either. The replica writes it from one LMDB read
transaction (a single revision, while writes go on) into a temporary file in its data
directory, then streams it: header (revision, size, cluster identity), chunks, and a
sha256 of the bytes. Writing first costs disk space, but the header can give the size
and the read transaction ends before the (possibly slow) transfer does.

Restore turns a backup into the data directory of a new single-replica cluster with a
new cluster identity, whose Raft log continues above the backup's revision: revisions
never go backwards for clients that watch.
"""

import datetime
import glob
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
from pysyncobj.syncobj import _COMMAND_TYPE

from cluster import rpc
from cluster.client import Credentials, dial
from cluster.datadir import STATE, set_sole_member, write_solo_snapshot
from cluster.raft import Raft
from cluster.reads import Reads
from regraft.v1 import cluster_pb2, cluster_pb2_grpc, registry_pb2
from storage import snapshot
from storage.db import DATABASES, Store
from storage.files import fsync_dir
from storage.members import Member
from storage.snapshot import SnapshotError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# A backup whose client has read nothing for this long is cancelled: it holds the one
# backup slot of its replica, and a copy of the state on its disk. A chunk takes about
# 8 s at 1 Mbit/s.
STALLED_AFTER = 120.0
_TEMPORARY = "backup-"
# What a restored replica's Raft log starts with: entries that were never commands.
_NO_OP = bytes([_COMMAND_TYPE.NO_OP])


class BackupError(RuntimeError):
    """A backup could not be taken, received or restored; the message says why."""


# -- the replica's side -----------------------------------------------------------------


class BackupSource:
    """Streams backups of one replica, one at a time (each needs a copy's disk space)."""

    def __init__(self, raft: Raft, reads: Reads, replica_id: str) -> None:
        self._raft = raft
        self._reads = reads
        self._replica_id = replica_id
        self._directory = os.path.dirname(os.path.abspath(raft.snapshot_path))
        self._busy = threading.Lock()
        # Left behind by a process that died mid-backup; we hold the data directory.
        for stale in glob.glob(os.path.join(self._directory, _TEMPORARY + "*")):
            shutil.rmtree(stale, ignore_errors=True)

    def stream(
        self,
        options: registry_pb2.ReadOptions,
        timeout: float,
        active: Callable[[], bool],
        cancel: Callable[[], None],
    ) -> Iterator:
        """BackupChunks: a header, the file in chunks, the sha256 of the file. The call
        is cancelled once its client has read nothing for STALLED_AFTER seconds."""
        if not self._busy.acquire(blocking=False):
            raise rpc.Exhausted(
                "a backup of this replica is already running: wait, or back up another replica"
            )
        stall = _StallWatch(cancel)
        try:
            with tempfile.TemporaryDirectory(dir=self._directory, prefix=_TEMPORARY) as tmp:
                path = os.path.join(tmp, "backup")
                with self._reads.view(options, timeout, active) as view:
                    header = snapshot.write(
                        self._raft.store,
                        view,
                        path,
                        {
                            "kind": "backup",
                            "cluster_id": view.cluster_id,
                            "replica_id": self._replica_id,
                            "created": datetime.datetime.now(datetime.UTC).isoformat(),
                        },
                    )
                stall.start()
                for chunk in _chunks(path, header):
                    yield chunk  # back once grpcio has sent it: the client reads
                    stall.progress()
        finally:
            stall.stop()
            self._busy.release()


class _StallWatch:
    """Cancels a call whose chunks stopped going out for STALLED_AFTER seconds."""

    def __init__(self, cancel: Callable[[], None]) -> None:
        self._cancel = cancel
        self._last = time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="backup-stall", daemon=True)

    def start(self) -> None:
        self._last = time.monotonic()
        self._thread.start()

    def progress(self) -> None:
        self._last = time.monotonic()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _watch(self) -> None:
        while not self._stopped.wait(min(5.0, STALLED_AFTER / 4)):
            idle = time.monotonic() - self._last
            if idle >= STALLED_AFTER:
                log.warning("cancelling a backup whose client read nothing for %.0f s", idle)
                self._cancel()
                return


def _chunks(path: str, header: dict) -> Iterator[cluster_pb2.BackupChunk]:
    with open(path, "rb") as f:
        yield cluster_pb2.BackupChunk(
            header=cluster_pb2.BackupHeader(
                revision=header["revision"],
                state_hash=header["state_hash"],
                size=os.fstat(f.fileno()).st_size,
                cluster_id=header["cluster_id"],
                replica_id=header["replica_id"],
                format_version=snapshot.FORMAT_VERSION,
            )
        )
        digest = hashlib.sha256()
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            yield cluster_pb2.BackupChunk(data=chunk)
    yield cluster_pb2.BackupChunk(trailer=cluster_pb2.BackupTrailer(sha256=digest.hexdigest()))


# -- the operator's side ----------------------------------------------------------------


def fetch(
    endpoint: str,
    out: str,
    consistency: int = registry_pb2.LINEARIZABLE,
    timeout: float = 3600.0,
    progress: Callable[[int, int], None] = lambda done, total: None,
    credentials: Credentials | None = None,
) -> tuple[cluster_pb2.BackupHeader, str]:
    """Take a backup from `endpoint` into `out`; returns its header and sha256.

    The file appears complete or not at all: it is received into a temporary file
    beside `out`, checked (length, sha256, the snapshot's own checksum), fsynced and
    renamed.
    """
    out = os.path.abspath(out)
    if os.path.isdir(out):
        raise BackupError(f"--out {out} is a directory; name the backup file")
    if not os.path.isdir(os.path.dirname(out)):
        raise BackupError(f"--out {out}: directory {os.path.dirname(out)} does not exist")
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out), prefix=os.path.basename(out) + ".")
    try:
        with os.fdopen(fd, "wb") as f, dial(endpoint, credentials) as channel:
            request = cluster_pb2.BackupRequest(
                read=registry_pb2.ReadOptions(consistency=consistency)
            )
            stream = cluster_pb2_grpc.ClusterStub(channel).Backup(request, timeout=timeout)
            header, sha256 = _receive(stream, f, progress)
            f.flush()
            os.fsync(f.fileno())
        snapshot.read_header(tmp)
        os.replace(tmp, out)
        fsync_dir(os.path.dirname(out))
    except grpc.RpcError as e:
        raise BackupError(
            f"backup from {endpoint} failed: {e.code().name}: {e.details()}"
        ) from None
    except SnapshotError as e:
        raise BackupError(f"the backup received from {endpoint} is damaged: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return header, sha256


def _receive(stream, f, progress) -> tuple[cluster_pb2.BackupHeader, str]:
    header, trailer, received, digest = None, None, 0, hashlib.sha256()
    for message in stream:
        part = message.WhichOneof("part")
        if part == "header":
            header = message.header
            if header.format_version > snapshot.FORMAT_VERSION:
                raise BackupError(
                    f"the replica sends backup format version {header.format_version}, newer "
                    f"than this regraft reads ({snapshot.FORMAT_VERSION}): use a newer regraft"
                )
        elif part == "data" and header is not None and trailer is None:
            f.write(message.data)
            digest.update(message.data)
            received += len(message.data)
            progress(received, header.size)
        elif part == "trailer" and header is not None:
            trailer = message.trailer
        else:
            raise BackupError(f"unexpected {part or 'empty'} message in the backup stream")
    if header is None or trailer is None:
        raise BackupError("the backup stream ended before its trailer: the transfer broke off")
    if received != header.size:
        raise BackupError(f"the backup stream held {received} bytes, its header said {header.size}")
    if digest.hexdigest() != trailer.sha256:
        raise BackupError(
            f"sha256 mismatch: received {digest.hexdigest()}, the replica sent {trailer.sha256}"
        )
    return header, trailer.sha256


@dataclass
class Inspection:
    """What `regraft backup verify` reports about a backup (or Raft snapshot) file."""

    path: str
    size: int
    sha256: str
    revision: int
    state_hash: str
    cluster_id: str
    data_format: int
    entries: dict[str, int]
    header: dict


def inspect(path: str) -> Inspection:
    """Verify a backup file end to end; SnapshotError or FormatError say what is wrong.

    Beyond the file's checksum, the LMDB copy is opened and every record hashed again:
    the state hash must be the one the header and the copy recorded.
    """
    with tempfile.TemporaryDirectory(prefix="regraft-verify-") as tmp:
        header, store = _open(path, tmp)
        try:
            with store.read() as view:
                entries = {db: view.count(db) for db in DATABASES}
                cluster_id, data_format = view.cluster_id, view.format_version
        finally:
            store.close()
    return Inspection(
        path=path,
        size=os.path.getsize(path),
        sha256=_file_sha256(path),
        revision=header["revision"],
        state_hash=header["state_hash"],
        cluster_id=cluster_id,
        data_format=data_format,
        entries=entries,
        header=header,
    )


def _open(path: str, directory: str) -> tuple[dict, Store]:
    """The backup's LMDB copy, extracted into `directory` and checked record by record."""
    header, db_start, db_length = snapshot.read_header(path)
    snapshot.extract(path, db_start, db_length, os.path.join(directory, "data.mdb"))
    store = Store(directory)
    try:
        with store.read() as view:
            if view.revision != header["revision"]:
                raise SnapshotError(
                    f"{path}: the header says revision {header['revision']}, "
                    f"the data holds {view.revision}"
                )
            recomputed = view.recompute_state_hash()
            if not recomputed == view.state_hash == header["state_hash"]:
                raise SnapshotError(
                    f"{path}: state hash mismatch: header {header['state_hash']}, "
                    f"stored {view.state_hash}, records hash to {recomputed}"
                )
    except BaseException:
        store.close()
        raise
    return header, store


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Restored:
    revision: int
    state_hash: str
    cluster_id: str
    # The Raft index the new log continues after (the backup's revision, plus any bump).
    raft_index: int


def restore(path: str, data_dir: str, member: Member | None = None, bump: int = 0) -> Restored:
    """Create `data_dir` holding a new single-replica cluster with the backup's state.

    Refuses a non-empty data directory; a damaged backup is refused before anything is
    created. The state gets a new cluster identity and `member` as its only member
    (None: no member; the replica records its configuration when it first leads). The
    Raft log starts at the backup's revision plus `bump`, so that clients that saw
    later revisions of the old cluster never see one repeat with other contents.
    """
    data_dir = os.path.abspath(data_dir)
    parent = os.path.dirname(data_dir)
    if bump < 0:
        raise BackupError(f"--bump-revision must not be negative, got {bump}")
    if os.path.exists(data_dir) and (not os.path.isdir(data_dir) or os.listdir(data_dir)):
        raise BackupError(
            f"data directory {data_dir} is not empty: restore creates a new replica, "
            "so give it a new or empty directory"
        )
    if not os.path.isdir(parent):
        raise BackupError(f"the parent of data directory {data_dir} does not exist: {parent}")
    snapshot.read_header(path)  # a damaged file is refused before anything is created
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(data_dir)}.restoring-")
    try:
        state = os.path.join(staging, STATE)
        os.mkdir(state)
        header, store = _open(path, state)
        try:
            cluster_id = uuid.uuid4().hex
            batch = store.batch()
            batch.set_cluster_id(cluster_id)
            batch.commit()
            set_sole_member(store, member)
            index = max(header["revision"], 2) + bump
            write_solo_snapshot(
                store,
                staging,
                last=(_NO_OP, index, 0),
                previous=(_NO_OP, index - 1, 0),
                nodes=[member.raft_address] if member else [],
            )
        finally:
            store.close()
        if os.path.isdir(data_dir):
            os.rmdir(data_dir)
        os.replace(staging, data_dir)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Restored(header["revision"], header["state_hash"], cluster_id, index)
