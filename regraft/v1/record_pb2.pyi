from regraft.v1 import access_pb2 as _access_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ManifestRecord(_message.Message):
    __slots__ = ("media_type", "content", "subject", "artifact_type", "annotations", "blobs", "manifests", "revision")
    class AnnotationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    media_type: str
    content: bytes
    subject: str
    artifact_type: str
    annotations: _containers.ScalarMap[str, str]
    blobs: _containers.RepeatedScalarFieldContainer[str]
    manifests: _containers.RepeatedScalarFieldContainer[str]
    revision: int
    def __init__(self, media_type: _Optional[str] = ..., content: _Optional[bytes] = ..., subject: _Optional[str] = ..., artifact_type: _Optional[str] = ..., annotations: _Optional[_Mapping[str, str]] = ..., blobs: _Optional[_Iterable[str]] = ..., manifests: _Optional[_Iterable[str]] = ..., revision: _Optional[int] = ...) -> None: ...

class ReferrerRecord(_message.Message):
    __slots__ = ("media_type", "size", "artifact_type", "annotations")
    class AnnotationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    media_type: str
    size: int
    artifact_type: str
    annotations: _containers.ScalarMap[str, str]
    def __init__(self, media_type: _Optional[str] = ..., size: _Optional[int] = ..., artifact_type: _Optional[str] = ..., annotations: _Optional[_Mapping[str, str]] = ...) -> None: ...

class BlobRecord(_message.Message):
    __slots__ = ("size", "media_type", "revision")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    size: int
    media_type: str
    revision: int
    def __init__(self, size: _Optional[int] = ..., media_type: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class RequestRecord(_message.Message):
    __slots__ = ("index", "result", "fingerprint")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    index: int
    result: bytes
    fingerprint: bytes
    def __init__(self, index: _Optional[int] = ..., result: _Optional[bytes] = ..., fingerprint: _Optional[bytes] = ...) -> None: ...

class MemberRecord(_message.Message):
    __slots__ = ("id", "raft_address", "grpc_address", "role", "added_at")
    class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ROLE_UNSPECIFIED: _ClassVar[MemberRecord.Role]
        LEARNER: _ClassVar[MemberRecord.Role]
        PROMOTING: _ClassVar[MemberRecord.Role]
        VOTER: _ClassVar[MemberRecord.Role]
        REMOVING: _ClassVar[MemberRecord.Role]
    ROLE_UNSPECIFIED: MemberRecord.Role
    LEARNER: MemberRecord.Role
    PROMOTING: MemberRecord.Role
    VOTER: MemberRecord.Role
    REMOVING: MemberRecord.Role
    ID_FIELD_NUMBER: _ClassVar[int]
    RAFT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ADDED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    raft_address: str
    grpc_address: str
    role: MemberRecord.Role
    added_at: int
    def __init__(self, id: _Optional[str] = ..., raft_address: _Optional[str] = ..., grpc_address: _Optional[str] = ..., role: _Optional[_Union[MemberRecord.Role, str]] = ..., added_at: _Optional[int] = ...) -> None: ...

class UserRecord(_message.Message):
    __slots__ = ("active", "admin", "password_hash", "revision")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_HASH_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    active: bool
    admin: bool
    password_hash: str
    revision: int
    def __init__(self, active: _Optional[bool] = ..., admin: _Optional[bool] = ..., password_hash: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class OrganizationRecord(_message.Message):
    __slots__ = ("description", "revision")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    description: str
    revision: int
    def __init__(self, description: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class TeamRecord(_message.Message):
    __slots__ = ("description", "revision")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    description: str
    revision: int
    def __init__(self, description: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class GrantRecord(_message.Message):
    __slots__ = ("level", "revision")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    level: _access_pb2.AccessLevel
    revision: int
    def __init__(self, level: _Optional[_Union[_access_pb2.AccessLevel, str]] = ..., revision: _Optional[int] = ...) -> None: ...

class RepositorySettingsRecord(_message.Message):
    __slots__ = ("settings", "revision")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    settings: _access_pb2.RepositorySettings
    revision: int
    def __init__(self, settings: _Optional[_Union[_access_pb2.RepositorySettings, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...
