from regraft.v1 import access_pb2 as _access_pb2
from regraft.v1 import record_pb2 as _record_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Command(_message.Message):
    __slots__ = ("request_id", "actor", "time_ms", "put_manifest", "delete_manifest", "put_tag", "delete_tag", "link_blob", "unlink_blob", "mount_blob", "barrier", "seed_members", "add_member", "set_member_role", "set_event_retention", "set_machine_version", "set_member_address", "put_user", "delete_user", "put_organization", "delete_organization", "put_team", "delete_team", "set_team_member", "set_organization_owner", "set_grant", "set_repository_settings")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    PUT_MANIFEST_FIELD_NUMBER: _ClassVar[int]
    DELETE_MANIFEST_FIELD_NUMBER: _ClassVar[int]
    PUT_TAG_FIELD_NUMBER: _ClassVar[int]
    DELETE_TAG_FIELD_NUMBER: _ClassVar[int]
    LINK_BLOB_FIELD_NUMBER: _ClassVar[int]
    UNLINK_BLOB_FIELD_NUMBER: _ClassVar[int]
    MOUNT_BLOB_FIELD_NUMBER: _ClassVar[int]
    BARRIER_FIELD_NUMBER: _ClassVar[int]
    SEED_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ADD_MEMBER_FIELD_NUMBER: _ClassVar[int]
    SET_MEMBER_ROLE_FIELD_NUMBER: _ClassVar[int]
    SET_EVENT_RETENTION_FIELD_NUMBER: _ClassVar[int]
    SET_MACHINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SET_MEMBER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PUT_USER_FIELD_NUMBER: _ClassVar[int]
    DELETE_USER_FIELD_NUMBER: _ClassVar[int]
    PUT_ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    DELETE_ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    PUT_TEAM_FIELD_NUMBER: _ClassVar[int]
    DELETE_TEAM_FIELD_NUMBER: _ClassVar[int]
    SET_TEAM_MEMBER_FIELD_NUMBER: _ClassVar[int]
    SET_ORGANIZATION_OWNER_FIELD_NUMBER: _ClassVar[int]
    SET_GRANT_FIELD_NUMBER: _ClassVar[int]
    SET_REPOSITORY_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    actor: str
    time_ms: int
    put_manifest: PutManifestOp
    delete_manifest: DeleteManifestOp
    put_tag: PutTagOp
    delete_tag: DeleteTagOp
    link_blob: LinkBlobOp
    unlink_blob: UnlinkBlobOp
    mount_blob: MountBlobOp
    barrier: BarrierOp
    seed_members: SeedMembersOp
    add_member: AddMemberOp
    set_member_role: SetMemberRoleOp
    set_event_retention: SetEventRetentionOp
    set_machine_version: SetMachineVersionOp
    set_member_address: SetMemberAddressOp
    put_user: PutUserOp
    delete_user: DeleteUserOp
    put_organization: PutOrganizationOp
    delete_organization: DeleteOrganizationOp
    put_team: PutTeamOp
    delete_team: DeleteTeamOp
    set_team_member: SetTeamMemberOp
    set_organization_owner: SetOrganizationOwnerOp
    set_grant: SetGrantOp
    set_repository_settings: SetRepositorySettingsOp
    def __init__(self, request_id: _Optional[str] = ..., actor: _Optional[str] = ..., time_ms: _Optional[int] = ..., put_manifest: _Optional[_Union[PutManifestOp, _Mapping]] = ..., delete_manifest: _Optional[_Union[DeleteManifestOp, _Mapping]] = ..., put_tag: _Optional[_Union[PutTagOp, _Mapping]] = ..., delete_tag: _Optional[_Union[DeleteTagOp, _Mapping]] = ..., link_blob: _Optional[_Union[LinkBlobOp, _Mapping]] = ..., unlink_blob: _Optional[_Union[UnlinkBlobOp, _Mapping]] = ..., mount_blob: _Optional[_Union[MountBlobOp, _Mapping]] = ..., barrier: _Optional[_Union[BarrierOp, _Mapping]] = ..., seed_members: _Optional[_Union[SeedMembersOp, _Mapping]] = ..., add_member: _Optional[_Union[AddMemberOp, _Mapping]] = ..., set_member_role: _Optional[_Union[SetMemberRoleOp, _Mapping]] = ..., set_event_retention: _Optional[_Union[SetEventRetentionOp, _Mapping]] = ..., set_machine_version: _Optional[_Union[SetMachineVersionOp, _Mapping]] = ..., set_member_address: _Optional[_Union[SetMemberAddressOp, _Mapping]] = ..., put_user: _Optional[_Union[PutUserOp, _Mapping]] = ..., delete_user: _Optional[_Union[DeleteUserOp, _Mapping]] = ..., put_organization: _Optional[_Union[PutOrganizationOp, _Mapping]] = ..., delete_organization: _Optional[_Union[DeleteOrganizationOp, _Mapping]] = ..., put_team: _Optional[_Union[PutTeamOp, _Mapping]] = ..., delete_team: _Optional[_Union[DeleteTeamOp, _Mapping]] = ..., set_team_member: _Optional[_Union[SetTeamMemberOp, _Mapping]] = ..., set_organization_owner: _Optional[_Union[SetOrganizationOwnerOp, _Mapping]] = ..., set_grant: _Optional[_Union[SetGrantOp, _Mapping]] = ..., set_repository_settings: _Optional[_Union[SetRepositorySettingsOp, _Mapping]] = ...) -> None: ...

