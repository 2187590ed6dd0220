"""The LMDB environment of one replica: named databases, format version, batches.

All writes happen on one thread (the Raft apply thread) through a Batch: one write
transaction holding one or more log entries, committed without fsync (see Store for
why that is safe, and what happens after a crash of the machine). Reads run on any
thread in their own read transaction. Replacing the whole environment (installing a
snapshot) or growing its map takes an exclusive lock that waits for readers to finish.

Every Batch keeps a hash of the whole replicated state up to date: the sum, modulo
2**256, of sha256 over every record. Replicas that applied the same log have the same
hash at the same revision, so it can be compared cheaply at any time.
"""

import contextlib
import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import lmdb

from storage import keys
from storage.files import fsync_dir, write_atomically

# 2: commits without fsync (a release that fsyncs every commit would trust a torn
# file), and the state may hold a machine version (storage/versions.py).
FORMAT_VERSION = 2
DEFAULT_MAP_SIZE = 16 << 30
MAX_READERS = 1024

DATABASES = (
    "repos",  # repository name -> repository id
    "manifests",  # id + digest -> ManifestRecord
    "tags",  # id + tag -> digest
    "tag_index",  # id + digest + SEP + tag -> b"" (the tags of a manifest)
    "blobs",  # id + digest -> BlobRecord
    "referrers",  # id + subject + SEP + referrer digest -> ReferrerRecord (b"" before v8)
    "events",  # revision + sequence -> Event
    "requests",  # request id -> RequestRecord
    "request_log",  # index + request id -> b""
    "members",  # member id -> MemberRecord
    # The access model (storage/access.py); SEP is keys.SEP.
    "users",  # user -> UserRecord
    "orgs",  # organization -> OrganizationRecord
    "teams",  # organization + SEP + team -> TeamRecord
    "team_members",  # organization + SEP + team + SEP + user -> b""
    "org_owners",  # organization + SEP + user -> b""
    "user_links",  # user + SEP + (b"t" org SEP team | b"o" org) -> b"" (reverse of the two above)
    "grants",  # scope + SEP + subject -> GrantRecord
    "grant_index",  # subject + SEP + scope -> b"" (the grants a subject holds)
    "repo_settings",  # repository name -> RepositorySettingsRecord
)

_APPLIED = b"applied_index"
_HASH = b"state_hash"
_FORMAT = b"format_version"
# Which cluster this state belongs to: not registry state, so outside the state hash.
_CLUSTER_ID = b"cluster_id"
_MACHINE_VERSION = b"machine_version"
_MODULUS = 1 << 256

T = TypeVar("T")


class FormatError(RuntimeError):
    """The data directory was written by a newer regraft, or is not ours."""


class TornStateError(FormatError):
    """The machine restarted while the store was open: its file may be torn."""


# In the LMDB directory while a Store has it open: the boot it was opened in.
OPEN_MARKER = "open-in-boot"


def boot_id() -> str:
    """This boot of the machine (REGRAFT_BOOT_ID stands in for a reboot in tests)."""
    override = os.environ.get("REGRAFT_BOOT_ID")
    if override:
        return override
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


class _ReadWriteLock:
    """Many readers or one exclusive holder; the exclusive side waits for readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._exclusive = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


# A sha256 already fed each database's name: copying one is cheaper than a new hash.
_SEEDED = {name: hashlib.sha256(name.encode()) for name in DATABASES}


def _record_hash(db: str, key: bytes, value: bytes) -> int:
    """sha256 of the database name, the key's length (4 bytes), the key and the value."""
    h = _SEEDED[db].copy()
    h.update(len(key).to_bytes(4, "big") + key)
    h.update(value)
    return int.from_bytes(h.digest(), "big")


class View:
    """A consistent view of the state: a read transaction, or the open Batch."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, lmdb._Database]) -> None:
        self.txn = txn
        self._dbs = dbs

    def get(self, db: str, key: bytes) -> bytes | None:
        # The database by position, here and in Batch: py-lmdb parses keywords slowly.
        return self.txn.get(key, None, self._dbs[db])

    def cursor(self, db: str) -> lmdb.Cursor:
        return self.txn.cursor(db=self._dbs[db])

    def scan(self, db: str, prefix: bytes, after: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Records whose key starts with prefix, in key order, strictly after prefix+after."""
        cursor = self.cursor(db)
        start = prefix + after
        if not cursor.set_range(start):
            return
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            if after and key == start:
                continue
            yield key, value

    def count(self, db: str) -> int:
        return self.txn.stat(self._dbs[db])["entries"]

    @property
    def revision(self) -> int:
        """The Raft index of the last entry applied to this state."""
        raw = self.txn.get(_APPLIED)
        return keys.read_u64(raw) if raw else 0

    @property
    def state_hash(self) -> str:
        raw = self.txn.get(_HASH)
        return raw.hex() if raw else "0" * 64

    @property
    def cluster_id(self) -> str:
        """The identity of the cluster this state belongs to: set by the first leader
        (storage/members.seed), and anew by a restore (cluster/backup.py)."""
        raw = self.txn.get(_CLUSTER_ID)
        return raw.decode() if raw else ""

    @property
    def machine_version(self) -> int:
        """How commands are applied (storage/machine.py): 1 unless raised."""
        raw = self.txn.get(_MACHINE_VERSION)
        return keys.read_u64(raw) if raw else 1

    @property
    def format_version(self) -> int:
        return keys.read_u64(self.txn.get(_FORMAT))

    def recompute_state_hash(self) -> str:
        """The state hash computed from every record: checks the stored one (a backup)."""
        total = 0
        for db in self._dbs:
            for key, value in self.cursor(db):
                total += _record_hash(db, key, value)
        return (total % _MODULUS).to_bytes(32, "big").hex()


