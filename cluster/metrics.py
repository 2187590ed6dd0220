"""Prometheus metrics of one replica process (the default registry: one replica each)."""

from prometheus_client import Counter, Gauge, Histogram

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
snapshots = Counter("regraft_snapshots_total", "Snapshots, by outcome.", ["outcome"])
snapshot_seconds = Histogram(
    "regraft_snapshot_duration_seconds",
    "Time to write a snapshot.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
snapshot_installs = Counter(
    "regraft_snapshot_installs_total", "Snapshots received from a leader and installed."
)
read_barriers = Counter(
    "regraft_read_barriers_total", "Log barriers committed for linearizable reads."
)
read_barrier_batch = Histogram(
    "regraft_read_barrier_batch_size",
    "Linearizable reads served by one log barrier.",
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
