"""One replica process: configuration -> storage + Raft + gRPC + HTTP probes.

Start-up order matters: the data directory is locked (two processes on one LMDB
environment corrupt it), LMDB is opened, Raft replays its journal into it, and only
then do the API ports open. Shutdown runs the other way: health goes NOT_SERVING,
the gRPC server drains, Raft stops, the last batch is committed, LMDB closes.
"""

import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from cluster import (
    allocator,
    arrivals,
    auth,
    datadir,
    decoding,
    metrics,
    openfiles,
    reflection,
    streams,
)
from cluster.backup import BackupSource
from cluster.config import ConfigError, ReplicaConfig
from cluster.health import Health
from cluster.http import ProbeServer
from cluster.membership import (
    SUPPORTED_MACHINE_VERSION,
    Changes,
    Members,
    caught_up,
    raft_peers,
    starts_as_learner,
)
from cluster.raft import Raft, RaftSettings
from cluster.reads import Reads
from cluster.service_access import AccessService
from cluster.service_cluster import VERSION, ClusterService
from cluster.service_registry import RegistryService
from cluster.unary import UnaryServer
from cluster.watches import Watches
from cluster.workers import Workers
from regraft.v1 import (
    access_pb2,
    access_pb2_grpc,
    cluster_pb2,
    cluster_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from storage import members, versions
from storage.db import FormatError
from storage.files import write_atomically
from storage.manifest import MAX_MANIFEST_BYTES
from storage.members import Role

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 16 << 20  # a manifest (4 MiB) and its envelope, backup chunks
# A request is at most a manifest (MAX_MANIFEST_BYTES) and a few names: one just over
# is still read, and refused naming its content. Every call waiting for its message
# may hold this much of it (cluster/arrivals.py); grpcio refuses a longer one at once.
MAX_REQUEST_BYTES = MAX_MANIFEST_BYTES + (64 << 10)
# Calls at once, beside those waiting for their message (up to arrivals.MAX_WAITING):
# grpcio counts both against one limit, and answers RESOURCE_EXHAUSTED past it.
MAX_CALLS = 1024
# Calls open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS): grpcio's
# core refuses more before they reach Python, and grpcio clients queue theirs until
# one ends. Without it, one connection opening calls as fast as it can (headers only,
# or each reset at once) cancelled most other clients' calls while it lasted. 2,048
# and 4,096 did not always prevent that (cluster/DESIGN.md, session 13).
MAX_STREAMS_PER_CONNECTION = 1024
# A connection that has not completed its TLS and HTTP/2 handshake by then is closed
# (grpcio's default: 120 s). Connections that say nothing count against the
# connection cap (cluster/openfiles.py): a flood of them kept new clients out for two
# minutes after it stopped; now for as long as it is kept up, and 10 s after.
HANDSHAKE_MS = 10_000
# A replica that is further behind its leader's commit index is not ready.
READY_MAX_LAG = 1000
_HEALTH_PERIOD = 0.5
# In the data directory of a replica that joined as a learner and has been made a voter.
VOTER_MARKER = "raft.voter"
# A replica that has heard from no leader for this long asks the others whether it
# is still a member.
_REMOVED_AFTER = 5.0
# How often a leader asks the members whether they all run code that supports a newer
# machine version (storage/versions.py), and a replica looks whether the member table
# has the address it advertises.
_UPGRADE_PERIOD = 5.0
_HEALTH_SERVICES = ("", "regraft.v1.Registry", "regraft.v1.Cluster", "regraft.v1.Access")


@dataclass
class Ending:
    """Why a replica stopped by itself, and what its process should do."""

    message: str
    exit_code: int
    restart: bool = False


class Replica:
    def __init__(self, config: ReplicaConfig) -> None:
        config.validate()
        self.config = config
        connections = openfiles.connection_cap(openfiles.raise_limit(), config.grpc_address)
        # TLS files and the callers file are read before anything starts: errors first.
        api_credentials = auth.server_credentials(config)
        api_checks = auth.checks(config, config.read_secret())
        os.makedirs(config.data_dir, exist_ok=True)
        self._lock_file = _lock_data_dir(config.data_dir)
        self.store = datadir.open_state(config.data_dir)
        with self.store.read() as view:
            table, in_force = members.members(view), view.machine_version
        if in_force > SUPPORTED_MACHINE_VERSION:
            self.store.close()
            self._lock_file.close()
            raise FormatError(versions.too_new(in_force, SUPPORTED_MACHINE_VERSION))
        # A replica added with `regraft member add` runs as a learner (PySyncObj's
        # read-only node) until it is promoted; then it restarts its Raft as a voter.
        self._voter_marker = os.path.join(config.data_dir, VOTER_MARKER)
        self.learner = starts_as_learner(config, table) and not os.path.exists(self._voter_marker)
        settings = RaftSettings(
            address=None if self.learner else config.raft_address,
            peers=raft_peers(config, table),
            data_dir=config.data_dir,
            secret=config.read_secret(),
            tick=config.tick,
            heartbeat=config.heartbeat,
            election_timeout=(config.election_timeout_min, config.election_timeout_max),
            leader_fallback=config.leader_fallback,
            snapshot_entries=config.snapshot_entries,
            snapshot_seconds=config.snapshot_seconds,
            machine_version=SUPPORTED_MACHINE_VERSION,
        )
        try:
            self.raft = Raft(settings, self.store)
        except ConfigError:  # the peer port is taken
            self.store.close()
            self._lock_file.close()
            raise
        self.members = Members(config, self.raft)
        self.changes = Changes(self.raft, self.members)
        self._collector = metrics.ReplicaCollector(self.raft, self.store, self.members, VERSION)
        REGISTRY.register(self._collector)
        self._leaderless_since: float | None = None
        self._upgrade_checked = 0.0
        self._stop_requested = threading.Event()
        self._trimmer = allocator.Trimmer()
        self._stopping = threading.Event()
        self.health = Health()
        for service in _HEALTH_SERVICES:
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        waiting = arrivals.Arrivals()
        self._workers = Workers(streams.WORKERS, awaiting=waiting)
        self.reads = Reads(self.raft)
        # Every stream runs at once: each holds its thread until it ends.
        self._stream_threads = Workers(
            streams.STREAM_THREADS,
            running=streams.STREAM_THREADS,
            name="grpc-stream",
            awaiting=waiting,
        )
        self.server = grpc.server(
            self._workers,
            options=[
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
                ("grpc.so_reuseport", 0),
                # Idle connections cannot take the descriptors the rest of the replica
                # needs (cluster/openfiles.py).
                ("grpc.max_allowed_incoming_connections", connections),
                ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
                ("grpc.server_handshake_timeout_ms", HANDSHAKE_MS),
            ],
            # Calls waiting for their message count too: room for all of them. (grpcio
            # counts a call until its pool job ends: reflection streams, whose jobs end
            # at once, do not count; nor do Registry and Access calls, which are not
            # grpcio's (cluster/unary.py): rpc.MAX_PENDING bounds those that wait.)
            maximum_concurrent_rpcs=MAX_CALLS + arrivals.MAX_WAITING,
            interceptors=[
                decoding.MalformedRequests(),
                *([api_checks] if api_checks else []),
                streams.StreamCaps(self._stream_threads),
            ],
        )
        cluster_service = ClusterService(
            self.raft,
            self.reads,
            self.members,
            BackupSource(self.raft, self.reads, config.id),
            self.changes,
        )
        self.watches = Watches(self.raft, cluster_service.leader_hint)
        # Writes and reads are served off grpcio's core, answered once applied or
        # fresh enough, without a thread waiting (cluster/unary.py, rpc.write, rpc.read).
        self.unary = UnaryServer(self.server, waiting, api_checks, self._workers)
        self.unary.add_servicer(
            registry_pb2_grpc.add_RegistryServicer_to_server,
            RegistryService(self.raft, self.reads, cluster_service.leader_hint, self.watches),
        )
        self.unary.add_servicer(
            access_pb2_grpc.add_AccessServicer_to_server,
            AccessService(self.raft, self.reads, cluster_service.leader_hint),
        )
        cluster_pb2_grpc.add_ClusterServicer_to_server(cluster_service, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.Reflection(
            [
                registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name,
                access_pb2.DESCRIPTOR.services_by_name["Access"].full_name,
                cluster_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            ],
            self._workers,
        ).add_to(self.server)
        try:
            self._listen(api_credentials)
        except ConfigError:
            self._end_threads()
            self.raft.close()
            self.store.close()
            REGISTRY.unregister(self._collector)
            self._lock_file.close()
            raise
        self._health_thread = threading.Thread(target=self._watch_health, name="health")

    def _end_threads(self) -> None:
        """Let the call threads end once their calls do (a read may wait out its deadline)."""
        self._workers.shutdown(wait=False)
        self._stream_threads.shutdown(wait=False)

    def _listen(self, api_credentials: grpc.ServerCredentials | None) -> None:
        """Bind the API and probe ports; one in use is said in words, not a traceback."""
        address = self.config.grpc_address
        reason = "the port is in use or the host is not an address of this machine"
        try:
            if api_credentials is not None:
                self.server.add_secure_port(address, api_credentials)
            else:
                self.server.add_insecure_port(address)
        except RuntimeError:  # grpcio's "Failed to bind": it gives no errno
            raise ConfigError(f"cannot listen on grpc_address {address!r}: {reason}") from None
        self.probes = None
        if self.config.metrics_address:
            try:
                self.probes = ProbeServer(
                    self.config.metrics_address, self.not_live, self.not_ready
                )
            except OSError as e:
                self.server.stop(None)
                raise ConfigError(
                    f"cannot listen on metrics_address {self.config.metrics_address!r}: "
                    f"{e.strerror}"
                ) from None

    def start(self) -> None:
        self.watches.start()
        self.server.start()
        self.unary.start()
        if self.probes:
            self.probes.start()
        self._health_thread.start()
        self._trimmer.start()
        log.info(
            "replica %s serving gRPC on %s, Raft on %s",
            self.config.id,
            self.config.grpc_address,
            self.config.raft_address,
        )

    def request_stop(self) -> None:
        """Make wait() return; safe in a signal handler (stop() is not)."""
        self._stop_requested.set()

    def wait(self) -> Ending | None:
        """Run until request_stop() (None), or until this replica must stop or restart."""
        while not self._stop_requested.wait(0.5):
            if self.raft.fatal_error:
                return Ending(self.raft.fatal_error, exit_code=1)
            if self.raft.journal.sync_failed:
                return Ending(self.raft.journal.sync_failed, exit_code=1)
            ending = self._membership_duties()
            if ending is not None:
                return ending
        return None

    def _membership_duties(self) -> Ending | None:
        """Seed the member table (as leader), raise the machine version, publish this
        replica's address; notice a promotion or a removal of this one."""
        try:
            self.changes.seed(5.0)
        except Exception as e:  # retried on the next round
            log.warning("recording the configured members failed: %s", e)
        if time.monotonic() - self._upgrade_checked > _UPGRADE_PERIOD:
            self._upgrade_checked = time.monotonic()
            try:
                self.changes.upgrade(5.0)
            except Exception as e:  # retried later
                log.warning("raising the machine version failed: %s", e)
            try:
                self.changes.publish_address(5.0)
            except Exception as e:  # retried later
                log.warning("publishing this replica's gRPC address failed: %s", e)
        # The recorded table only: before it reaches this replica, the configured
        # members (this one a voter among them) say nothing about its role.
        with self.store.read() as view:
            recorded, in_force = members.members(view), view.machine_version
        if in_force > SUPPORTED_MACHINE_VERSION:  # a snapshot installed brought it
            return Ending(versions.too_new(in_force, SUPPORTED_MACHINE_VERSION), exit_code=1)
        me = next((m for m in recorded if m.id == self.config.id), None)
        status = self.raft.status()
        # Promoted: the table says so, or Raft's voter change reached this learner. The
        # second can come first, and must be enough: with one voter before, the change
        # commits only once this replica votes.
        voting = self.config.raft_address in status.get("peers", {})
        if self.learner and me is not None and (me.role == Role.VOTER or voting):
            # Remembered: the table may still say PROMOTING when this replica restarts.
            write_atomically(self._voter_marker, b"")
            return Ending("promoted to voter: restarting Raft as a voter", 0, restart=True)
        if recorded and me is None and caught_up(status) and status.get("leader") is not None:
            return Ending("removed from the cluster", 0)
        # A removed voter hears from no leader again: the others drop its connections,
        # so it is connected to none of them (and PySyncObj, which starts an election
        # only when connected to someone, may go on naming the old leader). It may not
        # have applied its own removal: after a while, ask the others.
        peers = status.get("peers", {})
        connected = any(peers.values()) or not peers  # alone: nobody to be cut off from
        if status.get("leader") is not None and connected:
            self._leaderless_since = None
            return None
        now = time.monotonic()
        self._leaderless_since = self._leaderless_since or now
        if now - self._leaderless_since > _REMOVED_AFTER:
            self._leaderless_since = now
            witness = self.members.excluded_by_others()
            if witness:
                return Ending(f"removed from the cluster (as {witness} sees it)", 0)
        return None

    def stop(self, grace: float = 2.0) -> None:
        """Stop serving, drain, and close storage; safe to call more than once."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._stop_requested.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.unary.stop()
        self.watches.stop()
        self._end_threads()
        if self.probes:
            self.probes.stop()
        if self._health_thread.is_alive():
            self._health_thread.join()
        self._trimmer.stop()
        self.raft.close()
        self.store.close()
        REGISTRY.unregister(self._collector)
        self._lock_file.close()
        log.info("replica %s stopped", self.config.id)

    # -- health -----------------------------------------------------------------------

    def not_live(self) -> str | None:
        if not self.raft.tick_thread_alive():
            return "the Raft thread has stopped"
        return None

    def not_ready(self) -> str | None:
        """Why this replica cannot serve consistent reads and writes now, or None.

        The answer of /readyz and of the gRPC health service.
        """
        if self._stopping.is_set():
            return "shutting down"
        return self.not_live() or readiness_problem(self.raft.status())

    def _watch_health(self) -> None:
        """Keep the health service's status current. Set only on a change: the
        protocol promises watchers a message when the status changes, not one per
        period."""
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        last = None
        while not self._stopping.wait(_HEALTH_PERIOD):
            state = not_serving if self.not_ready() else serving
            if state != last:
                for service in _HEALTH_SERVICES:
                    self.health.set(service, state)
                last = state


def readiness_problem(status: dict) -> str | None:
    """What keeps a replica with this Raft status (Raft.status()) from being ready."""
    if not status:
        return "starting"
    if status.get("storage_error"):
        return f"storage is failing: {status['storage_error']}"
    if status["leader"] is None:
        return "no leader known"
    if not status["has_quorum"]:
        return "no quorum reachable"
    behind = (status["leader_commit_idx"] or 0) - status["last_applied"]
    if behind > READY_MAX_LAG:
        return (
            f"{behind} entries behind the leader's commit index "
            f"{status['leader_commit_idx']} (at most {READY_MAX_LAG} allowed)"
        )
    return None


def _lock_data_dir(path: str):
    handle = open(os.path.join(path, "LOCK"), "a+")  # noqa: SIM115 (held for the process's life)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"data directory {path!r} is in use by another regraft process") from None
    return handle
