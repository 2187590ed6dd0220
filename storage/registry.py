"""Registry operations: what one command does to the state, and the reads.

Writes run inside the apply thread's Batch and are deterministic: they read only the
state and the command. Each checks every precondition before it writes, and reports a
refusal by raising NotFound or FailedPrecondition (machine.py turns that into a
result). Reads run on any View. Every change is also recorded as an Event, so that
Watch can replay history in revision order.
"""

import itertools
from dataclasses import dataclass, field
from typing import NamedTuple

from regraft.v1 import access_pb2, command_pb2, record_pb2, registry_pb2
from storage import keys, versions
from storage.db import Batch, View
from storage.errors import FailedPrecondition, NotFound

_NEXT_REPO_ID = b"next_repo_id"
_EVENTS_FLOOR = b"events_floor"
_EVENT_RETENTION = b"event_retention"

# How much history is kept, in revisions, unless the cluster was told otherwise
# (SetEventRetentionOp, stored in the state). Pruning depends only on the state and
# the entry being applied (its revision and time), so every replica keeps exactly the
# same events.
EVENT_RETENTION = 200_000
# The events of this many last revisions are never pruned by age: entries carry the
# proposing replica's clock, and one clock far ahead must not erase the audit log.
MIN_EVENT_REVISIONS = 1000
# A page of events reads at most about this many per event it may return.
READ_PER_EVENT = 16


@dataclass
class Change:
    """The context of one command being applied: where its events go."""

    batch: Batch
    revision: int
    actor: str = ""
    time_ms: int = 0
    _sequence: int = field(default=0)

    def emit(self, kind: int, repository: str, digest: str, tag: str = "") -> None:
        """A registry event. Kinds are registry_pb2's module-level ints (registry_pb2.TAG_SET):
        registry_pb2.EventKind.TAG_SET is a slow __getattr__, and this runs per entry."""
        self._put(registry_pb2.Event(kind=kind, repository=repository, digest=digest, tag=tag))

    def record(self, kind: int, operation: str, target: str, repository: str = "") -> None:
        """An audit event for a change of access or of the cluster: what was done to what
        (from machine version 2 on: storage/versions.py)."""
        if self.batch.machine_version < versions.AUDIT_EVENTS:
            return
        self._put(
            registry_pb2.Event(kind=kind, operation=operation, target=target, repository=repository)
        )

    def _put(self, event: registry_pb2.Event) -> None:
        event.revision = self.revision
        event.actor = self.actor
        event.time_ms = self.time_ms
        self.batch.put(
            "events", keys.event(self.revision, self._sequence), event.SerializeToString()
        )
        self._sequence += 1


# -- repositories -------------------------------------------------------------------


def _repo(view: View, name: str) -> bytes | None:
    return view.get("repos", keys.repository(name))


def exists(view: View, name: str) -> bool:
    """Whether the repository has been created (by its first blob or manifest)."""
    return _repo(view, name) is not None


def holding_content(view: View, namespace: str, limit: int) -> tuple[list[str], bool]:
    """Up to 3 repositories of a namespace (itself, and those below `namespace/`) that
    hold a manifest or a blob; and whether it has more than `limit` repositories, past
    which they were not examined (repositories are never deleted, only emptied)."""
    own = _repo(view, namespace)
    repositories = itertools.chain(
        [(keys.repository(namespace), own)] if own is not None else [],
        view.scan("repos", keys.repository(namespace + "/")),
    )
    found = []
    for examined, (key, rid) in enumerate(repositories):
        if examined == limit:
            return found, True
        if any(next(view.scan(db, rid), None) is not None for db in ("manifests", "blobs")):
            found.append(key.decode())
            if len(found) == 3:
                break
    return found, False


def settings(view: View, name: str) -> access_pb2.RepositorySettings:
    """A repository's settings (storage/access.py sets them), or the defaults."""
    raw = view.get("repo_settings", keys.repository(name))
    if raw is None:
        return access_pb2.RepositorySettings(create_on_push=True)
    return record_pb2.RepositorySettingsRecord.FromString(raw).settings