class Batch(View):
    """The write transaction the apply thread fills with one or more log entries."""

    def __init__(
        self, env: lmdb.Environment, txn: lmdb.Transaction, dbs: dict[str, lmdb._Database]
    ) -> None:
        super().__init__(txn, dbs)
        self._env = env
        raw = txn.get(_HASH)
        self._hash = int.from_bytes(raw, "big") if raw else 0
        self._revision = super().revision
        self._machine_version = super().machine_version

    def put(self, db: str, key: bytes, value: bytes) -> None:
        """Write a record, keeping the state hash up to date.

        replace (and pop in delete) returns the old record from the same lookup that
        writes: a get first would be a second lookup, and a second release of the GIL.
        """
        old = self.txn.replace(key, value, self._dbs[db])
        if old == value:
            return
        if old is not None:
            self._hash -= _record_hash(db, key, old)
        self._hash += _record_hash(db, key, value)

    def delete(self, db: str, key: bytes) -> bool:
        old = self.txn.pop(key, self._dbs[db])
        if old is None:
            return False
        self._hash -= _record_hash(db, key, old)
        return True

    def atomically(self, operation: Callable[..., T], *args: object) -> T:
        """operation(*args) as one command's writes: all of them, or none if it raises.

        A plain call rather than a context manager: this runs once per log entry.
        """
        parent, saved = self.txn, (self._hash, self._machine_version)
        self.txn = self._env.begin(write=True, parent=parent)
        try:
            result = operation(*args)
        except BaseException:
            self.txn.abort()
            self.txn = parent
            self._hash, self._machine_version = saved
            raise
        self.txn.commit()
        self.txn = parent
        return result

    @property
    def state_hash(self) -> str:
        """The hash of the state this batch holds, including what is not yet committed."""
        return (self._hash % _MODULUS).to_bytes(32, "big").hex()

    @property
    def revision(self) -> int:
        """Kept in memory (set_revision is the only writer): apply reads it per entry."""
        return self._revision

    def set_revision(self, index: int) -> None:
        self.txn.put(_APPLIED, keys.u64(index))
        self._revision = index

    def set_cluster_id(self, cluster_id: str) -> None:
        self.txn.put(_CLUSTER_ID, cluster_id.encode())

    @property
    def machine_version(self) -> int:
        """Kept in memory, as revision is: apply reads it per entry."""
        return self._machine_version

    def set_machine_version(self, version: int) -> None:
        self.txn.put(_MACHINE_VERSION, keys.u64(version))
        self._machine_version = version

    def commit(self) -> None:
        self.txn.put(_HASH, (self._hash % _MODULUS).to_bytes(32, "big"))
        self.txn.commit()

    def abort(self) -> None:
        self.txn.abort()


