"""Who may call the cluster: the gRPC API's TLS, caller identities and their roles.

A caller is identified by, first match wins:
- a bearer token (`authorization: Bearer <token>` metadata), looked up by its sha256
  in the callers file; a replica calling another uses a token derived from the
  cluster secret (identity `peer:replica`, role reader);
- its client certificate (mutual TLS): the subject's common name (CN), looked up in
  the callers file. SANs are not used for identity: the CN names the caller, the
  SANs name the hosts it may serve from.

Roles are ordered, each allowing what the one before it does: `reader` (read-only
methods, Status, ListMembers, CheckAccess), `registry` (also the Registry service's
writes and VerifyPassword: front-ends), `admin` (everything: membership, leadership,
backup, event retention, the Access service's administration). METHOD_ROLES gives
the least role of every method that does not need admin. Health checking and
reflection need no credentials.

Without a callers file there are no roles: every caller that completes the TLS
handshake may call everything, and its certificate's CN (if any) is the actor of its
writes. The callers file and the TLS files are re-read when they change.
"""

import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cluster import streams
from cluster.client import Credentials
from cluster.config import ConfigError, ReplicaConfig

log = logging.getLogger(__name__)

READER, REGISTRY, ADMIN = "reader", "registry", "admin"
ROLES = (READER, REGISTRY, ADMIN)  # least to most

# Callable without credentials: load balancers probe health, tools list the API.
PUBLIC_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

_REGISTRY_READS = ("GetManifest", "ListTags", "ListRepositories", "GetReferrers", "StatBlob")
_REGISTRY_WRITES = (
    "PutManifest",
    "DeleteManifest",
    "PutTag",
    "DeleteTag",
    "LinkBlob",
    "UnlinkBlob",
    "MountBlob",
)
# The least role each method needs; a method not listed here needs admin.
METHOD_ROLES: dict[str, str] = {
    **{f"/regraft.v1.Registry/{m}": READER for m in (*_REGISTRY_READS, "Watch")},
    **{f"/regraft.v1.Registry/{m}": REGISTRY for m in _REGISTRY_WRITES},
    "/regraft.v1.Cluster/Status": READER,
    "/regraft.v1.Cluster/ListMembers": READER,
    "/regraft.v1.Access/CheckAccess": READER,
    # Front-ends that take HTTP basic auth check passwords; a reader may not guess them.
    "/regraft.v1.Access/VerifyPassword": REGISTRY,
}

# How often, at most, the callers file is checked for changes.
_RELOAD_CHECK_SECONDS = 1.0
_MAX_NAME = 256
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


def required_role(method: str) -> str | None:
    """The least role that may call `method` (a full name, /package.Service/Method);
    None when it needs no credentials."""
    service = method.lstrip("/").split("/", 1)[0]
    if service in PUBLIC_SERVICES:
        return None
    return METHOD_ROLES.get(method, ADMIN)


def allows(role: str | None, method: str) -> bool:
    """Whether a caller with `role` (None: no role) may call `method`."""
    needed = required_role(method)
    if needed is None:
        return True
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class Caller:
    """An identified caller. kind: "cert", "token", "peer", or "" when unidentified."""

    name: str
    role: str | None
    kind: str = ""

    @property
    def actor(self) -> str:
        """What a write records as its author (storage Event.actor)."""
        return f"{self.kind}:{self.name}" if self.kind else ""


ANONYMOUS = Caller("", ADMIN)  # authorization off, and the caller gave no identity
PEER = Caller("replica", READER, "peer")  # another replica (the peer token)


def token_hash(token: str) -> str:
    """The form in which the callers file keeps a token: its sha256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def peer_token(secret: str) -> str:
    """The bearer token replicas present to each other, derived from the cluster secret."""
    return hmac.new(secret.encode(), b"regraft gRPC peer token", hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Callers:
    """The parsed callers file: certificate names and token hashes, each with a role."""

    certificates: dict[str, Caller]
    tokens: dict[str, Caller]  # by token_hash


def parse_callers(text: str, source: str) -> Callers:
    """Parse a callers file (TOML; see README, Security):

    [[certificate]]
    name = "frontend-1"      # the client certificate's subject CN
    role = "registry"

    [[token]]
    name = "backup-job"      # recorded as the actor of its writes
    role = "admin"
    sha256 = "<sha256 of the token, hex>"   # `regraft token create` makes both
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"callers file {source!r}: {e}") from None
    unknown = sorted(set(raw) - {"certificate", "token"})
    if unknown:
        raise ConfigError(
            f"callers file {source!r}: unknown keys {unknown} (expected [[certificate]], [[token]])"
        )
    certificates: dict[str, Caller] = {}
    tokens: dict[str, Caller] = {}
    for kind, found, fields in (
        ("certificate", certificates, ("name", "role")),
        ("token", tokens, ("name", "role", "sha256")),
    ):
        entries = raw.get(kind, [])
        if not isinstance(entries, list):
            raise ConfigError(f"callers file {source!r}: {kind} must be a [[{kind}]] table list")
        names = set()
        for number, entry in enumerate(entries, start=1):
            where = f"callers file {source!r}, [[{kind}]] number {number}"
            caller = _parse_entry(entry, fields, where, "cert" if kind == "certificate" else kind)
            if caller.name in names:
                raise ConfigError(f"{where}: name {caller.name!r} is listed twice")
            names.add(caller.name)
            key = caller.name if kind == "certificate" else entry["sha256"].lower()
            if key in found:
                raise ConfigError(f"{where}: the same token as {found[key].name!r}")
            found[key] = caller
    return Callers(certificates, tokens)


