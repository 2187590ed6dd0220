"""A replica's configuration: from a TOML file, flags, or both (flags win).

id = "r1"
data_dir = "/var/lib/regraft/r1"
raft_address = "10.0.0.1:7410"     # peer port: Raft traffic, encrypted with the secret
grpc_address = "10.0.0.1:7400"     # API for registry front-ends and the CLI
metrics_address = "10.0.0.1:7420"  # HTTP: /metrics, /livez, /readyz ("" = off)
secret_file = "/etc/regraft/secret"

[[peers]]
id = "r2"
raft_address = "10.0.0.2:7410"
grpc_address = "10.0.0.2:7400"
"""

import ipaddress
import math
import socket
import tomllib
from dataclasses import dataclass, field, fields

from storage import names
from storage.errors import InvalidArgument

# The gRPC endpoints of `regraft up`'s local cluster: the CLI's default target.
DEFAULT_ENDPOINTS = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403"


class ConfigError(ValueError):
    """The configuration is incomplete or contradicts itself."""


@dataclass(frozen=True)
class Peer:
    id: str
    raft_address: str
    grpc_address: str


@dataclass
class ReplicaConfig:
    id: str = ""
    data_dir: str = ""
    raft_address: str = ""
    grpc_address: str = ""
    # Where the others (replicas, clients told who leads) reach this replica's API, when
    # grpc_address is not that address: a wildcard such as 0.0.0.0:7401 in a container.
    advertise_grpc_address: str = ""
    metrics_address: str = ""
    secret_file: str = ""
    insecure: bool = False
    peers: list[Peer] = field(default_factory=list)
    # Added with `regraft member add`: start as a learner until promoted. `peers` then
    # needs only enough existing members to reach the cluster.
    join: bool = False
    # Raft timing, in seconds; the defaults suit a loaded 2-core machine.
    tick: float = 0.01
    heartbeat: float = 0.05
    election_timeout_min: float = 1.0
    election_timeout_max: float = 2.0
    leader_fallback: float = 3.0
    # Take a snapshot (and compact the log) after this many entries or seconds.
    snapshot_entries: int = 20_000
    snapshot_seconds: float = 600.0
    log_level: str = "INFO"
    # The gRPC API's TLS (README "Security"). Certificate and key: TLS on. A client CA:
    # every caller must present a certificate it signed (mutual TLS). The files are
    # re-read when they change, for new connections.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    # Verifies the other replicas' certificates when this one calls them
    # (default: tls_client_ca_file).
    tls_ca_file: str = ""
    # Identities (certificate names, hashed bearer tokens) and their roles; set, every
    # call but health checks and reflection needs a caller with a role that allows it.
    callers_file: str = ""

    def read_secret(self) -> str | None:
        """The cluster secret; None only for an --insecure replica."""
        if not self.secret_file:
            return None
        try:
            with open(self.secret_file) as f:
                secret = f.read().strip()
        except OSError as e:
            raise ConfigError(f"secret_file {self.secret_file!r}: {e.strerror}") from None
        if len(secret) < 16:
            raise ConfigError(
                f"secret_file {self.secret_file!r} holds {len(secret)} characters; "
                "use at least 16 random ones (regraft up generates 32)"
            )
        return secret

    def validate(self) -> None:
        self._validate_types()
        for name in ("id", "data_dir", "raft_address", "grpc_address"):
            if not getattr(self, name):
                raise ConfigError(f"{name} is required (flag --{name.replace('_', '-')})")
        for name, address in [
            ("raft_address", self.raft_address),
            ("grpc_address", self.grpc_address),
            *(("advertise_grpc_address", a) for a in [self.advertise_grpc_address] if a),
            *(("metrics_address", a) for a in [self.metrics_address] if a),
            *(("peers.raft_address", p.raft_address) for p in self.peers),
            *(("peers.grpc_address", p.grpc_address) for p in self.peers),
        ]:
            split_address(address, name)
        ids = [self.id, *(p.id for p in self.peers)]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"replica ids must be unique, got {ids}")
        raft = [self.raft_address, *(p.raft_address for p in self.peers)]
        if len(set(raft)) != len(raft):
            raise ConfigError(f"raft addresses must be unique, got {raft}")
        if not self.secret_file and not self.insecure:
            raise ConfigError(
                "no cluster secret: set secret_file (--secret-file). Without one the Raft "
                "peer port accepts unauthenticated pickled messages, which lets anyone who "
                "reaches it run code. --insecure allows it for a loopback-only test cluster."
            )
        if self.insecure:
            for address in [self.raft_address, *(p.raft_address for p in self.peers)]:
                if not is_loopback(split_address(address, "raft_address")[0]):
                    raise ConfigError(
                        f"--insecure binds loopback addresses only, but raft address "
                        f"{address!r} is not on loopback"
                    )
        if self.advertise_grpc_address:
            dialable(self.advertise_grpc_address, "advertise_grpc_address")
        self._validate_tls()
        if self.election_timeout_min <= 3 * self.heartbeat:
            raise ConfigError("election_timeout_min must exceed three heartbeats")
        if self.election_timeout_max <= self.election_timeout_min:
            raise ConfigError("election_timeout_max must exceed election_timeout_min")

    def _validate_types(self) -> None:
        """Each setting of the type its default has (a TOML file may hold anything: a
        quoted "false" is a true string), and the numbers and the log level in range."""
        for f in fields(self):
            if f.name == "peers":
                continue
            value, want = getattr(self, f.name), type(f.default)
            # bool is an int to isinstance, and a float setting takes an int (1 for 1.0).
            accepted = int | float if want is float else want
            ok = isinstance(value, accepted) and (want is bool or not isinstance(value, bool))
            if not ok:
                raise ConfigError(
                    f"{f.name} must be {_TYPE_NAMES[want]}, got {_toml(value)} "
                    f"({type(value).__name__})"
                )
        for name in _POSITIVE:
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(f"{name} must be above 0 and finite, got {getattr(self, name)}")
        if self.log_level.upper() not in _LOG_LEVELS:
            raise ConfigError(
                f"log_level {self.log_level!r} is not one of {', '.join(_LOG_LEVELS)}"
            )

    @property
    def tls(self) -> bool:
        """Whether the gRPC API speaks TLS."""
        return bool(self.tls_cert_file)

    def _validate_tls(self) -> None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            given, missing = (
                ("tls_cert_file", "tls_key_file")
                if self.tls_cert_file
                else ("tls_key_file", "tls_cert_file")
            )
            raise ConfigError(
                f"{given} {getattr(self, given)!r} is set but {missing} is not: "
                "TLS needs both the certificate and its private key"
            )
        for name in ("tls_client_ca_file", "tls_ca_file"):
            if getattr(self, name) and not self.tls:
                raise ConfigError(
                    f"{name} {getattr(self, name)!r} needs TLS on the gRPC API: "
                    "set tls_cert_file and tls_key_file too"
                )
        if self.callers_file and not self.tls and not self.loopback_api:
            raise ConfigError(
                f"callers_file {self.callers_file!r} without TLS on grpc_address "
                f"{self.grpc_address!r}, which is not loopback: bearer tokens would cross "
                "the network in clear. Set tls_cert_file and tls_key_file."
            )

    @property
    def advertised_grpc_address(self) -> str:
        """How the other replicas and clients reach this replica's API."""
        return self.advertise_grpc_address or self.grpc_address

    @property
    def me(self) -> Peer:
        """This replica as its peers know it."""
        return Peer(self.id, self.raft_address, self.advertised_grpc_address)

    @property
    def loopback_api(self) -> bool:
        return is_loopback(split_address(self.grpc_address, "grpc_address")[0])

    def warnings(self) -> list[str]:
        """What is allowed but unsafe or wrong: said loudly when a replica starts."""
        found = []
        if names.is_wildcard_address(self.advertised_grpc_address):
            found.append(
                f"ADDRESS: grpc_address {self.grpc_address} is a wildcard, and the other "
                "replicas, and clients told who leads, would dial it: set "
                "advertise_grpc_address (--advertise-grpc-address) to the address they "
                "reach this replica at."
            )
        for peer in self.peers:
            if names.is_wildcard_address(peer.grpc_address):
                found.append(
                    f"ADDRESS: peer {peer.id}'s grpc_address {peer.grpc_address} is a "
                    f"wildcard, which reaches this replica, not {peer.id}: give the address "
                    f"{peer.id} is reached at."
                )
        return found + self._security_warnings()

    def _security_warnings(self) -> list[str]:
        if self.loopback_api or self.tls_client_ca_file or self.callers_file:
            return []
        if self.tls:
            return [
                f"UNSAFE: the gRPC API on {self.grpc_address} is encrypted but does not "
                "authenticate its callers: anyone who reaches it is an admin and can change "
                "the registry, the accounts and the membership. Set tls_client_ca_file and "
                "callers_file (README, Security)."
            ]
        return [
            f"UNSAFE: the gRPC API on {self.grpc_address} is neither encrypted nor "
            "authenticated: anyone who reaches it can read and change the registry and the "
            "membership. Set tls_cert_file, tls_key_file, tls_client_ca_file and "
            "callers_file (README, Security)."
        ]