class Store:
    """One replica's LMDB environment in directory `path`."""

    def __init__(self, path: str, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.path = path
        self._map_size = map_size
        self._lock = _ReadWriteLock()
        self._open()

    def _open(self) -> None:
        self._finish_replace()
        os.makedirs(self.path, exist_ok=True)
        self._claim()
        # Commits write to the page cache without fsync (sync=False): the Raft journal,
        # fsynced before anything is acknowledged, is what makes writes durable, and it
        # keeps every entry until a snapshot (copied from LMDB and fsynced itself) covers
        # it. A killed process loses nothing (the kernel still holds the pages); a crash
        # of the machine may leave the file torn, which _claim detects at the next open.
        self.env = lmdb.open(
            self.path,
            map_size=self._map_size,
            max_dbs=len(DATABASES) + 1,
            max_readers=MAX_READERS,
            sync=False,
            metasync=False,
            readahead=False,
        )
        self._released = False
        self._map_size = self.env.info()["map_size"]
        with self.env.begin(write=True) as txn:
            found = txn.get(_FORMAT)
            version = 0 if found is None else keys.read_u64(found)
            if version <= FORMAT_VERSION:
                if version < FORMAT_VERSION:  # new, or written by an older regraft
                    txn.put(_FORMAT, keys.u64(FORMAT_VERSION))
                self._dbs = {name: self.env.open_db(name.encode(), txn=txn) for name in DATABASES}
        if version > FORMAT_VERSION:
            self._release()
            raise FormatError(
                f"data directory {self.path} has format version {version}, "
                f"newer than this regraft understands ({FORMAT_VERSION}): "
                "run a newer regraft, or restore a backup into an empty directory"
            )

    @contextlib.contextmanager
    def read(self) -> Iterator[View]:
        """A read transaction; safe on any thread, never blocks the apply thread."""
        with self._lock.shared(), self.env.begin(buffers=False) as txn:
            yield View(txn, self._dbs)

    def batch(self) -> Batch:
        """A write transaction; only the apply thread calls this."""
        return Batch(self.env, self.env.begin(write=True), self._dbs)

    @property
    def revision(self) -> int:
        with self.read() as view:
            return view.revision

    def grow(self) -> None:
        """Double the map after MapFullError; no transaction of ours may be open."""
        with self._lock.exclusive():
            self._map_size *= 2
            self.env.set_mapsize(self._map_size)

    def copy_to(self, fd: int, view: View) -> None:
        """A compacted, consistent copy of the environment as `view` sees it."""
        self.env.copyfd(fd, compact=True, txn=view.txn)

    def replace(self, data_file: str) -> None:
        """Swap in another environment's data.mdb (a snapshot), atomically for readers.

        The new directory is staged first and the swap is two renames; a crash or an
        error between them is finished by _finish_replace (the staged state if it is
        there, else the old one), and the environment is opened again either way. A
        file of a newer format is refused before anything moves: this replica keeps
        its state and can still serve, instead of being left with a store it cannot
        open.
        """
        version = _format_of(data_file)
        if version > FORMAT_VERSION:
            os.unlink(data_file)
            raise FormatError(
                f"a snapshot holds data format {version}, newer than this regraft "
                f"understands ({FORMAT_VERSION}): upgrade this replica"
            )
        staging = self.path + ".new"
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        os.replace(data_file, os.path.join(staging, "data.mdb"))
        fsync_dir(staging)
        retired = self.path + ".old"
        shutil.rmtree(retired, ignore_errors=True)
        with self._lock.exclusive():
            self.env.close()
            try:
                os.replace(self.path, retired)
                os.replace(staging, self.path)
                fsync_dir(os.path.dirname(os.path.abspath(self.path)))
            finally:
                self._finish_replace()
                self._open()
        shutil.rmtree(retired, ignore_errors=True)

    def _finish_replace(self) -> None:
        """After a crash or failure inside replace(): the new state if staged, else the old."""
        if os.path.isdir(self.path):
            return
        for candidate in (self.path + ".new", self.path + ".old"):
            if os.path.isfile(os.path.join(candidate, "data.mdb")):
                os.replace(candidate, self.path)
                fsync_dir(os.path.dirname(os.path.abspath(self.path)))
                return

    def stat(self) -> dict[str, int]:
        """Sizes for metrics and status: file size, bytes in use, map size.

        In use counts the pages of every database; the file only grows, and LMDB reuses
        the pages that deletions free.
        """
        with self._lock.shared():
            info = self.env.info()
            stats = [self.env.stat()]
            with self.env.begin() as txn:
                stats += [txn.stat(handle) for handle in self._dbs.values()]
            size = os.path.getsize(os.path.join(self.path, "data.mdb"))
        pages = sum(s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"] for s in stats)
        used = pages * stats[0]["psize"]
        return {"file_bytes": size, "used_bytes": used, "map_bytes": info["map_size"]}

    def _claim(self) -> None:
        """Refuse a file left open by an earlier boot, then mark it open in this one.

        Pages committed without fsync may have reached the disk in any order when the
        machine went down: the file cannot be trusted, though a killed process (same
        boot) leaves it whole. The caller rebuilds it from a snapshot and the journal.
        """
        marker = os.path.join(self.path, OPEN_MARKER)
        current = boot_id()
        if os.path.exists(marker):
            with open(marker) as f:
                opened_in = f.read().strip()
            if opened_in != current:
                raise TornStateError(
                    f"LMDB state in {self.path} was open when the machine restarted "
                    f"(opened in boot {opened_in}, this is boot {current}): it may be torn"
                )
            return
        write_atomically(marker, current.encode())

    def close(self) -> None:
        """Flush, then close: a store closed cleanly is trusted in any later boot."""
        with self._lock.exclusive():
            self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self.env.sync(True)
        self.env.close()
        os.unlink(os.path.join(self.path, OPEN_MARKER))
        fsync_dir(self.path)


def _format_of(data_file: str) -> int:
    """The format version of an LMDB data file that is not in place yet."""
    env = lmdb.open(data_file, subdir=False, readonly=True, lock=False, max_dbs=0)
    try:
        with env.begin() as txn:
            found = txn.get(_FORMAT)
    finally:
        env.close()
    return 0 if found is None else keys.read_u64(found)
