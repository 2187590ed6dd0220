from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Consistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINEARIZABLE: _ClassVar[Consistency]
    STALE: _ClassVar[Consistency]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    MANIFEST_PUT: _ClassVar[EventKind]
    MANIFEST_DELETE: _ClassVar[EventKind]
    TAG_SET: _ClassVar[EventKind]
    TAG_DELETE: _ClassVar[EventKind]
    BLOB_LINK: _ClassVar[EventKind]
    BLOB_UNLINK: _ClassVar[EventKind]
    ACCESS_CHANGE: _ClassVar[EventKind]
    CLUSTER_CHANGE: _ClassVar[EventKind]
    PROGRESS: _ClassVar[EventKind]
LINEARIZABLE: Consistency
STALE: Consistency
EVENT_KIND_UNSPECIFIED: EventKind
MANIFEST_PUT: EventKind
MANIFEST_DELETE: EventKind
TAG_SET: EventKind
TAG_DELETE: EventKind
BLOB_LINK: EventKind
BLOB_UNLINK: EventKind
ACCESS_CHANGE: EventKind
CLUSTER_CHANGE: EventKind
PROGRESS: EventKind

class ReadOptions(_message.Message):
    __slots__ = ("consistency", "min_revision")
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    MIN_REVISION_FIELD_NUMBER: _ClassVar[int]
    consistency: Consistency
    min_revision: int
    def __init__(self, consistency: _Optional[_Union[Consistency, str]] = ..., min_revision: _Optional[int] = ...) -> None: ...