_TYPE_NAMES = {str: "a string", bool: "true or false", int: "a whole number", float: "a number"}
_POSITIVE = (
    "tick",
    "heartbeat",
    "election_timeout_min",
    "election_timeout_max",
    "leader_fallback",
    "snapshot_entries",
    "snapshot_seconds",
)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def split_address(address: str, name: str = "address") -> tuple[str, int]:
    try:
        return names.split_address(address, name)
    except InvalidArgument as e:
        raise ConfigError(f"{name} {address!r} is not host:port") from e


def dialable(address: str, name: str) -> str:
    """validate_dialable, as a configuration error."""
    try:
        return names.validate_dialable(address, name)
    except InvalidArgument as e:
        raise ConfigError(str(e)) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except OSError:
            return False


def parse_peer(text: str) -> Peer:
    """`id=raft_host:port,grpc_host:port`, the form of the --peer flag."""
    ident, sep, addresses = text.partition("=")
    raft, comma, grpc_address = addresses.partition(",")
    if not sep or not comma or not ident:
        raise ConfigError(f"--peer {text!r} is not id=raft_host:port,grpc_host:port")
    return Peer(ident, raft, grpc_address)


def load(path: str) -> ReplicaConfig:
    """Read a TOML configuration file; unknown keys are errors, not silently ignored."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config file {path!r}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path!r}: {e}") from None
    known = {f.name for f in fields(ReplicaConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"config file {path!r}: unknown keys {unknown}")
    peers = []
    for entry in raw.pop("peers", []):
        try:
            peers.append(Peer(entry["id"], entry["raft_address"], entry["grpc_address"]))
        except (KeyError, TypeError):
            raise ConfigError(
                f"config file {path!r}: each [[peers]] needs id, raft_address, grpc_address"
            ) from None
    return ReplicaConfig(**raw, peers=peers)


def dump(config: ReplicaConfig) -> str:
    """The TOML form of a configuration, as `regraft up` writes it."""
    lines = []
    for f in fields(ReplicaConfig):
        value = getattr(config, f.name)
        if f.name == "peers" or value == f.default:
            continue
        lines.append(f"{f.name} = {_toml(value)}")
    for peer in config.peers:
        lines += ["", "[[peers]]"]
        for key in ("id", "raft_address", "grpc_address"):
            lines.append(f"{key} = {_toml(getattr(peer, key))}")
    return "\n".join(lines) + "\n"


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