class PutManifestOp(_message.Message):
    __slots__ = ("repository", "digest", "media_type", "content", "tag", "blobs", "manifests", "subject", "artifact_type", "annotations")
    class AnnotationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    media_type: str
    content: bytes
    tag: str
    blobs: _containers.RepeatedScalarFieldContainer[str]
    manifests: _containers.RepeatedScalarFieldContainer[str]
    subject: str
    artifact_type: str
    annotations: _containers.ScalarMap[str, str]
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ..., media_type: _Optional[str] = ..., content: _Optional[bytes] = ..., tag: _Optional[str] = ..., blobs: _Optional[_Iterable[str]] = ..., manifests: _Optional[_Iterable[str]] = ..., subject: _Optional[str] = ..., artifact_type: _Optional[str] = ..., annotations: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DeleteManifestOp(_message.Message):
    __slots__ = ("repository", "digest")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class PutTagOp(_message.Message):
    __slots__ = ("repository", "tag", "digest", "expected_digest", "must_not_exist")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MUST_NOT_EXIST_FIELD_NUMBER: _ClassVar[int]
    repository: str
    tag: str
    digest: str
    expected_digest: str
    must_not_exist: bool
    def __init__(self, repository: _Optional[str] = ..., tag: _Optional[str] = ..., digest: _Optional[str] = ..., expected_digest: _Optional[str] = ..., must_not_exist: _Optional[bool] = ...) -> None: ...

class DeleteTagOp(_message.Message):
    __slots__ = ("repository", "tag", "expected_digest")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_DIGEST_FIELD_NUMBER: _ClassVar[int]
    repository: str
    tag: str
    expected_digest: str
    def __init__(self, repository: _Optional[str] = ..., tag: _Optional[str] = ..., expected_digest: _Optional[str] = ...) -> None: ...

class LinkBlobOp(_message.Message):
    __slots__ = ("repository", "digest", "size", "media_type")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    size: int
    media_type: str
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., media_type: _Optional[str] = ...) -> None: ...

