"""The Raft log on disk, fsynced: what PySyncObj's own journal does not do.

PySyncObj's FileJournal writes into an mmap that is never flushed, so an acknowledged
entry can vanish with the page cache. This journal appends CRC-framed records to a
plain file and leaves them unsynced until `sync()`: the transport calls it before any
message leaves the node and the apply loop calls it before LMDB commits, so every
entry that another node or the state machine can have seen is on disk, and many
appends share one fdatasync (group commit).

Term and vote are written with fsync before PySyncObj goes on to send the vote.
A torn record at the tail (a crash mid-append) fails its CRC and is cut off on open.

Record: length (4 bytes, of what follows the CRC) | crc32 (4) | index (8) | term (8) | command.
"""

import contextlib
import json
import logging
import os
import struct
import threading
import time
import zlib

from pysyncobj.journal import Journal

from cluster import metrics
from storage.files import fsync_dir, write_atomically

log = logging.getLogger(__name__)

_MAGIC = b"REGRAFT-JOURNAL\x01"
_HEAD = struct.Struct("<II")
_ENTRY = struct.Struct("<QQ")

# For the power-loss test only: record after each fsync how many bytes of which file
# (its inode: compaction replaces it) are durable, so that a test can drop the rest as
# a power cut would.
_TRACE_SYNCED = os.environ.get("REGRAFT_TRACE_SYNCED") == "1"
# After a failed append, this much must be writable for the error to clear.
ROOM_PROBE_BYTES = 64 << 10