def _parse_entry(entry, fields: tuple[str, ...], where: str, kind: str) -> Caller:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: not a table")
    missing = [f for f in fields if f not in entry]
    extra = sorted(set(entry) - set(fields))
    if missing or extra:
        raise ConfigError(
            f"{where}: needs exactly {list(fields)}; missing {missing}, unknown {extra}"
        )
    name, role = entry["name"], entry["role"]
    if (
        not isinstance(name, str)
        or not name
        or len(name) > _MAX_NAME
        or any(not ch.isprintable() for ch in name)
    ):
        raise ConfigError(f"{where}: name {name!r} is not 1 to {_MAX_NAME} printable characters")
    if role not in ROLES:
        raise ConfigError(f"{where}: role {role!r} is not one of {list(ROLES)}")
    if "sha256" in fields:
        digest = entry["sha256"]
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise ConfigError(f"{where}: sha256 {digest!r} is not 64 hex digits")
    return Caller(name, role, kind)


def _signature(paths: list[str]) -> tuple:
    """Changes when any of the files is replaced or rewritten."""
    found = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            found.append(None)
            continue
        found.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(found)


class CallersFile:
    """The callers file, re-read when it changes. A changed file that does not parse
    is reported in the log and the previous contents stay in force."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._signature = _signature([path])
        self._checked = time.monotonic()
        self._callers = self._read()

    def _read(self) -> Callers:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(f"callers_file {self.path!r}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"callers_file {self.path!r} is not UTF-8: {e}") from None
        return parse_callers(text, self.path)

    def current(self) -> Callers:
        now = time.monotonic()
        if now - self._checked < _RELOAD_CHECK_SECONDS:
            return self._callers
        with self._lock:
            self._checked = now
            signature = _signature([self.path])
            if signature != self._signature:
                self._signature = signature
                try:
                    self._callers = self._read()
                    log.info("callers file %s reloaded", self.path)
                except ConfigError as e:
                    log.error("%s; keeping the callers loaded before", e)
        return self._callers


class ServerTls:
    """The gRPC server's TLS credentials, re-read for new connections when the
    certificate, key or client CA file changes. A replacement that does not load
    (a half-written file, a key that does not match) is logged and the previous
    certificates stay in use."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str = "") -> None:
        self._paths = [p for p in (cert_file, key_file, client_ca_file) if p]
        self._cert_file, self._key_file, self._ca_file = cert_file, key_file, client_ca_file
        self._signature = _signature(self._paths)
        self._refused: tuple | None = None  # files that did not load, reported once
        self._initial = self._load()

    @property
    def mutual(self) -> bool:
        return bool(self._ca_file)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial, self.fetch, require_client_authentication=self.mutual
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each new connection's handshake: a new configuration
        when the files changed and load, else None (keep the current one). Files that
        do not load are tried again at each connection (the key and the certificate
        may be replaced one after the other), and reported once."""
        signature = _signature(self._paths)
        if signature in (self._signature, self._refused):
            return None
        try:
            loaded = self._load()
        except Exception as e:  # never into gRPC's core thread
            self._refused = signature
            log.error("%s; new connections keep the certificates loaded before", e)
            return None
        self._signature = signature
        log.info("TLS certificates reloaded from %s", ", ".join(self._paths))
        return loaded

    def _load(self) -> grpc.ServerCertificateConfiguration:
        chain = _read_file(self._cert_file, "tls_cert_file")
        key = _read_file(self._key_file, "tls_key_file")
        certificates = _certificates(chain, "tls_cert_file", self._cert_file)
        try:
            private_key = serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError) as e:
            raise ConfigError(
                f"tls_key_file {self._key_file!r} is not an unencrypted PEM private key: {e}"
            ) from None
        if _public_bytes(private_key.public_key()) != _public_bytes(certificates[0].public_key()):
            raise ConfigError(
                f"tls_key_file {self._key_file!r} does not belong to the certificate in "
                f"tls_cert_file {self._cert_file!r}"
            )
        roots = None
        if self._ca_file:
            roots = _read_file(self._ca_file, "tls_client_ca_file")
            _certificates(roots, "tls_client_ca_file", self._ca_file)
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=roots)


def _read_file(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{option} {path!r}: {e.strerror}") from None


def _certificates(pem: bytes, option: str, path: str) -> list[x509.Certificate]:
    try:
        found = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise ConfigError(f"{option} {path!r} holds no PEM certificate: {e}") from None
    return found


def _public_bytes(key) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- the server interceptor --------------------------------------------------------------


class _Unauthenticated(Exception):
    pass


class Refused(Exception):
    """A call its caller may not make: the status code and message it gets."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AuthInterceptor(grpc.ServerInterceptor):
    """Identifies each caller, refuses what its role does not allow, and hands the
    servicer a context whose `caller` is the identity (see `actor`).

    callers: the callers file, or None when authorization is off (then every caller
    may call everything, and is identified only for the record).
    """

    def __init__(self, callers: CallersFile | None, secret: str | None) -> None:
        self._callers = callers
        self._peer_token = peer_token(secret) if secret else ""

    def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = continuation(details)
        method = details.method
        if handler is None or required_role(method) is None:
            return handler
        metadata = details.invocation_metadata or ()

        def admit(behavior: Callable) -> Callable:
            def checked(request, context, *args):  # args: a non-blocking method's callback
                caller = self._admit(method, metadata, context)
                return behavior(request, _CallerContext(context, caller), *args)

            return checked

        return streams.wrap(handler, admit)

    def _admit(self, method: str, metadata, context: grpc.ServicerContext) -> Caller:
        try:
            return self.check(method, metadata, context.auth_context())
        except Refused as refusal:
            streams.refuse(context, method, refusal.code, refusal.message)

    def check(self, method: str, metadata, auth_context: dict) -> Caller:
        """The caller of a call of `method` with this metadata and TLS peer; Refused if
        it is not known or its role does not allow the method."""
        try:
            caller = self.identify(metadata, auth_context)
        except _Unauthenticated as e:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, f"{method}: {e}") from None
        if self._callers is not None and not allows(caller.role, method):
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} needs role {required_role(method)} (or above); "
                f"{caller.actor} has {f'role {caller.role}' if caller.role else 'no role'}",
            )
        return caller

    def identify(self, metadata, auth_context: dict) -> Caller:
        """The caller of a call with this metadata and TLS peer (grpc auth_context)."""
        token = _bearer_token(metadata)
        callers = self._callers.current() if self._callers is not None else None
        if token:
            if self._peer_token and hmac.compare_digest(token, self._peer_token):
                return PEER
            if callers is not None:
                found = callers.tokens.get(token_hash(token))
                if found is None:
                    raise _Unauthenticated("the bearer token is not in the callers file")
                return found
        names = auth_context.get("x509_common_name") or ()
        if names:
            name = names[0].decode(errors="replace")
            if callers is None:
                return Caller(name, ADMIN, "cert")
            known = callers.certificates.get(name)
            return known or Caller(name, None, "cert")
        if callers is None:
            return ANONYMOUS
        raise _Unauthenticated(
            "no credentials: present a client certificate or `authorization: Bearer <token>`"
        )