def _tag(view: View, rid: bytes, tag: str) -> str:
    """The digest a tag points at, or "" if there is no such tag."""
    raw = view.get("tags", keys.member(rid, tag))
    return raw.decode() if raw else ""


def _refuse_moving_immutable(view: View, repository: str, tag: str, current: str, digest: str):
    """Refuse moving a tag from `current` (its digest, "" if none) to `digest`."""
    if not current or current == digest or not settings(view, repository).immutable_tags:
        return
    raise FailedPrecondition(
        "DENIED",
        f"tag {tag!r} of repository {repository!r} is immutable: it points at "
        f"{current} and cannot be moved to {digest}",
    )


def _refuse_deleting_immutable(view: View, repository: str, tags: list[str]) -> None:
    """Deleting a tag then pushing it again would move it: refused like a move."""
    if tags and settings(view, repository).immutable_tags:
        raise FailedPrecondition(
            "DENIED",
            f"repository {repository!r} has immutable tags: tag(s) {', '.join(map(repr, tags))} "
            "cannot be deleted",
        )


def _existing_repo(view: View, name: str) -> bytes:
    rid = _repo(view, name)
    if rid is None:
        raise NotFound("NAME_UNKNOWN", f"repository {name!r} does not exist")
    return rid


def _ensure_repo(batch: Batch, name: str) -> bytes:
    """A repository springs into existence with its first blob or manifest."""
    rid = _repo(batch, name)
    if rid is not None:
        return rid
    raw = batch.txn.get(_NEXT_REPO_ID)
    number = keys.read_u64(raw) if raw else 1
    batch.txn.put(_NEXT_REPO_ID, keys.u64(number + 1))
    rid = keys.repo_id(number)
    batch.put("repos", keys.repository(name), rid)
    return rid


# -- manifests ----------------------------------------------------------------------


def put_manifest(change: Change, op: command_pb2.PutManifestOp) -> command_pb2.Result:
    batch = change.batch
    rid = _repo(batch, op.repository)
    for digest in op.blobs:
        if rid is None or batch.get("blobs", keys.member(rid, digest)) is None:
            raise FailedPrecondition(
                "MANIFEST_BLOB_UNKNOWN",
                f"blob {digest} referenced by the manifest is not linked to repository "
                f"{op.repository!r}: link it first",
            )
    for digest in op.manifests:
        if rid is None or batch.get("manifests", keys.member(rid, digest)) is None:
            raise FailedPrecondition(
                "MANIFEST_BLOB_UNKNOWN",
                f"manifest {digest} listed by the index is not in repository "
                f"{op.repository!r}: push it first",
            )
    # A repository without an id has no tags yet.
    current = _tag(batch, rid, op.tag) if rid is not None and op.tag else ""
    _refuse_moving_immutable(batch, op.repository, op.tag, current, op.digest)
    rid = _ensure_repo(batch, op.repository)
    key = keys.member(rid, op.digest)
    if batch.get("manifests", key) is None:
        record = record_pb2.ManifestRecord(
            media_type=op.media_type,
            content=op.content,
            subject=op.subject,
            artifact_type=op.artifact_type,
            annotations=op.annotations,
            blobs=op.blobs,
            manifests=op.manifests,
            revision=change.revision,
        )
        # deterministic: map fields (annotations) must serialize alike on every replica.
        batch.put("manifests", key, record.SerializeToString(deterministic=True))
        if op.subject:
            batch.put("referrers", keys.pair(rid, op.subject, op.digest), _referrer(batch, record))
        change.emit(registry_pb2.MANIFEST_PUT, op.repository, op.digest)
    if op.tag:
        _set_tag(change, rid, op.repository, op.tag, current, op.digest)
    return command_pb2.Result(digest=op.digest, previous_digest=current)


def _referrer(batch: Batch, record: record_pb2.ManifestRecord) -> bytes:
    """The referrers index's value for a manifest with a subject: its descriptor from
    machine version 8 on (storage/versions.py), nothing before."""
    if batch.machine_version < versions.REFERRER_RECORDS:
        return b""
    referrer = record_pb2.ReferrerRecord(
        media_type=record.media_type,
        size=len(record.content),
        artifact_type=record.artifact_type,
        annotations=record.annotations,
    )
    return referrer.SerializeToString(deterministic=True)