class UnlinkBlobOp(_message.Message):
    __slots__ = ("repository", "digest")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class MountBlobOp(_message.Message):
    __slots__ = ("from_repository", "repository", "digest")
    FROM_REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    from_repository: str
    repository: str
    digest: str
    def __init__(self, from_repository: _Optional[str] = ..., repository: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class BarrierOp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SeedMembersOp(_message.Message):
    __slots__ = ("members", "cluster_id", "machine_version")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    MACHINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[_record_pb2.MemberRecord]
    cluster_id: str
    machine_version: int
    def __init__(self, members: _Optional[_Iterable[_Union[_record_pb2.MemberRecord, _Mapping]]] = ..., cluster_id: _Optional[str] = ..., machine_version: _Optional[int] = ...) -> None: ...

class SetMachineVersionOp(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class AddMemberOp(_message.Message):
    __slots__ = ("member",)
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    member: _record_pb2.MemberRecord
    def __init__(self, member: _Optional[_Union[_record_pb2.MemberRecord, _Mapping]] = ...) -> None: ...

class SetMemberRoleOp(_message.Message):
    __slots__ = ("id", "to")
    ID_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    id: str
    to: _record_pb2.MemberRecord.Role
    def __init__(self, id: _Optional[str] = ..., to: _Optional[_Union[_record_pb2.MemberRecord.Role, str]] = ..., **kwargs) -> None: ...

class SetMemberAddressOp(_message.Message):
    __slots__ = ("id", "grpc_address", "expected_grpc_address")
    ID_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    id: str
    grpc_address: str
    expected_grpc_address: str
    def __init__(self, id: _Optional[str] = ..., grpc_address: _Optional[str] = ..., expected_grpc_address: _Optional[str] = ...) -> None: ...

class PutUserOp(_message.Message):
    __slots__ = ("name", "create", "active", "admin", "password_hash")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_HASH_FIELD_NUMBER: _ClassVar[int]
    name: str
    create: bool
    active: bool
    admin: bool
    password_hash: str
    def __init__(self, name: _Optional[str] = ..., create: _Optional[bool] = ..., active: _Optional[bool] = ..., admin: _Optional[bool] = ..., password_hash: _Optional[str] = ...) -> None: ...

class DeleteUserOp(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class PutOrganizationOp(_message.Message):
    __slots__ = ("name", "create", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    create: bool
    description: str
    def __init__(self, name: _Optional[str] = ..., create: _Optional[bool] = ..., description: _Optional[str] = ...) -> None: ...

class DeleteOrganizationOp(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class PutTeamOp(_message.Message):
    __slots__ = ("organization", "name", "create", "description")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    organization: str
    name: str
    create: bool
    description: str
    def __init__(self, organization: _Optional[str] = ..., name: _Optional[str] = ..., create: _Optional[bool] = ..., description: _Optional[str] = ...) -> None: ...

class DeleteTeamOp(_message.Message):
    __slots__ = ("organization", "name")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    organization: str
    name: str
    def __init__(self, organization: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class SetTeamMemberOp(_message.Message):
    __slots__ = ("organization", "team", "user", "member")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    organization: str
    team: str
    user: str
    member: bool
    def __init__(self, organization: _Optional[str] = ..., team: _Optional[str] = ..., user: _Optional[str] = ..., member: _Optional[bool] = ...) -> None: ...

class SetOrganizationOwnerOp(_message.Message):
    __slots__ = ("organization", "user", "owner")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    organization: str
    user: str
    owner: bool
    def __init__(self, organization: _Optional[str] = ..., user: _Optional[str] = ..., owner: _Optional[bool] = ...) -> None: ...

class SetGrantOp(_message.Message):
    __slots__ = ("scope", "subject", "level")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    scope: _access_pb2.Scope
    subject: _access_pb2.Subject
    level: _access_pb2.AccessLevel
    def __init__(self, scope: _Optional[_Union[_access_pb2.Scope, _Mapping]] = ..., subject: _Optional[_Union[_access_pb2.Subject, _Mapping]] = ..., level: _Optional[_Union[_access_pb2.AccessLevel, str]] = ...) -> None: ...

class SetRepositorySettingsOp(_message.Message):
    __slots__ = ("repository", "settings")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    repository: str
    settings: _access_pb2.RepositorySettings
    def __init__(self, repository: _Optional[str] = ..., settings: _Optional[_Union[_access_pb2.RepositorySettings, _Mapping]] = ...) -> None: ...

class SetEventRetentionOp(_message.Message):
    __slots__ = ("revisions", "max_age_seconds")
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    revisions: int
    max_age_seconds: int
    def __init__(self, revisions: _Optional[int] = ..., max_age_seconds: _Optional[int] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("code", "message", "revision", "digest", "previous_digest", "deleted_tags", "size", "media_type", "oci_code")
    class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OK: _ClassVar[Result.Code]
        NOT_FOUND: _ClassVar[Result.Code]
        FAILED_PRECONDITION: _ClassVar[Result.Code]
        INVALID_ARGUMENT: _ClassVar[Result.Code]
        INTERNAL: _ClassVar[Result.Code]
        OUTCOME_UNKNOWN: _ClassVar[Result.Code]
    OK: Result.Code
    NOT_FOUND: Result.Code
    FAILED_PRECONDITION: Result.Code
    INVALID_ARGUMENT: Result.Code
    INTERNAL: Result.Code
    OUTCOME_UNKNOWN: Result.Code
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    DELETED_TAGS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    OCI_CODE_FIELD_NUMBER: _ClassVar[int]
    code: Result.Code
    message: str
    revision: int
    digest: str
    previous_digest: str
    deleted_tags: _containers.RepeatedScalarFieldContainer[str]
    size: int
    media_type: str
    oci_code: str
    def __init__(self, code: _Optional[_Union[Result.Code, str]] = ..., message: _Optional[str] = ..., revision: _Optional[int] = ..., digest: _Optional[str] = ..., previous_digest: _Optional[str] = ..., deleted_tags: _Optional[_Iterable[str]] = ..., size: _Optional[int] = ..., media_type: _Optional[str] = ..., oci_code: _Optional[str] = ...) -> None: ...
