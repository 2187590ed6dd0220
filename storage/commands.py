"""Requests in, validated commands out: the one place a write is checked.

Each function takes an API request, checks every field against the OCI grammar
(storage/names.py) and the manifest format (storage/manifest.py), and returns the
Command to replicate. It raises InvalidArgument naming the first bad field, before
anything is proposed, so a bad request never reaches the log.
"""

import re

from regraft.v1 import command_pb2, record_pb2, registry_pb2
from storage import manifest, names
from storage.errors import InvalidArgument

MAX_REQUEST_ID_LENGTH = 128
# ASCII only: the id is part of an LMDB key, which must stay under 511 bytes.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/-]*")
MAX_MEDIA_TYPE_LENGTH = 255

Command = command_pb2.Command


def _envelope(request_id: str, actor: str) -> Command:
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidArgument(
            "request_id",
            f"is {len(request_id)} characters; at most {MAX_REQUEST_ID_LENGTH} are allowed",
        )
    if not _REQUEST_ID.fullmatch(request_id):
        raise InvalidArgument(
            "request_id", f"{names.quote(request_id)} may use only A-Z a-z 0-9 . _ : / -"
        )
    return Command(request_id=request_id, actor=actor)


def _media_type(value: str, field: str = "media_type") -> str:
    if len(value) > MAX_MEDIA_TYPE_LENGTH or any(not ch.isprintable() for ch in value):
        raise InvalidArgument(
            field, f"{names.quote(value)} is not a media type (printable, at most 255 characters)"
        )
    return value


def put_manifest(request: registry_pb2.PutManifestRequest, actor: str = "") -> Command:
    """Parse the manifest; its digest comes from the bytes, and must match a digest reference."""
    command = _envelope(request.request_id, actor)
    repository = names.validate_repository(request.repository)
    reference = names.validate_reference(request.reference)
    info = manifest.parse_manifest(request.content, _media_type(request.media_type))
    tag = ""
    if names.is_digest_reference(reference):
        digest = names.compute_digest(request.content, names.digest_algorithm(reference))
        if digest != reference:
            raise InvalidArgument(
                "reference",
                f"digest {reference} does not match the content, whose digest is {digest}",
            )
    else:
        digest = names.compute_digest(request.content)
        tag = reference
    command.put_manifest.CopyFrom(
        command_pb2.PutManifestOp(
            repository=repository,
            digest=digest,
            media_type=info.media_type,
            content=request.content,
            tag=tag,
            blobs=info.blobs,
            manifests=info.manifests,
            subject=info.subject,
            artifact_type=info.artifact_type,
            annotations=dict(info.annotations),
        )
    )
    return command


def delete_manifest(request: registry_pb2.DeleteManifestRequest, actor: str = "") -> Command:
    command = _envelope(request.request_id, actor)
    command.delete_manifest.CopyFrom(
        command_pb2.DeleteManifestOp(
            repository=names.validate_repository(request.repository),
            digest=names.validate_digest(request.digest),
        )
    )
    return command


def _optional_digest(value: str, field: str) -> str:
    return names.validate_digest(value, field) if value else ""


def put_tag(request: registry_pb2.PutTagRequest, actor: str = "") -> Command:
    command = _envelope(request.request_id, actor)
    if request.must_not_exist and request.expected_digest:
        raise InvalidArgument(
            "expected_digest", "cannot be combined with must_not_exist: choose one condition"
        )
    command.put_tag.CopyFrom(
        command_pb2.PutTagOp(
            repository=names.validate_repository(request.repository),
            tag=names.validate_tag(request.tag),
            digest=names.validate_digest(request.digest),
            expected_digest=_optional_digest(request.expected_digest, "expected_digest"),
            must_not_exist=request.must_not_exist,
        )
    )
    return command


def delete_tag(request: registry_pb2.DeleteTagRequest, actor: str = "") -> Command:
    command = _envelope(request.request_id, actor)
    command.delete_tag.CopyFrom(
        command_pb2.DeleteTagOp(
            repository=names.validate_repository(request.repository),
            tag=names.validate_tag(request.tag),
            expected_digest=_optional_digest(request.expected_digest, "expected_digest"),
        )
    )
    return command


def link_blob(request: registry_pb2.LinkBlobRequest, actor: str = "") -> Command:
    command = _envelope(request.request_id, actor)
    command.link_blob.CopyFrom(
        command_pb2.LinkBlobOp(
            repository=names.validate_repository(request.repository),
            digest=names.validate_digest(request.digest),
            size=request.size,
            media_type=_media_type(request.media_type),
        )
    )
    return command


def unlink_blob(request: registry_pb2.UnlinkBlobRequest, actor: str = "") -> Command:
    command = _envelope(request.request_id, actor)
    command.unlink_blob.CopyFrom(
        command_pb2.UnlinkBlobOp(
            repository=names.validate_repository(request.repository),
            digest=names.validate_digest(request.digest),
        )
    )
    return command


def mount_blob(request: registry_pb2.MountBlobRequest, actor: str = "") -> Command:
    command = _envelope(request.request_id, actor)
    command.mount_blob.CopyFrom(
        command_pb2.MountBlobOp(
            from_repository=names.validate_repository(request.from_repository, "from_repository"),
            repository=names.validate_repository(request.repository),
            digest=names.validate_digest(request.digest),
        )
    )
    return command


def barrier() -> Command:
    """The no-op a linearizable read commits to prove this replica's state is current."""
    return Command(barrier=command_pb2.BarrierOp())


# -- members ------------------------------------------------------------------------


def add_member(member_id: str, raft_address: str, grpc_address: str) -> Command:
    """A new member, recorded as a learner (storage/members.py)."""
    member = record_pb2.MemberRecord(
        id=names.validate_member_id(member_id),
        raft_address=_address(raft_address, "raft_address"),
        grpc_address=_address(grpc_address, "grpc_address"),
    )
    return Command(add_member=command_pb2.AddMemberOp(member=member))


def seed_members(members: list[record_pb2.MemberRecord], cluster_id: str = "") -> Command:
    return Command(seed_members=command_pb2.SeedMembersOp(members=members, cluster_id=cluster_id))


def set_member_role(member_id: str, current: int, new: int) -> Command:
    op = command_pb2.SetMemberRoleOp(id=names.validate_member_id(member_id), to=new)
    setattr(op, "from", current)
    return Command(set_member_role=op)


def _address(address: str, field: str) -> str:
    names.split_address(address, field)
    return address
