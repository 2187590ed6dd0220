"""The Python client for registry front-ends.

Give it every replica's gRPC endpoint. It talks to one at a time, follows the leader
hint that an UNAVAILABLE answer carries, moves on to the next endpoint when one is
down, and retries UNAVAILABLE and DEADLINE_EXCEEDED with exponential backoff and
jitter. Every write gets a request id (one is generated when the caller gives none)
that stays the same across retries, so a write that did apply on an attempt whose
answer was lost is not applied twice.

    client = Client(["127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7403"])
    client.link_blob("library/app", digest, size=1234)
    client.put_manifest("library/app", "v1", manifest_bytes)
    client.get_manifest("library/app", "v1", consistency=STALE)
    client.call("CheckAccess", access_pb2.CheckAccessRequest(...))  # any Registry or Access RPC

With TLS (README, Security), give it Credentials: a CA that verifies the replicas,
a client certificate for mutual TLS, a bearer token, or several of these.
`dial` builds every channel regraft opens: the CLI's, the client's, a replica's to
the others.
"""

import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from cluster.config import ConfigError, is_loopback, split_address
from regraft.v1 import (
    access_pb2,
    access_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

LINEARIZABLE = registry_pb2.LINEARIZABLE
STALE = registry_pb2.STALE

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
# A retry starts only with at least this long left. A replica refuses a write with
# under 50 ms left as not written (cluster/rpc.py, TooLate): a last attempt refused so
# would hide that an earlier one may have applied it.
MIN_RETRY_SECONDS = 0.1
_OPTIONS = [
    ("grpc.max_receive_message_length", 16 << 20),
    ("grpc.max_send_message_length", 16 << 20),
]


# Where `regraft` looks for a bearer token when --token-file is not given.
TOKEN_ENV = "REGRAFT_TOKEN"


class CredentialError(ValueError):
    """A credential file cannot be read or holds nothing usable."""


@dataclass(frozen=True)
class Credentials:
    """How to reach a replica that speaks TLS or wants a caller identity.

    No CA file and no certificate: plaintext, as `regraft up`'s cluster speaks.
    """

    ca_file: str = ""  # verifies the replicas' certificates (with a client certificate
    # but no CA file: the system's roots)
    cert_file: str = ""  # client certificate and key, for mutual TLS
    key_file: str = ""
    token: str = ""  # sent as `authorization: Bearer <token>`
    tls: bool = False  # TLS even without either file (verified with the system's roots)

    @property
    def secure(self) -> bool:
        return self.tls or bool(self.ca_file or self.cert_file)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """The TLS credentials, read from the files now (new channels see new files)."""
        if bool(self.cert_file) != bool(self.key_file):
            raise CredentialError(
                f"a client certificate needs both files: cert {self.cert_file!r}, "
                f"key {self.key_file!r}"
            )
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA file") if self.ca_file else None,
            private_key=_read(self.key_file, "key file") if self.key_file else None,
            certificate_chain=_read(self.cert_file, "certificate file") if self.cert_file else None,
        )


def read_token(path: str) -> str:
    """A bearer token from a file (surrounding whitespace ignored)."""
    token = _read(path, "token file").decode(errors="replace").strip()
    if not token or any(ch.isspace() or not ch.isprintable() for ch in token):
        raise CredentialError(f"token file {path!r} does not hold one token (printable, no spaces)")
    return token


def token_from_env() -> str:
    return os.environ.get(TOKEN_ENV, "").strip()


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CredentialError(f"{what} {path!r}: {e.strerror}") from None


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), self._header],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: list
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


def _is_loopback(endpoint: str) -> bool:
    try:
        return is_loopback(split_address(endpoint, "endpoint")[0])
    except ConfigError:
        return False


def dial(endpoint: str, credentials: Credentials | None = None) -> grpc.Channel:
    """A channel to one replica: plaintext, TLS or mutual TLS, with a token or not."""
    credentials = credentials or Credentials()
    if credentials.token and not credentials.secure and not _is_loopback(endpoint):
        raise CredentialError(
            f"refusing to send a bearer token in clear text to {endpoint}: "
            "use TLS (--ca-file, or --tls for a publicly trusted certificate)"
        )
    if credentials.secure:
        channel = grpc.secure_channel(endpoint, credentials.channel_credentials(), options=_OPTIONS)
    else:
        channel = grpc.insecure_channel(endpoint, options=_OPTIONS)
    if credentials.token:
        return grpc.intercept_channel(channel, _BearerToken(credentials.token))
    return channel