# A manifest is deleted with at most this many tags (from machine version 8): a command
# is applied on every replica's Raft thread, and one deleting 100,000 tags (an event
# each) held it for seconds, deposed the leader, and made one revision of events that
# every Watch reading it had to hold whole (an attack review).
MAX_TAGS_DELETED = 1000


def delete_manifest(change: Change, op: command_pb2.DeleteManifestOp) -> command_pb2.Result:
    """Delete a manifest and every tag that points at it (at most MAX_TAGS_DELETED)."""
    batch = change.batch
    rid = _existing_repo(batch, op.repository)
    key = keys.member(rid, op.digest)
    raw = batch.get("manifests", key)
    if raw is None:
        raise NotFound(
            "MANIFEST_UNKNOWN", f"manifest {op.digest} is not in repository {op.repository!r}"
        )
    record = record_pb2.ManifestRecord.FromString(raw)
    prefix = keys.pair_prefix(rid, op.digest)
    tags = []
    for k, _ in batch.scan("tag_index", prefix):
        if len(tags) == MAX_TAGS_DELETED and batch.machine_version >= versions.BOUNDED_CASCADES:
            raise FailedPrecondition(
                "DENIED",
                f"manifest {op.digest} of repository {op.repository!r} has more than "
                f"{MAX_TAGS_DELETED} tags, more than one command deletes with it: delete "
                "some first (ListTags with this digest lists them; DeleteTag with this "
                "digest as expected_digest), then the manifest",
            )
        tags.append(keys.pair_second(prefix, k))
    _refuse_deleting_immutable(batch, op.repository, tags)
    for tag in tags:
        batch.delete("tags", keys.member(rid, tag))
        batch.delete("tag_index", keys.pair(rid, op.digest, tag))
        change.emit(registry_pb2.TAG_DELETE, op.repository, op.digest, tag)
    if record.subject:
        batch.delete("referrers", keys.pair(rid, record.subject, op.digest))
    batch.delete("manifests", key)
    change.emit(registry_pb2.MANIFEST_DELETE, op.repository, op.digest)
    return command_pb2.Result(digest=op.digest, deleted_tags=tags)


# -- tags ---------------------------------------------------------------------------


def _set_tag(change: Change, rid: bytes, repository: str, tag: str, current: str, digest: str):
    """Point a tag at `digest`; `current` is what it points at now ("" if nothing)."""
    if current == digest:
        return
    batch = change.batch
    if current:
        batch.delete("tag_index", keys.pair(rid, current, tag))
    batch.put("tags", keys.member(rid, tag), digest.encode())
    batch.put("tag_index", keys.pair(rid, digest, tag), b"")
    change.emit(registry_pb2.TAG_SET, repository, digest, tag)


def _check_expected(repository: str, tag: str, current: str, expected: str) -> None:
    if expected and current != expected:
        now = f"points at {current}" if current else "does not exist"
        raise FailedPrecondition(
            "TAG_CONFLICT",
            f"tag {tag!r} of repository {repository!r} {now}, expected {expected}",
        )


def put_tag(change: Change, op: command_pb2.PutTagOp) -> command_pb2.Result:
    batch = change.batch
    rid = _existing_repo(batch, op.repository)
    if batch.get("manifests", keys.member(rid, op.digest)) is None:
        raise NotFound(
            "MANIFEST_UNKNOWN", f"manifest {op.digest} is not in repository {op.repository!r}"
        )
    current = _tag(batch, rid, op.tag)
    if op.must_not_exist and current:
        raise FailedPrecondition(
            "TAG_CONFLICT",
            f"tag {op.tag!r} of repository {op.repository!r} already exists (points at {current})",
        )
    _check_expected(op.repository, op.tag, current, op.expected_digest)
    _refuse_moving_immutable(batch, op.repository, op.tag, current, op.digest)
    _set_tag(change, rid, op.repository, op.tag, current, op.digest)
    return command_pb2.Result(digest=op.digest, previous_digest=current)


