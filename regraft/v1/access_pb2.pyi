from regraft.v1 import registry_pb2 as _registry_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccessLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCESS_LEVEL_UNSPECIFIED: _ClassVar[AccessLevel]
    READ_ONLY: _ClassVar[AccessLevel]
    READ_WRITE: _ClassVar[AccessLevel]
    ADMIN: _ClassVar[AccessLevel]

class Visibility(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIVATE: _ClassVar[Visibility]
    PUBLIC: _ClassVar[Visibility]
ACCESS_LEVEL_UNSPECIFIED: AccessLevel
READ_ONLY: AccessLevel
READ_WRITE: AccessLevel
ADMIN: AccessLevel
PRIVATE: Visibility
PUBLIC: Visibility

class User(_message.Message):
    __slots__ = ("name", "active", "admin", "has_password")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    HAS_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    name: str
    active: bool
    admin: bool
    has_password: bool
    def __init__(self, name: _Optional[str] = ..., active: _Optional[bool] = ..., admin: _Optional[bool] = ..., has_password: _Optional[bool] = ...) -> None: ...

class Organization(_message.Message):
    __slots__ = ("name", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class Team(_message.Message):
    __slots__ = ("organization", "name", "description")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    organization: str
    name: str
    description: str
    def __init__(self, organization: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class TeamRef(_message.Message):
    __slots__ = ("organization", "name")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    organization: str
    name: str
    def __init__(self, organization: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Subject(_message.Message):
    __slots__ = ("user", "team")
    USER_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    user: str
    team: TeamRef
    def __init__(self, user: _Optional[str] = ..., team: _Optional[_Union[TeamRef, _Mapping]] = ...) -> None: ...

class Scope(_message.Message):
    __slots__ = ("repository", "organization")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    repository: str
    organization: str
    def __init__(self, repository: _Optional[str] = ..., organization: _Optional[str] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ("scope", "subject", "level")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    scope: Scope
    subject: Subject
    level: AccessLevel
    def __init__(self, scope: _Optional[_Union[Scope, _Mapping]] = ..., subject: _Optional[_Union[Subject, _Mapping]] = ..., level: _Optional[_Union[AccessLevel, str]] = ...) -> None: ...

class RepositorySettings(_message.Message):
    __slots__ = ("visibility", "immutable_tags", "create_on_push")
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    IMMUTABLE_TAGS_FIELD_NUMBER: _ClassVar[int]
    CREATE_ON_PUSH_FIELD_NUMBER: _ClassVar[int]
    visibility: Visibility
    immutable_tags: bool
    create_on_push: bool
    def __init__(self, visibility: _Optional[_Union[Visibility, str]] = ..., immutable_tags: _Optional[bool] = ..., create_on_push: _Optional[bool] = ...) -> None: ...

class AccessWriteResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("name", "admin", "password", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    admin: bool
    password: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., admin: _Optional[bool] = ..., password: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateUserRequest(_message.Message):
    __slots__ = ("name", "active", "admin", "password", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    active: bool
    admin: bool
    password: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., active: _Optional[bool] = ..., admin: _Optional[bool] = ..., password: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteUserRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("name", "read")
    NAME_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    name: str
    read: _registry_pb2.ReadOptions
    def __init__(self, name: _Optional[str] = ..., read: _Optional[_Union[_registry_pb2.ReadOptions, _Mapping]] = ...) -> None: ...

class GetUserResponse(_message.Message):
    __slots__ = ("user", "revision")
    USER_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    user: User
    revision: int
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ("n", "last", "read")
    N_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    n: int
    last: str
    read: _registry_pb2.ReadOptions
    def __init__(self, n: _Optional[int] = ..., last: _Optional[str] = ..., read: _Optional[_Union[_registry_pb2.ReadOptions, _Mapping]] = ...) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("users", "revision", "more")
    USERS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[User]
    revision: int
    more: bool
    def __init__(self, users: _Optional[_Iterable[_Union[User, _Mapping]]] = ..., revision: _Optional[int] = ..., more: _Optional[bool] = ...) -> None: ...

class VerifyPasswordRequest(_message.Message):
    __slots__ = ("name", "password", "read")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    name: str
    password: str
    read: _registry_pb2.ReadOptions
    def __init__(self, name: _Optional[str] = ..., password: _Optional[str] = ..., read: _Optional[_Union[_registry_pb2.ReadOptions, _Mapping]] = ...) -> None: ...

class VerifyPasswordResponse(_message.Message):
    __slots__ = ("ok", "revision")
    OK_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    revision: int
    def __init__(self, ok: _Optional[bool] = ..., revision: _Optional[int] = ...) -> None: ...

class OrganizationRequest(_message.Message):
    __slots__ = ("name", "description", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteOrganizationRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetOrganizationRequest(_message.Message):
    __slots__ = ("name", "read")
    NAME_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    name: str
    read: _registry_pb2.ReadOptions
    def __init__(self, name: _Optional[str] = ..., read: _Optional[_Union[_registry_pb2.ReadOptions, _Mapping]] = ...) -> None: ...

class GetOrganizationResponse(_message.Message):
    __slots__ = ("organization", "revision")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    organization: Organization
    revision: int
    def __init__(self, organization: _Optional[_Union[Organization, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class ListOrganizationsRequest(_message.Message):
    __slots__ = ("n", "last", "read")
    N_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    n: int
    last: str
    read: _registry_pb2.ReadOptions
    def __init__(self, n: _Optional[int] = ..., last: _Optional[str] = ..., read: _Optional[_Union[_registry_pb2.ReadOptions, _Mapping]] = ...) -> None: ...

class ListOrganizationsResponse(_message.Message):
    __slots__ = ("organizations", "revision", "more")
    ORGANIZATIONS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    organizations: _containers.RepeatedCompositeFieldContainer[Organization]
    revision: int
    more: bool
    def __init__(self, organizations: _Optional[_Iterable[_Union[Organization, _Mapping]]] = ..., revision: _Optional[int] = ..., more: _Optional[bool] = ...) -> None: ...

class TeamRequest(_message.Message):
    __slots__ = ("organization", "name", "description", "request_id")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    organization: str
    name: str
    description: str
    request_id: str
    def __init__(self, organization: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteTeamRequest(_message.Message):
    __slots__ = ("organization", "name", "request_id")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    organization: str
    name: str
    request_id: str
    def __init__(self, organization: _Optional[str] = ..., name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetTeamRequest(_message.Message):
    __slots__ = ("organization", "name", "read")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    organization: str
    name: str
    read: _registry_pb2.ReadOptions
    def __init__(self, organization: _Optional[str] = ..., name: _Optional[str] = ..., read: _Optional[_Union[_registry_pb2.ReadOptions, _Mapping]] = ...) -> None: ...

class GetTeamResponse(_message.Message):
    __slots__ = ("team", "revision")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    team: Team
    revision: int
    def __init__(self, team: _Optional[_Union[Team, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class ListTeamsRequest(_message.Message):
    __slots__ = ("organization", "n", "last", "read")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    organization: str
    n: int
    last: str
    read: _registry_pb2.ReadOptions
    def __init__(self, organization: _Optional[str] = ..., n: _Optional[int] = ..., last: _Optional[str] = ..., read: _Optional[_Union[_registry_pb2.ReadOptions, _Mapping]] = ...) -> None: ...

class ListTeamsResponse(_message.Message):
    __slots__ = ("teams", "revision", "more")
    TEAMS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    teams: _containers.RepeatedCompositeFieldContainer[Team]
    revision: int
    more: bool
    def __init__(self, teams: _Optional[_Iterable[_Union[Team, _Mapping]]] = ..., revision: _Optional[int] = ..., more: _Optional[bool] = ...) -> None: ...

class TeamMemberRequest(_message.Message):
    __slots__ = ("organization", "team", "user", "request_id")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    organization: str
    team: str
    user: str
    request_id: str
    def __init__(self, organization: _Optional[str] = ..., team: _Optional[str] = ..., user: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListTeamMembersRequest(_message.Message):
    __slots__ = ("organization", "team", "n", "last", "read")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    organization: str
    team: str
    n: int
    last: str
    read: _registry_pb2.ReadOptions
    def __init__(self, organization: _Optional[str] = ..., team: _Optional[str] = ..., n: _Optional[int] = ..., last: _Optional[str] = ..., read: _Optional[_Union[_registry_pb2.ReadOptions, _Mapping]] = ...) -> None: ...

class OrganizationOwnerRequest(_message.Message):
    __slots__ = ("organization", "user", "request_id")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    organization: str
    user: str
    request_id: str
    def __init__(self, organization: _Optional[str] = ..., user: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListOrganizationOwnersRequest(_message.Message):
    __slots__ = ("organization", "n", "last", "read")
    ORGANIZATION_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    organization: str
    n: int
    last: str
    read: _registry_pb2.ReadOptions
    def __init__(self, organization: _Optional[str] = ..., n: _Optional[int] = ..., last: _Optional[str] = ..., read: _Optional[_Union[_registry_pb2.ReadOptions, _Mapping]] = ...) -> None: ...

class ListUserNamesResponse(_message.Message):
    __slots__ = ("users", "revision", "more")
    USERS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedScalarFieldContainer[str]
    revision: int
    more: bool
    def __init__(self, users: _Optional[_Iterable[str]] = ..., revision: _Optional[int] = ..., more: _Optional[bool] = ...) -> None: ...

class SetGrantRequest(_message.Message):
    __slots__ = ("grant", "request_id")
    GRANT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    grant: Grant
    request_id: str
    def __init__(self, grant: _Optional[_Union[Grant, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteGrantRequest(_message.Message):
    __slots__ = ("scope", "subject", "request_id")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    scope: Scope
    subject: Subject
    request_id: str
    def __init__(self, scope: _Optional[_Union[Scope, _Mapping]] = ..., subject: _Optional[_Union[Subject, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ListGrantsRequest(_message.Message):
    __slots__ = ("scope", "subject", "n", "last", "read")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    scope: Scope
    subject: Subject
    n: int
    last: Grant
    read: _registry_pb2.ReadOptions
    def __init__(self, scope: _Optional[_Union[Scope, _Mapping]] = ..., subject: _Optional[_Union[Subject, _Mapping]] = ..., n: _Optional[int] = ..., last: _Optional[_Union[Grant, _Mapping]] = ..., read: _Optional[_Union[_registry_pb2.ReadOptions, _Mapping]] = ...) -> None: ...

class ListGrantsResponse(_message.Message):
    __slots__ = ("grants", "revision", "more")
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    revision: int
    more: bool
    def __init__(self, grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ..., revision: _Optional[int] = ..., more: _Optional[bool] = ...) -> None: ...

class GetRepositorySettingsRequest(_message.Message):
    __slots__ = ("repository", "read")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    repository: str
    read: _registry_pb2.ReadOptions
    def __init__(self, repository: _Optional[str] = ..., read: _Optional[_Union[_registry_pb2.ReadOptions, _Mapping]] = ...) -> None: ...

class GetRepositorySettingsResponse(_message.Message):
    __slots__ = ("settings", "revision")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    settings: RepositorySettings
    revision: int
    def __init__(self, settings: _Optional[_Union[RepositorySettings, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class SetRepositorySettingsRequest(_message.Message):
    __slots__ = ("repository", "settings", "request_id")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    repository: str
    settings: RepositorySettings
    request_id: str
    def __init__(self, repository: _Optional[str] = ..., settings: _Optional[_Union[RepositorySettings, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CheckAccessRequest(_message.Message):
    __slots__ = ("subject", "repository", "actions", "read")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    subject: str
    repository: str
    actions: _containers.RepeatedScalarFieldContainer[str]
    read: _registry_pb2.ReadOptions
    def __init__(self, subject: _Optional[str] = ..., repository: _Optional[str] = ..., actions: _Optional[_Iterable[str]] = ..., read: _Optional[_Union[_registry_pb2.ReadOptions, _Mapping]] = ...) -> None: ...

class AccessDecision(_message.Message):
    __slots__ = ("action", "allowed", "reason")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    action: str
    allowed: bool
    reason: str
    def __init__(self, action: _Optional[str] = ..., allowed: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class CheckAccessResponse(_message.Message):
    __slots__ = ("allowed", "decisions", "level", "revision")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    allowed: _containers.RepeatedScalarFieldContainer[str]
    decisions: _containers.RepeatedCompositeFieldContainer[AccessDecision]
    level: AccessLevel
    revision: int
    def __init__(self, allowed: _Optional[_Iterable[str]] = ..., decisions: _Optional[_Iterable[_Union[AccessDecision, _Mapping]]] = ..., level: _Optional[_Union[AccessLevel, str]] = ..., revision: _Optional[int] = ...) -> None: ...
