"""Prometheus metrics of one replica process (the default registry: one replica each).

Events are counted where they happen (the module-level metrics below); state (Raft,
membership, storage, disk) is read by ReplicaCollector when Prometheus scrapes. The
default registry also carries prometheus_client's process_* and python_* collectors.
"""

import collections
import os

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from storage import registry
from storage.members import Role

_FAST = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

journal_fsync_seconds = Histogram(
    "regraft_journal_fsync_duration_seconds", "Time to fsync the Raft journal.", buckets=_FAST
)
apply_seconds = Histogram(
    "regraft_apply_duration_seconds",
    "Time to apply one batch of committed entries and commit it to LMDB.",
    buckets=_FAST,
)
apply_batch_entries = Histogram(
    "regraft_apply_batch_entries",
    "Log entries applied per LMDB transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
proposals = Counter(
    "regraft_proposals_total", "Commands proposed by this replica, by outcome.", ["outcome"]
)
proposals_pending = Gauge(
    "regraft_proposals_pending", "Commands proposed by this replica and not yet answered."
)
snapshots = Counter("regraft_snapshots_total", "Snapshots, by outcome.", ["outcome"])
snapshot_seconds = Histogram(
    "regraft_snapshot_duration_seconds",
    "Time to write a snapshot.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
snapshot_installs = Counter(
    "regraft_snapshot_installs_total", "Snapshots received from a leader and installed."
)
snapshot_sent_bytes = Counter(
    "regraft_snapshot_sent_bytes_total", "Snapshot bytes sent to followers that were behind."
)
snapshot_received_bytes = Counter(
    "regraft_snapshot_received_bytes_total", "Snapshot bytes received from a leader."
)
commits_on_notice = Counter(
    "regraft_commits_on_leader_notice_total",
    "Times a follower committed on the leader's notice that its journal holds the "
    "commands the follower forwarded (and all before them), before the leader's commit "
    "index said so.",
)
read_barriers = Counter(
    "regraft_read_barriers_total",
    "Heartbeat rounds started (or, before machine version 4, log barriers committed) "
    "to confirm linearizable reads.",
)
read_barrier_batch = Histogram(
    "regraft_read_barrier_batch_size",
    "Linearizable reads served by one heartbeat round or log barrier.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
grpc_requests = Counter("regraft_grpc_requests_total", "gRPC requests handled.", ["method", "code"])
grpc_seconds = Histogram(
    "regraft_grpc_request_duration_seconds",
    "Time to handle a gRPC request.",
    ["method"],
    buckets=_FAST,
)
grpc_in_flight = Gauge("regraft_grpc_requests_in_flight", "gRPC requests being handled.")
grpc_awaiting_message = Gauge(
    "regraft_grpc_calls_awaiting_message",
    "gRPC calls whose headers came and whose request message has not (cluster/arrivals.py).",
)
grpc_awaiting_cancelled = Counter(
    "regraft_grpc_calls_awaiting_message_cancelled_total",
    "gRPC calls cancelled while too many waited for their message: the one waiting"
    " longest on the connection holding the most.",
)
grpc_unread_bytes = Gauge(
    "regraft_grpc_unread_answer_bytes",
    "Bytes of large answers sent and not yet read by their clients (cluster/unary.py).",
)
reflection_streams = Gauge(
    "regraft_grpc_reflection_streams_open",
    "Server reflection streams open on this replica (cluster/reflection.py).",
)
watch_streams = Gauge(
    "regraft_grpc_watch_streams_open",
    "Registry.Watch streams open on this replica (cluster/watches.py).",
)
reflection_cancelled = Counter(
    "regraft_grpc_reflection_streams_cancelled_total",
    "Reflection streams cancelled while too many were open: the one idle longest on"
    " the connection holding the most.",
)

# Export the outcomes at zero from the start: rate() and increase() miss the first
# event of a series that appears only when it happens.
for _outcome in ("committed", "failed"):
    proposals.labels(_outcome)
for _outcome in ("taken", "failed"):
    snapshots.labels(_outcome)

LEADER = 2  # PySyncObj's state number of a leader


class ReplicaCollector:
    """Raft and storage state, read when Prometheus scrapes (never stale, no thread).

    `raft` needs status() (Raft.status's dict), last_snapshot_index, leader_changes
    and snapshot_path; `store` needs stat(), read() and path; `members` maps Raft
    addresses to replica ids and has the member table.
    """

    def __init__(self, raft, store, members, version: str) -> None:
        self._raft = raft
        self._store = store
        self._members = members
        self._version = version

    def collect(self):
        info = GaugeMetricFamily("regraft_build_info", "regraft version.", labels=["version"])
        info.add_metric([self._version], 1)
        yield info
        status = self._raft.status()
        if status:
            yield from self._raft_state(status)
        yield from self._membership()
        yield from self._storage_state()

    def _raft_state(self, status: dict):
        leader = status["leader"]
        is_leader = status["state"] == LEADER
        for name, help_text, value in [
            ("has_leader", "1 when this replica knows a leader.", leader is not None),
            ("is_leader", "1 when this replica is the leader.", is_leader),
            ("term", "Current Raft term.", status["raft_term"]),
            ("commit_index", "Raft commit index.", status["commit_idx"]),
            ("applied_index", "Last Raft index applied here.", status["last_applied"]),
            ("last_log_index", "Last Raft index in the local log.", status["last_log_index"]),
            ("has_quorum", "1 when a majority of voters is reachable.", status["has_quorum"]),
            (
                "snapshot_last_index",
                "Raft index of the last snapshot taken or installed here.",
                self._raft.last_snapshot_index,
            ),
        ]:
            yield GaugeMetricFamily(f"regraft_{name}", help_text, value=float(value))
        yield CounterMetricFamily(
            "regraft_leader_changes_seen",
            "Leader changes this replica has seen (the first leader it learns of included).",
            value=self._raft.leader_changes,
        )
        reachable = GaugeMetricFamily(
            "regraft_peer_reachable",
            "1 when the peer's Raft link is up (on the leader: and it answered in the last 2 s).",
            labels=["peer"],
        )
        match = GaugeMetricFamily(
            "regraft_peer_match_index", "Leader only: last index a peer holds.", labels=["peer"]
        )
        lag = GaugeMetricFamily(
            "regraft_peer_lag_entries", "Leader only: entries a peer is behind.", labels=["peer"]
        )
        for address, up in sorted(status["peers"].items()):
            peer = self._members.by_raft_address(address).id
            reachable.add_metric([peer], float(up))
            if is_leader:
                index = status.get(f"match_idx_server_{address}", 0)
                match.add_metric([peer], index)
                lag.add_metric([peer], max(0, status["last_log_index"] - index))
        yield from (reachable, match, lag)

    def _membership(self):
        members = GaugeMetricFamily(
            "regraft_members",
            "Members in the replicated member table, by role (promoting and removing: "
            "in the middle of a change).",
            labels=["role"],
        )
        roles = collections.Counter(member.role for member in self._members.table())
        for role in (Role.VOTER, Role.LEARNER, Role.PROMOTING, Role.REMOVING):
            members.add_metric([Role.Name(role).lower()], roles[role])
        yield members

    def _storage_state(self):
        sizes = self._store.stat()
        for name, help_text in [
            ("file_bytes", "Size of the LMDB data file."),
            ("used_bytes", "LMDB pages in use."),
            ("map_bytes", "LMDB map size (doubled automatically when full)."),
        ]:
            yield GaugeMetricFamily(f"regraft_db_{name}", help_text, value=sizes[name])
        disk = os.statvfs(self._store.path)
        yield GaugeMetricFamily(
            "regraft_disk_free_bytes",
            "Bytes free for regraft on the filesystem of the data directory.",
            value=disk.f_bavail * disk.f_frsize,
        )
        yield GaugeMetricFamily(
            "regraft_disk_total_bytes",
            "Size of the filesystem of the data directory.",
            value=disk.f_blocks * disk.f_frsize,
        )
        try:
            snapshot_bytes = os.path.getsize(self._raft.snapshot_path)
        except FileNotFoundError:
            snapshot_bytes = 0
        yield GaugeMetricFamily(
            "regraft_snapshot_size_bytes",
            "Size of the last snapshot file here (0 before the first).",
            value=snapshot_bytes,
        )
        with self._store.read() as view:
            counts = registry.counts(view)
            revision = view.revision
        entries = GaugeMetricFamily(
            "regraft_entries", "Records in the state, by kind.", labels=["kind"]
        )
        for kind, count in counts.items():
            entries.add_metric([kind], count)
        yield entries
        yield GaugeMetricFamily(
            "regraft_revision", "Revision of the state (last applied command).", value=revision
        )