def delete_tag(change: Change, op: command_pb2.DeleteTagOp) -> command_pb2.Result:
    batch = change.batch
    rid = _existing_repo(batch, op.repository)
    key = keys.member(rid, op.tag)
    raw = batch.get("tags", key)
    if raw is None:
        raise NotFound(
            "MANIFEST_UNKNOWN", f"tag {op.tag!r} does not exist in repository {op.repository!r}"
        )
    current = raw.decode()
    _check_expected(op.repository, op.tag, current, op.expected_digest)
    _refuse_deleting_immutable(batch, op.repository, [op.tag])
    batch.delete("tags", key)
    batch.delete("tag_index", keys.pair(rid, current, op.tag))
    change.emit(registry_pb2.TAG_DELETE, op.repository, current, op.tag)
    return command_pb2.Result(digest=current)


# -- blobs --------------------------------------------------------------------------


def _link(change: Change, repository: str, digest: str, size: int, media_type: str) -> None:
    batch = change.batch
    rid = _repo(batch, repository)
    if rid is not None:
        raw = batch.get("blobs", keys.member(rid, digest))
        if raw is not None:
            existing = record_pb2.BlobRecord.FromString(raw)
            if existing.size != size:
                raise FailedPrecondition(
                    "SIZE_INVALID",
                    f"blob {digest} is already linked to repository {repository!r} with size "
                    f"{existing.size}, not {size}",
                )
            return
    rid = _ensure_repo(batch, repository)
    record = record_pb2.BlobRecord(size=size, media_type=media_type, revision=change.revision)
    batch.put("blobs", keys.member(rid, digest), record.SerializeToString())
    change.emit(registry_pb2.BLOB_LINK, repository, digest)


def link_blob(change: Change, op: command_pb2.LinkBlobOp) -> command_pb2.Result:
    _link(change, op.repository, op.digest, op.size, op.media_type)
    return command_pb2.Result(digest=op.digest, size=op.size, media_type=op.media_type)


def unlink_blob(change: Change, op: command_pb2.UnlinkBlobOp) -> command_pb2.Result:
    batch = change.batch
    rid = _existing_repo(batch, op.repository)
    if not batch.delete("blobs", keys.member(rid, op.digest)):
        raise NotFound(
            "BLOB_UNKNOWN", f"blob {op.digest} is not linked to repository {op.repository!r}"
        )
    change.emit(registry_pb2.BLOB_UNLINK, op.repository, op.digest)
    return command_pb2.Result(digest=op.digest)


def mount_blob(change: Change, op: command_pb2.MountBlobOp) -> command_pb2.Result:
    """Link a blob that another repository already has, without uploading it again."""
    blob = stat_blob(change.batch, op.from_repository, op.digest)
    _link(change, op.repository, op.digest, blob.size, blob.media_type)
    return command_pb2.Result(digest=op.digest, size=blob.size, media_type=blob.media_type)


# -- history ------------------------------------------------------------------------


def set_event_retention(change: Change, op: command_pb2.SetEventRetentionOp):
    change.batch.txn.put(_EVENT_RETENTION, op.SerializeToString(deterministic=True))
    age = f"{op.max_age_seconds} s" if op.max_age_seconds else "no limit"
    change.record(
        registry_pb2.CLUSTER_CHANGE,
        "SetEventRetention",
        f"events of the last {op.revisions or EVENT_RETENTION} revisions, age limit {age}",
    )
    return command_pb2.Result()


def event_retention(view: View) -> command_pb2.SetEventRetentionOp:
    """The cluster's event retention (zeros: the defaults)."""
    raw = view.txn.get(_EVENT_RETENTION)
    return command_pb2.SetEventRetentionOp.FromString(raw or b"")