def _bearer_token(metadata) -> str:
    for key, value in metadata:
        if key == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _Unauthenticated("authorization metadata is not `Bearer <token>`")
            return token.strip()
    return ""


class _CallerContext:
    """A servicer context that also knows who is calling."""

    def __init__(self, context: grpc.ServicerContext, caller: Caller) -> None:
        self._context = context
        self.caller = caller

    def __getattr__(self, name: str):
        return getattr(self._context, name)


def server_credentials(config: ReplicaConfig) -> grpc.ServerCredentials | None:
    """The gRPC API's TLS credentials (reloading), or None for plaintext."""
    if not config.tls:
        return None
    return ServerTls(
        config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file
    ).credentials()


def checks(config: ReplicaConfig, secret: str | None) -> AuthInterceptor | None:
    """What checks callers: nothing on a plain development replica."""
    if not (config.callers_file or config.tls_client_ca_file):
        return None
    callers = CallersFile(config.callers_file) if config.callers_file else None
    return AuthInterceptor(callers, secret)


def peer_credentials(config: ReplicaConfig) -> Credentials:
    """How this replica calls the others' gRPC API: TLS as they serve it, its own
    certificate when they require one, and the peer token."""
    secret = config.read_secret()
    mutual = bool(config.tls_client_ca_file)
    return Credentials(
        ca_file=config.tls_ca_file or config.tls_client_ca_file,
        cert_file=config.tls_cert_file if mutual else "",
        key_file=config.tls_key_file if mutual else "",
        # Never in clear over a network (dial() refuses that): with TLS, or on loopback.
        token=peer_token(secret) if secret and (config.tls or config.loopback_api) else "",
        tls=config.tls,
    )


def actor(context) -> str:
    """Who makes this call, as a write records it ("" when not identified)."""
    caller = getattr(context, "caller", None)
    return caller.actor if caller is not None else ""


def caller_key(context) -> str:
    """Who holds a stream, for its share (streams.Shares): the caller's identity, else
    the host it calls from ("ipv4:10.0.0.7"; for IPv6 its /64, which one host may
    hold whole, "ipv6:2001:db8::/64")."""
    identity = actor(context)
    if identity:
        return identity
    kind, _, address = context.peer().partition(":")
    host = address.rpartition(":")[0]
    if kind == "ipv6":
        with contextlib.suppress(ValueError):
            network = ipaddress.ip_network(f"{host.strip('[]').split('%')[0]}/64", strict=False)
            return f"ipv6:{network}"
    return f"{kind}:{host}" if host else kind or "an unknown peer"
