"""A replica's file descriptors: how many its gRPC port may take.

Every connection takes a descriptor, and grpcio accepts as many as come. Measured: one
client opening 1,100 idle TCP connections (no credentials, not even HTTP/2) took every
descriptor of a replica under the common soft limit of 1,024. Its gRPC and metrics
ports then refused everyone, and writing the Raft journal's metadata failed every
second ("Too many open files"). So a replica raises its soft limit to the hard one
(as Go programs, etcd among them, do by default) and caps its gRPC connections below
that, leaving RESERVED descriptors for its files, its Raft peers and its HTTP port.
Over the cap, grpcio closes a new connection as soon as it has accepted it.
"""

import logging
import resource

from cluster.config import ConfigError

log = logging.getLogger(__name__)

# Files (LMDB, the journal, snapshots, backups, logs), Raft (two connections per peer
# and up to 64 unidentified: cluster/transport.py), HTTP (32: cluster/http.py), and
# grpcio's own (epoll, wake-ups), with room to spare.
RESERVED = 256
MIN_CONNECTIONS = 64
# Front-ends hold a few long-lived channels each; past this many, a flood, not users.
MAX_CONNECTIONS = 4096


def raise_limit() -> int:
    """Raise the soft open-files limit to the hard one; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, e)
    return soft


def connection_cap(limit: int) -> int:
    """How many gRPC connections a replica allowed `limit` open files accepts at once."""
    if limit != resource.RLIM_INFINITY and limit - RESERVED < MIN_CONNECTIONS:
        raise ConfigError(
            f"the open-files limit is {limit}: a replica needs at least "
            f"{RESERVED + MIN_CONNECTIONS} (raise it with ulimit -n, or LimitNOFILE in systemd)"
        )
    if limit == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return min(MAX_CONNECTIONS, limit - RESERVED)
