"""Snapshots: a consistent copy of the state out, and a safe install in.

A snapshot file is what Raft ships to a replica that is too far behind, and what a
backup is. Layout:

    magic (16) | header length (4) | header (JSON) | LMDB copy | trailer

The trailer is the LMDB copy's length (8) and the sha256 (32) of everything before
the trailer. The header records the Raft index and term the snapshot covers, the
state's revision and hash, and whatever the caller adds (Raft entries, members).
A file that is truncated or altered fails its checksum and is never installed.
"""

import hashlib
import json
import os
import stat
import struct
from typing import Any

from storage.db import Store, View
from storage.files import fsync_dir

# The magic carries the file format's version: a file from a newer regraft is refused
# by name rather than misread.
FORMAT_VERSION = 1
_MAGIC_PREFIX = b"REGRAFT-SNAP-v"
MAGIC = _MAGIC_PREFIX + b"%d\n" % FORMAT_VERSION
_LEN = struct.Struct("<I")
_TRAILER = struct.Struct("<Q32s")
_CHUNK = 1 << 20


class SnapshotError(RuntimeError):
    """A snapshot file is damaged, truncated or not a snapshot."""


def write(store: Store, view: View, path: str, header: dict[str, Any]) -> dict[str, Any]:
    """Write the state `view` sees to `path` (durably); returns the full header."""
    header = {**header, "revision": view.revision, "state_hash": view.state_hash}
    encoded = json.dumps(header, sort_keys=True).encode()
    tmp = path + ".writing"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, MAGIC + _LEN.pack(len(encoded)) + encoded)
        start = os.lseek(fd, 0, os.SEEK_CUR)
        store.copy_to(fd, view)
        end = os.lseek(fd, 0, os.SEEK_END)
        digest = _sha256(fd, end)
        os.write(fd, _TRAILER.pack(end - start, digest))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    return header


def read_header(path: str) -> tuple[dict[str, Any], int, int]:
    """Verify the whole file; return its header and where the LMDB copy lies."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise SnapshotError(f"{path}: no such file") from None
    except OSError as e:
        raise SnapshotError(f"{path}: cannot read it: {e.strerror}") from None
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise SnapshotError(f"{path}: not a file (a backup is one file)")
        size = found.st_size
        _check_magic(path, os.pread(fd, 32, 0))
        if size < len(MAGIC) + _LEN.size + _TRAILER.size:
            raise SnapshotError(f"{path}: too short to be a snapshot ({size} bytes)")
        db_length, expected = _TRAILER.unpack(os.pread(fd, _TRAILER.size, size - _TRAILER.size))
        body = size - _TRAILER.size
        if _sha256(fd, body) != expected:
            raise SnapshotError(f"{path}: checksum mismatch: the file is truncated or corrupt")
        (header_length,) = _LEN.unpack(os.pread(fd, _LEN.size, len(MAGIC)))
        header_start = len(MAGIC) + _LEN.size
        db_start = header_start + header_length
        if db_start + db_length != body:
            raise SnapshotError(f"{path}: inconsistent lengths in the trailer")
        try:
            header = json.loads(os.pread(fd, header_length, header_start))
        except ValueError as e:
            raise SnapshotError(f"{path}: unreadable header: {e}") from None
        return header, db_start, db_length
    finally:
        os.close(fd)


def _check_magic(path: str, head: bytes) -> None:
    if head.startswith(MAGIC):
        return
    line = head.split(b"\n", 1)[0]
    version = line[len(_MAGIC_PREFIX) :]
    if line.startswith(_MAGIC_PREFIX) and version.isdigit() and int(version) > FORMAT_VERSION:
        raise SnapshotError(
            f"{path}: snapshot format version {int(version)} is newer than this regraft "
            f"reads ({FORMAT_VERSION}): use a newer regraft"
        )
    raise SnapshotError(f"{path}: not a regraft snapshot or backup (bad magic)")


def extract(path: str, db_start: int, db_length: int, out: str) -> None:
    """Copy the snapshot's LMDB file out to `out` (durably), for Store.replace."""
    with open(path, "rb") as src, open(out, "wb") as dst:
        src.seek(db_start)
        remaining = db_length
        while remaining:
            chunk = src.read(min(_CHUNK, remaining))
            if not chunk:
                raise SnapshotError(f"{path}: ended early while extracting")
            dst.write(chunk)
            remaining -= len(chunk)
        dst.flush()
        os.fsync(dst.fileno())


def install(store: Store, path: str) -> tuple[dict[str, Any], bool]:
    """Replace the store's state with the snapshot's, unless the store is already newer.

    Never rolls back: a replica may be sent a snapshot older than what it has applied.
    Returns the header and whether the state was replaced.
    """
    header, db_start, db_length = read_header(path)
    if header["revision"] <= store.revision:
        return header, False
    staging = path + ".mdb"
    extract(path, db_start, db_length, staging)
    store.replace(staging)
    return header, True


def _sha256(fd: int, length: int) -> bytes:
    h = hashlib.sha256()
    offset = 0
    while offset < length:
        chunk = os.pread(fd, min(_CHUNK, length - offset), offset)
        if not chunk:
            break
        h.update(chunk)
        offset += len(chunk)
    return h.digest()
