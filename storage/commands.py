"""Requests in, validated commands out: the one place a write is checked.

Each function takes an API request, checks every field against the OCI grammar
(storage/names.py) and the manifest format (storage/manifest.py), and returns the
Command to replicate. It raises InvalidArgument naming the first bad field, before
anything is proposed, so a bad request never reaches the log.
"""

import hashlib
import re

from regraft.v1 import access_pb2, command_pb2, record_pb2, registry_pb2
from storage import access, manifest, names, registry, versions
from storage.errors import InvalidArgument

MAX_REQUEST_ID_LENGTH = 128
# ASCII only: the id is part of an LMDB key, which must stay under 511 bytes.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/-]*")
MIN_EVENT_AGE_SECONDS = 86_400
MAX_DESCRIPTION_LENGTH = 255
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256

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


def put_manifest(request: registry_pb2.PutManifestRequest, actor: str = "") -> Command:
    """Parse the manifest; its digest comes from the bytes, and must match a digest reference."""
    command = _envelope(request.request_id, actor)
    repository = names.validate_repository(request.repository)
    reference = names.validate_reference(request.reference)
    info = manifest.parse_manifest(request.content, names.validate_media_type(request.media_type))
    tag = ""
    if names.is_digest_reference(reference):
        digest = names.compute_digest(request.content, names.digest_algorithm(reference))
        if digest != reference:
            raise InvalidArgument(
                "reference",
                f"digest {reference} does not match the content, whose digest is {digest}",
                "DIGEST_INVALID",
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
            size=manifest.validate_size(request.size, "size"),
            media_type=names.validate_media_type(request.media_type),
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


def set_event_retention(revisions: int, max_age_seconds: int, actor: str = "") -> Command:
    """How much change history every replica keeps; zeros restore the defaults.

    Bounded below: the history is also the audit log, and a stolen admin credential
    must not be able to erase it with one call.
    """
    if revisions and revisions < registry.MIN_EVENT_REVISIONS:
        raise InvalidArgument(
            "revisions", f"{revisions} is too few: keep at least {registry.MIN_EVENT_REVISIONS}"
        )
    if max_age_seconds and max_age_seconds < MIN_EVENT_AGE_SECONDS:
        raise InvalidArgument(
            "max_age_seconds",
            f"{max_age_seconds} is too short: keep at least {MIN_EVENT_AGE_SECONDS} (a day)",
        )
    op = command_pb2.SetEventRetentionOp(revisions=revisions, max_age_seconds=max_age_seconds)
    return Command(actor=actor, set_event_retention=op)


def barrier() -> Command:
    """The no-op a linearizable read commits to prove this replica's state is current."""
    return Command(barrier=command_pb2.BarrierOp())


# -- members ------------------------------------------------------------------------


def add_member(member_id: str, raft_address: str, grpc_address: str, actor: str = "") -> Command:
    """A new member, recorded as a learner (storage/members.py)."""
    member = record_pb2.MemberRecord(
        id=names.validate_member_id(member_id),
        raft_address=names.validate_dialable(raft_address, "raft_address"),
        grpc_address=names.validate_dialable(grpc_address, "grpc_address"),
    )
    return Command(actor=actor, add_member=command_pb2.AddMemberOp(member=member))


def set_member_address(
    member_id: str, grpc_address: str, expected: str, actor: str = ""
) -> Command:
    """Move a member's gRPC address if it still is `expected` (storage/members.py)."""
    op = command_pb2.SetMemberAddressOp(
        id=names.validate_member_id(member_id),
        grpc_address=names.validate_dialable(grpc_address, "grpc_address"),
        expected_grpc_address=expected,
    )
    return Command(actor=actor, set_member_address=op)


def seed_members(
    members: list[record_pb2.MemberRecord],
    cluster_id: str = "",
    machine_version: int = versions.LATEST,
) -> Command:
    op = command_pb2.SeedMembersOp(
        members=members, cluster_id=cluster_id, machine_version=machine_version
    )
    return Command(seed_members=op)


def set_machine_version(version: int) -> Command:
    """Raise how every replica applies commands (storage/versions.py)."""
    if not 1 <= version <= versions.LATEST:
        raise InvalidArgument(
            "version",
            f"{version} is not a machine version this code knows (1 to {versions.LATEST})",
        )
    return Command(set_machine_version=command_pb2.SetMachineVersionOp(version=version))


def set_member_role(member_id: str, current: int, new: int, actor: str = "") -> Command:
    op = command_pb2.SetMemberRoleOp(id=names.validate_member_id(member_id), to=new)
    setattr(op, "from", current)
    return Command(actor=actor, set_member_role=op)


# -- access (storage/access.py) -----------------------------------------------------


def _description(value: str) -> str:
    return names.validate_printable(value, "description", "a description", MAX_DESCRIPTION_LENGTH)


def _password_hash(password: str, name: str, request_id: str) -> str:
    """Hash before proposing: the password itself never reaches the log or a message.

    With a request id the salt is derived from it, so that a retry under the same id is
    the same command (machine.py compares them) rather than a refused different one.
    """
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidArgument(
            "password",
            f"is {len(password)} characters; {MIN_PASSWORD_LENGTH} to "
            f"{MAX_PASSWORD_LENGTH} are required",
        )
    salt = None
    if request_id:
        seed = b"\0".join([b"regraft password salt", name.encode(), request_id.encode()])
        salt = hashlib.sha256(seed).digest()[:16]
    return access.hash_password(password, salt)


def create_user(request: access_pb2.CreateUserRequest, actor: str = "") -> Command:
    command = _envelope(request.request_id, actor)
    name = names.validate_account_name(request.name)
    op = command_pb2.PutUserOp(name=name, create=True, admin=request.admin)
    if request.password:
        op.password_hash = _password_hash(request.password, name, request.request_id)
    command.put_user.CopyFrom(op)
    return command


def update_user(request: access_pb2.UpdateUserRequest, actor: str = "") -> Command:
    command = _envelope(request.request_id, actor)
    name = names.validate_account_name(request.name)
    op = command_pb2.PutUserOp(name=name)
    for field in ("active", "admin"):
        if request.HasField(field):
            setattr(op, field, getattr(request, field))
    if request.HasField("password"):
        password = request.password
        op.password_hash = password and _password_hash(password, name, request.request_id)
    command.put_user.CopyFrom(op)
    return command


def delete_user(request: access_pb2.DeleteUserRequest, actor: str = "") -> Command:
    command = _envelope(request.request_id, actor)
    command.delete_user.name = names.validate_account_name(request.name)
    return command


def put_organization(
    request: access_pb2.OrganizationRequest, create: bool, actor: str = ""
) -> Command:
    command = _envelope(request.request_id, actor)
    command.put_organization.CopyFrom(
        command_pb2.PutOrganizationOp(
            name=names.validate_account_name(request.name),
            create=create,
            description=_description(request.description),
        )
    )
    return command


def delete_organization(request: access_pb2.DeleteOrganizationRequest, actor: str = "") -> Command:
    command = _envelope(request.request_id, actor)
    command.delete_organization.name = names.validate_account_name(request.name)
    return command


def put_team(request: access_pb2.TeamRequest, create: bool, actor: str = "") -> Command:
    command = _envelope(request.request_id, actor)
    command.put_team.CopyFrom(
        command_pb2.PutTeamOp(
            organization=names.validate_account_name(request.organization, "organization"),
            name=names.validate_account_name(request.name),
            create=create,
            description=_description(request.description),
        )
    )
    return command


def delete_team(request: access_pb2.DeleteTeamRequest, actor: str = "") -> Command:
    command = _envelope(request.request_id, actor)
    command.delete_team.CopyFrom(
        command_pb2.DeleteTeamOp(
            organization=names.validate_account_name(request.organization, "organization"),
            name=names.validate_account_name(request.name),
        )
    )
    return command


def set_team_member(
    request: access_pb2.TeamMemberRequest, member: bool, actor: str = ""
) -> Command:
    """Add (member) or remove a user from a team."""
    command = _envelope(request.request_id, actor)
    command.set_team_member.CopyFrom(
        command_pb2.SetTeamMemberOp(
            organization=names.validate_account_name(request.organization, "organization"),
            team=names.validate_account_name(request.team, "team"),
            user=names.validate_account_name(request.user, "user"),
            member=member,
        )
    )
    return command


def set_organization_owner(
    request: access_pb2.OrganizationOwnerRequest, owner: bool, actor: str = ""
) -> Command:
    """Add (owner) or remove an owner of an organization."""
    command = _envelope(request.request_id, actor)
    command.set_organization_owner.CopyFrom(
        command_pb2.SetOrganizationOwnerOp(
            organization=names.validate_account_name(request.organization, "organization"),
            user=names.validate_account_name(request.user, "user"),
            owner=owner,
        )
    )
    return command


def subject(value: access_pb2.Subject, field: str = "subject") -> access_pb2.Subject:
    """A user, or a team of an organization, with valid names."""
    kind = value.WhichOneof("kind")
    if kind == "user":
        names.validate_account_name(value.user, f"{field}.user")
    elif kind == "team":
        names.validate_account_name(value.team.organization, f"{field}.team.organization")
        names.validate_account_name(value.team.name, f"{field}.team.name")
    else:
        raise InvalidArgument(field, "must name a user or a team")
    return value


def scope(value: access_pb2.Scope, field: str = "scope") -> access_pb2.Scope:
    """A repository, or every repository of an organization, with valid names."""
    kind = value.WhichOneof("kind")
    if kind == "repository":
        names.validate_repository(value.repository, f"{field}.repository")
    elif kind == "organization":
        names.validate_account_name(value.organization, f"{field}.organization")
    else:
        raise InvalidArgument(field, "must name a repository or an organization")
    return value


def set_grant(request: access_pb2.SetGrantRequest, actor: str = "") -> Command:
    command = _envelope(request.request_id, actor)
    grant = request.grant
    if grant.level not in access.LEVEL_NAMES:
        raise InvalidArgument(
            "grant.level", f"{grant.level} is not a level: READ_ONLY, READ_WRITE or ADMIN"
        )
    command.set_grant.CopyFrom(
        command_pb2.SetGrantOp(
            scope=scope(grant.scope, "grant.scope"),
            subject=subject(grant.subject, "grant.subject"),
            level=grant.level,
        )
    )
    return command


def delete_grant(request: access_pb2.DeleteGrantRequest, actor: str = "") -> Command:
    command = _envelope(request.request_id, actor)
    command.set_grant.CopyFrom(
        command_pb2.SetGrantOp(scope=scope(request.scope), subject=subject(request.subject))
    )
    return command


def set_repository_settings(
    request: access_pb2.SetRepositorySettingsRequest, actor: str = ""
) -> Command:
    command = _envelope(request.request_id, actor)
    if request.settings.visibility not in access_pb2.Visibility.values():
        raise InvalidArgument(
            "settings.visibility",
            f"{request.settings.visibility} is not a visibility: PRIVATE or PUBLIC",
        )
    command.set_repository_settings.CopyFrom(
        command_pb2.SetRepositorySettingsOp(
            repository=names.validate_repository(request.repository),
            settings=request.settings,
        )
    )
    return command