def prune_events(batch: Batch, revision: int, most: int, now_ms: int = 0) -> None:
    """Forget up to `most` events beyond the retention: older than its number of
    revisions, or (with an age limit, and `now_ms` the time of the entry being
    applied) written longer ago than its age. An event without a time is kept until
    it falls out by revisions."""
    retention = event_retention(batch)
    guarded = batch.machine_version >= versions.AUDIT_EVENTS
    floor = revision - (retention.revisions or EVENT_RETENTION)
    age_ms = retention.max_age_seconds * 1000
    cutoff = now_ms - age_ms if age_ms and now_ms > age_ms else 0
    previous = events_floor(batch)
    if floor <= previous and not cutoff:
        return
    cursor = batch.cursor("events")
    doomed = []
    for key, value in cursor:
        if len(doomed) >= most:
            break
        if keys.event_revision(key) >= floor:
            if keys.event_revision(key) > revision - MIN_EVENT_REVISIONS and guarded:
                break
            event_time = registry_pb2.Event.FromString(value).time_ms if cutoff else 0
            if not event_time or event_time >= cutoff:
                break
        doomed.append(key)
    for key in doomed:
        batch.delete("events", key)
    first = batch.cursor("events")
    lowest = keys.event_revision(first.key()) if first.first() else floor
    if doomed and keys.event_revision(doomed[-1]) == lowest:
        # The limit cut that revision in two: its history is no longer complete.
        lowest += 1
    # Complete from here on; never lower than before (a longer retention set later
    # does not bring back what was forgotten).
    complete = max(min(floor, lowest), keys.event_revision(doomed[-1]) + 1 if doomed else 0)
    batch.txn.put(_EVENTS_FLOOR, keys.u64(max(previous, complete)))


def events_floor(view: View) -> int:
    """The oldest revision from which the event history is complete."""
    raw = view.txn.get(_EVENTS_FLOOR)
    return keys.read_u64(raw) if raw else 0


def events(
    view: View, from_revision: int, prefix: str, limit: int
) -> tuple[list[registry_pb2.Event], int]:
    """Events at or after from_revision under `prefix`: about `limit`, never splitting a
    revision, after reading at most about READ_PER_EVENT x `limit` events (a narrow
    prefix over a long history), so that a page may be empty before the end.

    Also returns the revision to continue from: everything before it was read. It is
    past the last applied revision once the history was read to its end.
    """
    found: list[registry_pb2.Event] = []
    cursor = view.cursor("events")
    # Never behind from_revision: a caller asking for the future waits for it.
    end = max(from_revision, view.revision + 1)
    if not cursor.set_range(keys.event(from_revision, 0)):
        return found, end
    current, budget = from_revision, READ_PER_EVENT * limit
    for key, value in cursor:
        revision = keys.event_revision(key)
        if revision != current and (len(found) >= limit or budget <= 0):
            return found, revision
        current = revision
        budget -= 1
        event = registry_pb2.Event.FromString(value)
        if event.repository.startswith(prefix):
            event.sequence = keys.event_sequence(key)  # the key holds it, not the record
            found.append(event)
    return found, end


# -- reads --------------------------------------------------------------------------


def get_manifest(
    view: View, repository: str, reference: str, by_digest: bool
) -> tuple[str, record_pb2.ManifestRecord]:
    rid = _existing_repo(view, repository)
    if by_digest:
        digest = reference
    else:
        raw = view.get("tags", keys.member(rid, reference))
        if raw is None:
            raise NotFound(
                "MANIFEST_UNKNOWN", f"tag {reference!r} does not exist in repository {repository!r}"
            )
        digest = raw.decode()
    raw = view.get("manifests", keys.member(rid, digest))
    if raw is None:
        raise NotFound("MANIFEST_UNKNOWN", f"manifest {digest} is not in repository {repository!r}")
    return digest, record_pb2.ManifestRecord.FromString(raw)


def list_tags(
    view: View, repository: str, n: int, last: str, digest: str = ""
) -> tuple[list[str], bool]:
    """One page of tags in lexical order after `last` (only those pointing at `digest`,
    if given); cost follows the page size."""
    rid = _existing_repo(view, repository)
    if digest:
        prefix = keys.pair_prefix(rid, digest)
        records = view.scan("tag_index", prefix, last.encode())
        return page(records, n, lambda k: keys.pair_second(prefix, k))
    return page(view.scan("tags", rid, last.encode()), n, lambda k: keys.member_name(rid, k))


