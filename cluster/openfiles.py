"""A replica's file descriptors: how many its gRPC port may take.

Every connection takes a descriptor, and grpcio accepts as many as come. Measured: one
client opening 1,100 idle TCP connections (no credentials, not even HTTP/2) took every
descriptor of a replica under the common soft limit of 1,024. Its gRPC and metrics
ports then refused everyone, and writing the Raft journal's metadata failed every
second ("Too many open files"). So a replica raises its soft limit towards the hard
one (as Go programs, etcd among them, do by default) and caps its gRPC connections
below that, leaving RESERVED descriptors for its files, its Raft peers and its HTTP port.
Over the cap, grpcio closes a new connection as soon as it has accepted it. grpc core
counts per listening socket, and a host name such as localhost listens on each of its
addresses: the cap is shared out among them.
"""

import ipaddress
import logging
import resource
import socket

from cluster.config import ConfigError, split_address

log = logging.getLogger(__name__)

# Files (LMDB, the journal, snapshots, backups, logs), Raft (two connections per peer
# and up to 64 unidentified: cluster/transport.py), HTTP (32: cluster/http.py), and
# grpcio's own (epoll, wake-ups), with room to spare.
RESERVED = 256
MIN_CONNECTIONS = 64
# Front-ends hold a few long-lived channels each; past this many, a flood, not users.
MAX_CONNECTIONS = 4096


def raise_limit() -> int:
    """Raise the soft open-files limit towards the hard one, as far as a replica can use
    (RESERVED + MAX_CONNECTIONS); the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = RESERVED + MAX_CONNECTIONS
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as e:
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, wanted, e)
        return soft
    return wanted


def connection_cap(limit: int, grpc_address: str) -> int:
    """How many connections each listening socket of `grpc_address` accepts at once, for
    a replica allowed `limit` open files."""
    if limit != resource.RLIM_INFINITY and limit - RESERVED < MIN_CONNECTIONS:
        raise ConfigError(
            f"the open-files limit is {limit}: a replica needs at least "
            f"{RESERVED + MIN_CONNECTIONS} (raise it with ulimit -n, or LimitNOFILE in systemd)"
        )
    total = MAX_CONNECTIONS
    if limit != resource.RLIM_INFINITY:
        total = min(total, limit - RESERVED)
    return max(1, total // _listeners(grpc_address))


def _listeners(address: str) -> int:
    """How many sockets grpcio may listen on for `address`: one for an IP address (a
    wildcard is one dual-stack socket); for a host name, one per address it resolves to,
    and at least two, since grpcio binds localhost on 127.0.0.1 and ::1 whatever
    /etc/hosts says."""
    host, port = split_address(address, "grpc_address")
    try:
        ipaddress.ip_address(host)
        return 1
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return 2  # binding fails too, and says so
    return max(2, len({info[4][0] for info in found}))