class Descriptor(_message.Message):
    __slots__ = ("media_type", "digest", "size", "artifact_type", "annotations")
    class AnnotationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    media_type: str
    digest: str
    size: int
    artifact_type: str
    annotations: _containers.ScalarMap[str, str]
    def __init__(self, media_type: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., artifact_type: _Optional[str] = ..., annotations: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PutManifestRequest(_message.Message):
    __slots__ = ("repository", "reference", "content", "media_type", "request_id")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    repository: str
    reference: str
    content: bytes
    media_type: str
    request_id: str
    def __init__(self, repository: _Optional[str] = ..., reference: _Optional[str] = ..., content: _Optional[bytes] = ..., media_type: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class PutManifestResponse(_message.Message):
    __slots__ = ("digest", "revision")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    digest: str
    revision: int
    def __init__(self, digest: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class GetManifestRequest(_message.Message):
    __slots__ = ("repository", "reference", "read")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    repository: str
    reference: str
    read: ReadOptions
    def __init__(self, repository: _Optional[str] = ..., reference: _Optional[str] = ..., read: _Optional[_Union[ReadOptions, _Mapping]] = ...) -> None: ...

class GetManifestResponse(_message.Message):
    __slots__ = ("digest", "media_type", "content", "revision")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    digest: str
    media_type: str
    content: bytes
    revision: int
    def __init__(self, digest: _Optional[str] = ..., media_type: _Optional[str] = ..., content: _Optional[bytes] = ..., revision: _Optional[int] = ...) -> None: ...

class DeleteManifestRequest(_message.Message):
    __slots__ = ("repository", "digest", "request_id")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    request_id: str
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteManifestResponse(_message.Message):
    __slots__ = ("revision", "deleted_tags")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DELETED_TAGS_FIELD_NUMBER: _ClassVar[int]
    revision: int
    deleted_tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, revision: _Optional[int] = ..., deleted_tags: _Optional[_Iterable[str]] = ...) -> None: ...

class PutTagRequest(_message.Message):
    __slots__ = ("repository", "tag", "digest", "expected_digest", "must_not_exist", "request_id")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MUST_NOT_EXIST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    repository: str
    tag: str
    digest: str
    expected_digest: str
    must_not_exist: bool
    request_id: str
    def __init__(self, repository: _Optional[str] = ..., tag: _Optional[str] = ..., digest: _Optional[str] = ..., expected_digest: _Optional[str] = ..., must_not_exist: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class PutTagResponse(_message.Message):
    __slots__ = ("revision", "previous_digest")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    revision: int
    previous_digest: str
    def __init__(self, revision: _Optional[int] = ..., previous_digest: _Optional[str] = ...) -> None: ...

class DeleteTagRequest(_message.Message):
    __slots__ = ("repository", "tag", "expected_digest", "request_id")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_DIGEST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    repository: str
    tag: str
    expected_digest: str
    request_id: str
    def __init__(self, repository: _Optional[str] = ..., tag: _Optional[str] = ..., expected_digest: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteTagResponse(_message.Message):
    __slots__ = ("revision", "digest")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    revision: int
    digest: str
    def __init__(self, revision: _Optional[int] = ..., digest: _Optional[str] = ...) -> None: ...

class ListTagsRequest(_message.Message):
    __slots__ = ("repository", "n", "last", "read", "digest")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    repository: str
    n: int
    last: str
    read: ReadOptions
    digest: str
    def __init__(self, repository: _Optional[str] = ..., n: _Optional[int] = ..., last: _Optional[str] = ..., read: _Optional[_Union[ReadOptions, _Mapping]] = ..., digest: _Optional[str] = ...) -> None: ...

class ListTagsResponse(_message.Message):
    __slots__ = ("tags", "revision", "more")
    TAGS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedScalarFieldContainer[str]
    revision: int
    more: bool
    def __init__(self, tags: _Optional[_Iterable[str]] = ..., revision: _Optional[int] = ..., more: _Optional[bool] = ...) -> None: ...

class ListRepositoriesRequest(_message.Message):
    __slots__ = ("n", "last", "read")
    N_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    n: int
    last: str
    read: ReadOptions
    def __init__(self, n: _Optional[int] = ..., last: _Optional[str] = ..., read: _Optional[_Union[ReadOptions, _Mapping]] = ...) -> None: ...

class ListRepositoriesResponse(_message.Message):
    __slots__ = ("repositories", "revision", "more")
    REPOSITORIES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    repositories: _containers.RepeatedScalarFieldContainer[str]
    revision: int
    more: bool
    def __init__(self, repositories: _Optional[_Iterable[str]] = ..., revision: _Optional[int] = ..., more: _Optional[bool] = ...) -> None: ...

class GetReferrersRequest(_message.Message):
    __slots__ = ("repository", "digest", "artifact_type", "read", "n", "last")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_TYPE_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    artifact_type: str
    read: ReadOptions
    n: int
    last: str
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ..., artifact_type: _Optional[str] = ..., read: _Optional[_Union[ReadOptions, _Mapping]] = ..., n: _Optional[int] = ..., last: _Optional[str] = ...) -> None: ...

class GetReferrersResponse(_message.Message):
    __slots__ = ("manifests", "revision", "more", "last")
    MANIFESTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    manifests: _containers.RepeatedCompositeFieldContainer[Descriptor]
    revision: int
    more: bool
    last: str
    def __init__(self, manifests: _Optional[_Iterable[_Union[Descriptor, _Mapping]]] = ..., revision: _Optional[int] = ..., more: _Optional[bool] = ..., last: _Optional[str] = ...) -> None: ...

class LinkBlobRequest(_message.Message):
    __slots__ = ("repository", "digest", "size", "media_type", "request_id")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    size: int
    media_type: str
    request_id: str
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., media_type: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class LinkBlobResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class StatBlobRequest(_message.Message):
    __slots__ = ("repository", "digest", "read")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    read: ReadOptions
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ..., read: _Optional[_Union[ReadOptions, _Mapping]] = ...) -> None: ...

class StatBlobResponse(_message.Message):
    __slots__ = ("digest", "size", "media_type", "revision")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    media_type: str
    revision: int
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ..., media_type: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class UnlinkBlobRequest(_message.Message):
    __slots__ = ("repository", "digest", "request_id")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    repository: str
    digest: str
    request_id: str
    def __init__(self, repository: _Optional[str] = ..., digest: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class UnlinkBlobResponse(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class MountBlobRequest(_message.Message):
    __slots__ = ("from_repository", "repository", "digest", "request_id")
    FROM_REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    from_repository: str
    repository: str
    digest: str
    request_id: str
    def __init__(self, from_repository: _Optional[str] = ..., repository: _Optional[str] = ..., digest: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class MountBlobResponse(_message.Message):
    __slots__ = ("size", "media_type", "revision")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    size: int
    media_type: str
    revision: int
    def __init__(self, size: _Optional[int] = ..., media_type: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("from_revision", "repository_prefix", "to_revision", "progress_notify")
    FROM_REVISION_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    TO_REVISION_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_NOTIFY_FIELD_NUMBER: _ClassVar[int]
    from_revision: int
    repository_prefix: str
    to_revision: int
    progress_notify: bool
    def __init__(self, from_revision: _Optional[int] = ..., repository_prefix: _Optional[str] = ..., to_revision: _Optional[int] = ..., progress_notify: _Optional[bool] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("revision", "kind", "repository", "digest", "tag", "actor", "time_ms", "operation", "target", "sequence")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    revision: int
    kind: EventKind
    repository: str
    digest: str
    tag: str
    actor: str
    time_ms: int
    operation: str
    target: str
    sequence: int
    def __init__(self, revision: _Optional[int] = ..., kind: _Optional[_Union[EventKind, str]] = ..., repository: _Optional[str] = ..., digest: _Optional[str] = ..., tag: _Optional[str] = ..., actor: _Optional[str] = ..., time_ms: _Optional[int] = ..., operation: _Optional[str] = ..., target: _Optional[str] = ..., sequence: _Optional[int] = ...) -> None: ...