class DurableJournal(Journal):
    """PySyncObj's Journal interface over an append-only, fsynced file."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._meta_path = path + ".meta"
        self._dir = os.path.dirname(os.path.abspath(path))
        self._entries: list[tuple[bytes, int, int]] = []
        self._offsets: list[int] = []  # file offset of each entry's record
        self._dirty = False
        self._lock = threading.Lock()
        # Why the last append, and the last save of term and vote, failed (a full disk,
        # no file descriptors left), until one of the same kind succeeds: for health.
        self._errors: dict[str, str] = {}
        self.sync_failed: str | None = None
        self._meta = self._load_meta()
        self._fd = self._open_log()

    # -- file handling --------------------------------------------------------------

    def _open_log(self) -> int:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        data = b""
        with open(fd, "rb", closefd=False) as f:
            f.seek(0)
            data = f.read()
        if not data.startswith(_MAGIC):
            if data:
                raise RuntimeError(f"{self._path} is not a regraft journal")
            os.write(fd, _MAGIC)
            os.fsync(fd)
            fsync_dir(self._dir)
            return fd
        offset = len(_MAGIC)
        while offset + _HEAD.size <= len(data):
            length, crc = _HEAD.unpack_from(data, offset)
            body = data[offset + _HEAD.size : offset + _HEAD.size + length]
            if len(body) != length or zlib.crc32(body) != crc or length < _ENTRY.size:
                break
            index, term = _ENTRY.unpack_from(body)
            self._entries.append((body[_ENTRY.size :], index, term))
            self._offsets.append(offset)
            offset += _HEAD.size + length
        if offset != len(data):
            log.warning(
                "journal %s: dropping %d bytes of torn tail after entry %s",
                self._path,
                len(data) - offset,
                self._entries[-1][1] if self._entries else None,
            )
            os.ftruncate(fd, offset)
            os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_END)
        return fd

    def _end(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_END)

    def _truncate(self, offset: int) -> None:
        os.ftruncate(self._fd, offset)
        os.lseek(self._fd, 0, os.SEEK_END)
        self._dirty = True

    def sync(self) -> None:
        """Make every appended entry durable; cheap when nothing is pending.

        A failed fdatasync is final (`sync_failed`): Linux may drop the pages it could
        not write and report success the next time, so nothing appended since the last
        good sync can be called durable, now or later; the replica must stop.
        """
        with self._lock:
            if self.sync_failed:
                raise OSError(self.sync_failed)
            if not self._dirty:
                return
            started = time.monotonic()
            try:
                os.fdatasync(self._fd)
            except OSError as e:
                self.sync_failed = f"fdatasync of the Raft journal {self._path} failed: {e}"
                log.critical("%s: this replica stops", self.sync_failed)
                raise
            self._dirty = False
            metrics.journal_fsync_seconds.observe(time.monotonic() - started)
            self._trace_synced()

    def _trace_synced(self) -> None:
        if _TRACE_SYNCED:
            synced = f"{os.fstat(self._fd).st_ino} {self._end()}"
            write_atomically(self._path + ".synced", synced.encode(), durable=False)

    # -- PySyncObj's Journal interface ------------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        body = _ENTRY.pack(idx, term) + command
        record = _HEAD.pack(len(body), zlib.crc32(body)) + body
        with self._lock:
            offset = self._end()
            try:
                _write_all(self._fd, record)
            except OSError as e:
                # A full disk: leave no partial record, or the entries appended once
                # there is room again would sit behind it and be cut off, as a torn
                # tail, at the next start. The entry is not logged; PySyncObj retries.
                with contextlib.suppress(OSError):
                    self._truncate(offset)
                self._errors["append"] = f"appending to the Raft journal: {e.strerror}"
                raise
            self._offsets.append(offset)
            self._dirty = True
            self._errors.pop("append", None)
        self._entries.append((command, idx, term))

    def clear(self) -> None:
        self._entries = []
        self._offsets = []
        self._truncate(len(_MAGIC))
        self.sync()  # as deleteEntriesFrom: the cut is durable before anything follows

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        if entryFrom >= len(self._entries):
            return
        offset = self._offsets[entryFrom]
        del self._entries[entryFrom:]
        del self._offsets[entryFrom:]
        self._truncate(offset)
        self.sync()

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop the prefix a snapshot covers: rewrite the rest into a new file."""
        kept = self._entries[entryTo:]
        tmp = self._path + ".tmp"
        offsets = []
        with open(tmp, "wb") as f:
            f.write(_MAGIC)
            for command, index, term in kept:
                offsets.append(f.tell())
                body = _ENTRY.pack(index, term) + command
                f.write(_HEAD.pack(len(body), zlib.crc32(body)) + body)
            f.flush()
            os.fsync(f.fileno())
        with self._lock:
            os.replace(tmp, self._path)
            fsync_dir(self._dir)
            os.close(self._fd)
            self._fd = os.open(self._path, os.O_RDWR)
            os.lseek(self._fd, 0, os.SEEK_END)
            self._dirty = False
            self._trace_synced()
        self._entries = kept
        self._offsets = offsets

    def __getitem__(self, item):
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        self.sync()
        self._store_meta()
        os.close(self._fd)

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        # Need not be durable: a lower commit index after a crash is re-learned.
        self._meta["commit_index"] = raftCommitIndex

    def getRaftCommitIndex(self) -> int:
        return self._meta.get("commit_index", 1)

    def setCurrentTerm(self, term: int, votedForNodeId) -> None:
        self._meta["term"] = term
        self._meta["voted_for"] = votedForNodeId
        self._store_meta()

    def getCurrentTerm(self) -> int:
        return self._meta.get("term", 0)

    def getVotedForNodeId(self):
        return self._meta.get("voted_for")

    def onOneSecondTimer(self) -> None:
        if "append" in self._errors:
            self._probe_room()
        self._store_meta()

    def _probe_room(self) -> None:
        """After a failed append, whether the disk has room again. Only an append
        clears the error, and none comes while the replica refuses proposals because of
        it (a leader that nothing else makes append): so write, in a file of its own."""
        probe = self._path + ".room"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, bytes(ROOM_PROBE_BYTES))
            finally:
                os.close(fd)
        except OSError:
            return  # still full
        finally:
            with contextlib.suppress(OSError):
                os.unlink(probe)
        with self._lock:
            self._errors.pop("append", None)

    # -- term, vote and commit index --------------------------------------------------

    def _load_meta(self) -> dict:
        try:
            with open(self._meta_path, "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return {}

    def _store_meta(self) -> None:
        try:
            write_atomically(self._meta_path, json.dumps(self._meta).encode())
        except OSError as e:
            self._errors["meta"] = f"saving the Raft term and vote: {e.strerror}"
            raise
        self._errors.pop("meta", None)

    @property
    def write_error(self) -> str | None:
        """Why the journal cannot be written now, or None."""
        return next(iter(self._errors.values()), None)


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (a disk filling up): write the rest, or raise."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
