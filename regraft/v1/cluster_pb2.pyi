from regraft.v1 import record_pb2 as _record_pb2
from regraft.v1 import registry_pb2 as _registry_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    FOLLOWER: _ClassVar[Role]
    CANDIDATE: _ClassVar[Role]
    LEADER: _ClassVar[Role]
    LEARNER: _ClassVar[Role]
ROLE_UNSPECIFIED: Role
FOLLOWER: Role
CANDIDATE: Role
LEADER: Role
LEARNER: Role

class Member(_message.Message):
    __slots__ = ("id", "raft_address", "grpc_address", "reachable", "match_index", "lag", "is_self", "is_leader", "membership")
    ID_FIELD_NUMBER: _ClassVar[int]
    RAFT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    MATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    IS_SELF_FIELD_NUMBER: _ClassVar[int]
    IS_LEADER_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    id: str
    raft_address: str
    grpc_address: str
    reachable: bool
    match_index: int
    lag: int
    is_self: bool
    is_leader: bool
    membership: _record_pb2.MemberRecord.Role
    def __init__(self, id: _Optional[str] = ..., raft_address: _Optional[str] = ..., grpc_address: _Optional[str] = ..., reachable: _Optional[bool] = ..., match_index: _Optional[int] = ..., lag: _Optional[int] = ..., is_self: _Optional[bool] = ..., is_leader: _Optional[bool] = ..., membership: _Optional[_Union[_record_pb2.MemberRecord.Role, str]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("id", "role", "term", "leader_id", "leader_address", "leader_grpc_address", "commit_index", "applied_index", "last_log_index", "members", "state_hash", "revision", "has_quorum", "version", "db_used_bytes", "db_map_bytes", "disk_free_bytes", "disk_total_bytes", "event_retention", "machine_version", "supported_machine_version")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LEADER_GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    STATE_HASH_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    HAS_QUORUM_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DB_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DB_MAP_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    EVENT_RETENTION_FIELD_NUMBER: _ClassVar[int]
    MACHINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_MACHINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    role: Role
    term: int
    leader_id: str
    leader_address: str
    leader_grpc_address: str
    commit_index: int
    applied_index: int
    last_log_index: int
    members: _containers.RepeatedCompositeFieldContainer[Member]
    state_hash: str
    revision: int
    has_quorum: bool
    version: str
    db_used_bytes: int
    db_map_bytes: int
    disk_free_bytes: int
    disk_total_bytes: int
    event_retention: EventRetention
    machine_version: int
    supported_machine_version: int
    def __init__(self, id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., term: _Optional[int] = ..., leader_id: _Optional[str] = ..., leader_address: _Optional[str] = ..., leader_grpc_address: _Optional[str] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., last_log_index: _Optional[int] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., state_hash: _Optional[str] = ..., revision: _Optional[int] = ..., has_quorum: _Optional[bool] = ..., version: _Optional[str] = ..., db_used_bytes: _Optional[int] = ..., db_map_bytes: _Optional[int] = ..., disk_free_bytes: _Optional[int] = ..., disk_total_bytes: _Optional[int] = ..., event_retention: _Optional[_Union[EventRetention, _Mapping]] = ..., machine_version: _Optional[int] = ..., supported_machine_version: _Optional[int] = ...) -> None: ...

class EventRetention(_message.Message):
    __slots__ = ("revisions", "max_age_seconds")
    REVISIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    revisions: int
    max_age_seconds: int
    def __init__(self, revisions: _Optional[int] = ..., max_age_seconds: _Optional[int] = ...) -> None: ...

class SetEventRetentionResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class BackupRequest(_message.Message):
    __slots__ = ("read",)
    READ_FIELD_NUMBER: _ClassVar[int]
    read: _registry_pb2.ReadOptions
    def __init__(self, read: _Optional[_Union[_registry_pb2.ReadOptions, _Mapping]] = ...) -> None: ...

class BackupChunk(_message.Message):
    __slots__ = ("header", "data", "trailer")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    header: BackupHeader
    data: bytes
    trailer: BackupTrailer
    def __init__(self, header: _Optional[_Union[BackupHeader, _Mapping]] = ..., data: _Optional[bytes] = ..., trailer: _Optional[_Union[BackupTrailer, _Mapping]] = ...) -> None: ...

class BackupHeader(_message.Message):
    __slots__ = ("revision", "state_hash", "size", "cluster_id", "replica_id", "format_version")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    STATE_HASH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    state_hash: str
    size: int
    cluster_id: str
    replica_id: str
    format_version: int
    def __init__(self, revision: _Optional[int] = ..., state_hash: _Optional[str] = ..., size: _Optional[int] = ..., cluster_id: _Optional[str] = ..., replica_id: _Optional[str] = ..., format_version: _Optional[int] = ...) -> None: ...

class BackupTrailer(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class ListMembersRequest(_message.Message):
    __slots__ = ("read",)
    READ_FIELD_NUMBER: _ClassVar[int]
    read: _registry_pb2.ReadOptions
    def __init__(self, read: _Optional[_Union[_registry_pb2.ReadOptions, _Mapping]] = ...) -> None: ...

class ListMembersResponse(_message.Message):
    __slots__ = ("members", "revision")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    revision: int
    def __init__(self, members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class AddMemberRequest(_message.Message):
    __slots__ = ("id", "raft_address", "grpc_address", "force")
    ID_FIELD_NUMBER: _ClassVar[int]
    RAFT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    raft_address: str
    grpc_address: str
    force: bool
    def __init__(self, id: _Optional[str] = ..., raft_address: _Optional[str] = ..., grpc_address: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class PromoteMemberRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RemoveMemberRequest(_message.Message):
    __slots__ = ("id", "force")
    ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    force: bool
    def __init__(self, id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class MemberChangeResponse(_message.Message):
    __slots__ = ("members", "revision", "warnings")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    revision: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., revision: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class TransferLeadershipRequest(_message.Message):
    __slots__ = ("to_id",)
    TO_ID_FIELD_NUMBER: _ClassVar[int]
    to_id: str
    def __init__(self, to_id: _Optional[str] = ...) -> None: ...

class TransferLeadershipResponse(_message.Message):
    __slots__ = ("leader_id", "term")
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    leader_id: str
    term: int
    def __init__(self, leader_id: _Optional[str] = ..., term: _Optional[int] = ...) -> None: ...