class Client:
    def __init__(
        self,
        endpoints: list[str],
        timeout: float = 10.0,
        attempt_timeout: float = 5.0,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        credentials: Credentials | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        self.endpoints = list(endpoints)
        self.credentials = credentials
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._channels: dict[str, grpc.Channel] = {}
        self._current = 0
        self._closed = False
        # close() may come from another thread than the calls (a writer being stopped).
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the channels: a call in flight fails (CANCELLED), and so does any
        call after (ValueError), rather than dialing again."""
        with self._lock:
            self._closed = True
            channels, self._channels = self._channels, {}
        for channel in channels.values():
            channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _channel(self, endpoint: str) -> grpc.Channel:
        with self._lock:
            if self._closed:
                raise ValueError("this client is closed")
            if endpoint not in self._channels:
                self._channels[endpoint] = dial(endpoint, self.credentials)
            return self._channels[endpoint]

    def registry(self, endpoint: str | None = None) -> registry_pb2_grpc.RegistryStub:
        return registry_pb2_grpc.RegistryStub(self._channel(endpoint or self.endpoint))

    def cluster(self, endpoint: str | None = None) -> cluster_pb2_grpc.ClusterStub:
        return cluster_pb2_grpc.ClusterStub(self._channel(endpoint or self.endpoint))

    def access(self, endpoint: str | None = None) -> access_pb2_grpc.AccessStub:
        return access_pb2_grpc.AccessStub(self._channel(endpoint or self.endpoint))

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._current]

    def call(self, method: str, request, timeout: float | None = None):
        """Call a Registry or Access method, retrying where that is safe, until `timeout`.

        A write without a request_id gets one: a retried write is then applied once.
        """
        if method not in _ACCESS_METHODS and method not in _REGISTRY_METHODS:
            raise ValueError(
                f"no Registry or Access method {method!r} (`regraft call list` lists them; "
                "Cluster methods: client.cluster())"
            )
        request = with_request_id(request)
        stub_of = self.access if method in _ACCESS_METHODS else self.registry
        deadline = time.monotonic() + (timeout or self.timeout)
        delay = self._backoff
        failed: grpc.RpcError | None = None  # the last attempt's error
        while True:
            remaining = deadline - time.monotonic()
            if failed is not None and remaining < MIN_RETRY_SECONDS:
                raise failed
            stub = stub_of()
            try:
                return getattr(stub, method)(
                    request, timeout=max(0.01, min(self.attempt_timeout, remaining))
                )
            except grpc.RpcError as error:
                if error.code() not in _RETRYABLE or time.monotonic() + delay >= deadline:
                    raise
                failed = error
                self._redirect(error)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self._max_backoff)

    def _redirect(self, error: grpc.RpcError) -> None:
        """Follow the leader hint when there is one, else try the next endpoint."""
        trailers = dict(error.trailing_metadata() or ())
        leader = trailers.get("leader")
        if leader in self.endpoints:
            self._current = self.endpoints.index(leader)
        else:
            self._current = (self._current + 1) % len(self.endpoints)

    @staticmethod
    def _read(consistency: int, min_revision: int) -> registry_pb2.ReadOptions:
        return registry_pb2.ReadOptions(consistency=consistency, min_revision=min_revision)

    # -- writes ---------------------------------------------------------------------

    def put_manifest(
        self,
        repository: str,
        reference: str,
        content: bytes,
        media_type: str = "",
        request_id: str = "",
    ) -> registry_pb2.PutManifestResponse:
        return self.call(
            "PutManifest",
            registry_pb2.PutManifestRequest(
                repository=repository,
                reference=reference,
                content=content,
                media_type=media_type,
                request_id=request_id or _new_id(),
            ),
        )

    def delete_manifest(self, repository: str, digest: str, request_id: str = ""):
        return self.call(
            "DeleteManifest",
            registry_pb2.DeleteManifestRequest(
                repository=repository, digest=digest, request_id=request_id or _new_id()
            ),
        )

    def put_tag(
        self,
        repository: str,
        tag: str,
        digest: str,
        expected_digest: str = "",
        must_not_exist: bool = False,
        request_id: str = "",
    ) -> registry_pb2.PutTagResponse:
        return self.call(
            "PutTag",
            registry_pb2.PutTagRequest(
                repository=repository,
                tag=tag,
                digest=digest,
                expected_digest=expected_digest,
                must_not_exist=must_not_exist,
                request_id=request_id or _new_id(),
            ),
        )

    def delete_tag(self, repository: str, tag: str, expected_digest: str = "", request_id=""):
        return self.call(
            "DeleteTag",
            registry_pb2.DeleteTagRequest(
                repository=repository,
                tag=tag,
                expected_digest=expected_digest,
                request_id=request_id or _new_id(),
            ),
        )

    def link_blob(
        self, repository: str, digest: str, size: int, media_type: str = "", request_id=""
    ) -> registry_pb2.LinkBlobResponse:
        return self.call(
            "LinkBlob",
            registry_pb2.LinkBlobRequest(
                repository=repository,
                digest=digest,
                size=size,
                media_type=media_type,
                request_id=request_id or _new_id(),
            ),
        )

    def unlink_blob(self, repository: str, digest: str, request_id: str = ""):
        return self.call(
            "UnlinkBlob",
            registry_pb2.UnlinkBlobRequest(
                repository=repository, digest=digest, request_id=request_id or _new_id()
            ),
        )

    def mount_blob(self, from_repository: str, repository: str, digest: str, request_id=""):
        return self.call(
            "MountBlob",
            registry_pb2.MountBlobRequest(
                from_repository=from_repository,
                repository=repository,
                digest=digest,
                request_id=request_id or _new_id(),
            ),
        )

    # -- reads ----------------------------------------------------------------------

    def get_manifest(
        self, repository: str, reference: str, consistency=LINEARIZABLE, min_revision: int = 0
    ) -> registry_pb2.GetManifestResponse:
        return self.call(
            "GetManifest",
            registry_pb2.GetManifestRequest(
                repository=repository,
                reference=reference,
                read=self._read(consistency, min_revision),
            ),
        )

    def list_tags(
        self,
        repository: str,
        n: int = 0,
        last: str = "",
        consistency=LINEARIZABLE,
        min_revision: int = 0,
        digest: str = "",
    ) -> registry_pb2.ListTagsResponse:
        """One page of tags (with `digest`: only those pointing at that manifest)."""
        return self.call(
            "ListTags",
            registry_pb2.ListTagsRequest(
                repository=repository,
                n=n,
                last=last,
                read=self._read(consistency, min_revision),
                digest=digest,
            ),
        )

    def list_repositories(
        self, n: int = 0, last: str = "", consistency=LINEARIZABLE, min_revision: int = 0
    ) -> registry_pb2.ListRepositoriesResponse:
        return self.call(
            "ListRepositories",
            registry_pb2.ListRepositoriesRequest(
                n=n, last=last, read=self._read(consistency, min_revision)
            ),
        )

    def get_referrers(
        self,
        repository: str,
        digest: str,
        artifact_type: str = "",
        consistency=LINEARIZABLE,
        n: int = 0,
        last: str = "",
        min_revision: int = 0,
    ) -> registry_pb2.GetReferrersResponse:
        """One page (`more` says whether others may follow: ask again with last = the
        response's `last`; a page may hold fewer than n, even none). `referrers` walks
        every page."""
        return self.call(
            "GetReferrers",
            registry_pb2.GetReferrersRequest(
                repository=repository,
                digest=digest,
                artifact_type=artifact_type,
                read=self._read(consistency, min_revision),
                n=n,
                last=last,
            ),
        )

    def referrers(
        self,
        repository: str,
        digest: str,
        artifact_type: str = "",
        consistency=LINEARIZABLE,
        min_revision: int = 0,
    ) -> Iterator[registry_pb2.Descriptor]:
        """Every referrer of `digest`, page after page. A replica of an older release
        (a rolling upgrade) leaves the response's `last` empty: its pages then go on
        from their last descriptor, as they always did."""
        last = ""
        while True:
            page = self.get_referrers(
                repository, digest, artifact_type, consistency, last=last, min_revision=min_revision
            )
            yield from page.manifests
            following = page.last or (page.manifests[-1].digest if page.manifests else "")
            if not page.more or following <= last:
                return
            last = following

    def stat_blob(
        self, repository: str, digest: str, consistency=LINEARIZABLE, min_revision: int = 0
    ) -> registry_pb2.StatBlobResponse:
        return self.call(
            "StatBlob",
            registry_pb2.StatBlobRequest(
                repository=repository, digest=digest, read=self._read(consistency, min_revision)
            ),
        )

    def watch(
        self,
        from_revision: int = 0,
        repository_prefix: str = "",
        endpoint: str = "",
        to_revision: int = 0,
        progress_notify: bool = False,
    ):
        """A stream of events (until to_revision, if given; with PROGRESS events when
        quiet, if progress_notify); iterate it, and cancel() it when done."""
        return self.registry(endpoint or None).Watch(
            registry_pb2.WatchRequest(
                from_revision=from_revision,
                repository_prefix=repository_prefix,
                to_revision=to_revision,
                progress_notify=progress_notify,
            )
        )

    def status(self, endpoint: str = "", timeout: float = 3.0) -> cluster_pb2.StatusResponse:
        return self.cluster(endpoint or None).Status(cluster_pb2.StatusRequest(), timeout=timeout)


_ACCESS_METHODS = frozenset(access_pb2.DESCRIPTOR.services_by_name["Access"].methods_by_name)
_REGISTRY_METHODS = frozenset(registry_pb2.DESCRIPTOR.services_by_name["Registry"].methods_by_name)


def with_request_id(request):
    """The request, with a new request_id if it has that field and none is set (a copy:
    the caller's message is left alone)."""
    if "request_id" not in request.DESCRIPTOR.fields_by_name or request.request_id:
        return request
    filled = type(request)()
    filled.CopyFrom(request)
    filled.request_id = _new_id()
    return filled


def _new_id() -> str:
    return uuid.uuid4().hex
