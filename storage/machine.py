"""The replicated state machine: apply(index, command) -> result, on every replica.

Deterministic and exactly-once. The index of each applied entry is stored in the same
transaction as its effects, and an entry at or below it is skipped, so replaying the
log after a restart changes nothing. A refused command (a missing blob, a
compare-and-set mismatch) yields an error result and changes nothing; so does a
command that cannot be decoded. apply raises only LMDB errors (a full map or disk),
which the caller answers by retrying the whole batch: PySyncObj retries an entry whose
apply raised forever, so nothing else may escape.
"""

import hashlib
import logging

import lmdb
from google.protobuf.message import DecodeError

from regraft.v1 import command_pb2, record_pb2, registry_pb2
from storage import access, keys, members, registry, versions
from storage.db import Batch
from storage.errors import FailedPrecondition, NotFound, RegistryError

log = logging.getLogger(__name__)

# Request ids are remembered for this many log entries: a client retrying later than
# that gets its write applied again.
REQUEST_RETENTION = 100_000
# Old request ids and events are forgotten every PRUNE_EVERY entries, at most
# PRUNE_BATCH of each at a time: bounded work, and the same on every replica.
PRUNE_EVERY = 32
PRUNE_BATCH = 1024

Result = command_pb2.Result


def set_machine_version(change: registry.Change, op: command_pb2.SetMachineVersionOp) -> Result:
    """Raise the machine version (never lower it): from the next entry on, every replica
    applies commands the newer way (storage/versions.py)."""
    current = change.batch.machine_version
    if op.version <= current:
        return Result(message=f"the machine version is already {current}")
    if op.version > versions.LATEST:
        # Set anyway: every replica must agree. The leader raises it only once every
        # member said it supports it, so this replica runs older code than it claimed.
        log.error("machine version %d is newer than this code (%d)", op.version, versions.LATEST)
    change.batch.set_machine_version(op.version)
    change.record(
        registry_pb2.CLUSTER_CHANGE,
        "SetMachineVersion",
        f"machine version {current} -> {op.version}",
    )
    return Result()


_OPERATIONS = {
    "put_manifest": registry.put_manifest,
    "delete_manifest": registry.delete_manifest,
    "put_tag": registry.put_tag,
    "delete_tag": registry.delete_tag,
    "link_blob": registry.link_blob,
    "unlink_blob": registry.unlink_blob,
    "mount_blob": registry.mount_blob,
    "barrier": lambda change, op: Result(),
    "seed_members": members.seed,
    "add_member": members.add,
    "set_member_role": members.set_role,
    "set_member_address": members.set_address,
    "set_event_retention": registry.set_event_retention,
    "set_machine_version": set_machine_version,
    "put_user": access.put_user,
    "delete_user": access.delete_user,
    "put_organization": access.put_organization,
    "delete_organization": access.delete_organization,
    "put_team": access.put_team,
    "delete_team": access.delete_team,
    "set_team_member": access.set_team_member,
    "set_organization_owner": access.set_organization_owner,
    "set_grant": access.set_grant,
    "set_repository_settings": access.set_repository_settings,
}

# Operations that older code does not know, from the machine version that applies them.
_SINCE = {"set_member_address": versions.MEMBER_ADDRESSES}

_CODES = {NotFound: Result.NOT_FOUND, FailedPrecondition: Result.FAILED_PRECONDITION}


def apply(batch: Batch, index: int, data: bytes) -> Result:
    """Apply log entry `index` (a serialized Command) inside `batch`."""
    if index <= batch.revision:
        return Result(
            code=Result.OUTCOME_UNKNOWN,
            revision=batch.revision,
            message=f"log entry {index} was applied before; its result was not kept",
        )
    try:
        command = command_pb2.Command.FromString(data)
    except DecodeError as e:
        result = Result(code=Result.INVALID_ARGUMENT, message=f"undecodable command: {e}")
        now_ms = 0
    else:
        # Only a request id is checked against its fingerprint: skip it for the rest.
        fingerprint = _fingerprint(command) if command.request_id else b""
        result = _remembered(batch, command.request_id, fingerprint) or _execute(
            batch, index, command, fingerprint
        )
        now_ms = command.time_ms
    if not result.revision:
        result.revision = index
    if index % PRUNE_EVERY == 0:
        _forget_old_requests(batch, index)
        registry.prune_events(batch, index, PRUNE_BATCH, now_ms)
    batch.set_revision(index)
    return result


def _execute(batch: Batch, index: int, command: command_pb2.Command, fingerprint: bytes) -> Result:
    op_name = command.WhichOneof("op")
    operation = _OPERATIONS.get(op_name)
    if operation is None or batch.machine_version < _SINCE.get(op_name, 0):
        # Older code sees no operation in a newer one: the same result on every replica.
        return Result(code=Result.INVALID_ARGUMENT, message="command names no operation")
    change = registry.Change(batch, index, command.actor, command.time_ms)
    try:
        result = batch.atomically(operation, change, getattr(command, op_name))
    except RegistryError as e:
        result = Result(code=_CODES[type(e)], message=e.message, oci_code=e.oci_code)
    except lmdb.Error:
        raise
    except Exception:
        log.exception("applying %s at index %d failed: this is a bug", op_name, index)
        result = Result(code=Result.INTERNAL, message=f"internal error applying {op_name}")
    result.revision = index
    if command.request_id:
        record = record_pb2.RequestRecord(
            index=index, result=result.SerializeToString(), fingerprint=fingerprint
        )
        batch.put("requests", command.request_id.encode(), record.SerializeToString())
        batch.put("request_log", keys.request_log(index, command.request_id), b"")
    return result


def _fingerprint(command: command_pb2.Command) -> bytes:
    op_name = command.WhichOneof("op") or ""
    op = getattr(command, op_name).SerializeToString(deterministic=True) if op_name else b""
    return hashlib.sha256(op_name.encode() + b"\0" + op).digest()


def _remembered(batch: Batch, request_id: str, fingerprint: bytes) -> Result | None:
    """The first outcome of a request id seen before, if it is still remembered.

    A request id reused for a different operation is a client bug: refusing it beats
    answering with the outcome of another write.
    """
    if not request_id:
        return None
    raw = batch.get("requests", request_id.encode())
    if raw is None:
        return None
    record = record_pb2.RequestRecord.FromString(raw)
    # Records from before fingerprints were kept have none: they cannot be checked.
    if record.fingerprint and record.fingerprint != fingerprint:
        return Result(
            code=Result.INVALID_ARGUMENT,
            message=(
                f"request_id {request_id!r} was already used for a different request "
                f"(applied at revision {record.index})"
            ),
        )
    return Result.FromString(record.result)


def _forget_old_requests(batch: Batch, index: int) -> None:
    cursor = batch.cursor("request_log")
    doomed = []
    for key, _ in cursor:
        applied_at, request_id = keys.request_log_id(key)
        if applied_at > index - REQUEST_RETENTION or len(doomed) >= PRUNE_BATCH:
            break
        doomed.append((key, request_id))
    for key, request_id in doomed:
        batch.delete("request_log", key)
        batch.delete("requests", request_id.encode())