def list_repositories(view: View, n: int, last: str) -> tuple[list[str], bool]:
    return page(view.scan("repos", b"", last.encode()), n, lambda k: k.decode())


def page(records, n: int, name) -> tuple[list, bool]:
    """The first n of (key, value) records as name(key), and whether more follow."""
    found: list = []
    for key, _ in records:
        if len(found) == n:
            return found, True
        found.append(name(key))
    return found, False


# A page of referrers ends before its descriptors pass this size: each may carry up to
# a manifest's worth of annotations, and an answer must stay under the 4 MiB that gRPC
# clients accept by default (with room for the rest of the answer).
REFERRERS_PAGE_BYTES = (4 << 20) - (16 << 10)
# A page also ends once it has looked at this many referrers (a filter by artifact type
# may pass over most), or read this many bytes of manifest records (referrers indexed
# before machine version 8, whose content, up to 4 MiB each, is read with them), so
# that its cost is bounded whatever the subject's referrers are.
REFERRERS_EXAMINED = 1024
REFERRERS_READ_BYTES = 32 << 20


class ReferrersPage(NamedTuple):
    descriptors: list[registry_pb2.Descriptor]
    more: bool  # referrers may follow: ask again from `last`
    last: str  # the last referrer covered, returned or passed over


def get_referrers(
    view: View, repository: str, subject: str, artifact_type: str, n: int, last: str = ""
) -> ReferrersPage:
    """One page of the manifests of the repository whose subject is `subject`, in
    digest order after `last`: at most n, and no more than REFERRERS_PAGE_BYTES of
    descriptors (at least one), looking at REFERRERS_EXAMINED referrers at most."""
    rid = _repo(view, repository)
    if rid is None:
        return ReferrersPage([], False, last)
    found: list[registry_pb2.Descriptor] = []
    size = read = 0
    prefix = keys.pair_prefix(rid, subject)
    for examined, (key, value) in enumerate(view.scan("referrers", prefix, last.encode())):
        if examined == REFERRERS_EXAMINED or read > REFERRERS_READ_BYTES:
            return ReferrersPage(found, True, last)
        digest = keys.pair_second(prefix, key)
        descriptor, cost = _referrer_descriptor(view, rid, digest, value)
        read += cost
        if descriptor is not None and artifact_type in ("", descriptor.artifact_type):
            size += descriptor.ByteSize()
            if len(found) == n or (found and size > REFERRERS_PAGE_BYTES):
                return ReferrersPage(found, True, last)
            found.append(descriptor)
        last = digest
    return ReferrersPage(found, False, last)


def _referrer_descriptor(
    view: View, rid: bytes, digest: str, value: bytes
) -> tuple[registry_pb2.Descriptor | None, int]:
    """A referrer's descriptor, from its index value or else its manifest's record (None
    if that is gone: never seen), and the bytes read for it."""
    if value:
        record = record_pb2.ReferrerRecord.FromString(value)
        size, read = record.size, len(value)
    else:
        raw = view.get("manifests", keys.member(rid, digest))
        if raw is None:
            return None, 0
        record = record_pb2.ManifestRecord.FromString(raw)
        size, read = len(record.content), len(raw)
    descriptor = registry_pb2.Descriptor(
        media_type=record.media_type,
        digest=digest,
        size=size,
        artifact_type=record.artifact_type,
        annotations=record.annotations,
    )
    return descriptor, read


def stat_blob(view: View, repository: str, digest: str) -> record_pb2.BlobRecord:
    rid = _repo(view, repository)
    raw = view.get("blobs", keys.member(rid, digest)) if rid is not None else None
    if raw is None:
        raise NotFound("BLOB_UNKNOWN", f"blob {digest} is not linked to repository {repository!r}")
    return record_pb2.BlobRecord.FromString(raw)


def counts(view: View) -> dict[str, int]:
    """Entries by kind, for metrics."""
    return {
        "repositories": view.count("repos"),
        "manifests": view.count("manifests"),
        "tags": view.count("tags"),
        "blobs": view.count("blobs"),
    }
