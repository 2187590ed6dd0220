"""The /metrics text of a real replica: valid for promtool, and every metric the
issue (Prometheus and orchestrators) asks for is there."""

import subprocess

from tests.deploy.conftest import exported_names, require

# What an operator's dashboards and alerts rely on (issue 4's list).
REQUIRED = {
    # Raft
    "regraft_has_leader",
    "regraft_is_leader",
    "regraft_term",
    "regraft_leader_changes_seen_total",
    "regraft_commit_index",
    "regraft_applied_index",
    "regraft_last_log_index",
    "regraft_peer_match_index",
    "regraft_peer_lag_entries",
    "regraft_peer_reachable",
    "regraft_has_quorum",
    "regraft_proposals_total",
    "regraft_proposals_pending",
    "regraft_apply_duration_seconds_bucket",
    "regraft_journal_fsync_duration_seconds_bucket",
    "regraft_members",
    # snapshots
    "regraft_snapshots_total",
    "regraft_snapshot_duration_seconds_bucket",
    "regraft_snapshot_size_bytes",
    "regraft_snapshot_last_index",
    "regraft_snapshot_sent_bytes_total",
    "regraft_snapshot_received_bytes_total",
    "regraft_snapshot_installs_total",
    # storage
    "regraft_db_file_bytes",
    "regraft_db_used_bytes",
    "regraft_db_map_bytes",
    "regraft_disk_free_bytes",
    "regraft_disk_total_bytes",
    "regraft_entries",
    "regraft_revision",
    # API
    "regraft_grpc_requests_total",
    "regraft_grpc_request_duration_seconds_bucket",
    "regraft_grpc_requests_in_flight",
    "regraft_grpc_calls_awaiting_message",
    "regraft_grpc_calls_awaiting_message_cancelled_total",
    "regraft_read_barriers_total",
    "regraft_read_barrier_batch_size_bucket",
    # process
    "regraft_build_info",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "python_info",
    "python_gc_collections_total",
}


def test_promtool_accepts_the_exposition(exposition):
    result = subprocess.run(
        [require("promtool"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_required_metric_is_exported(exposition):
    missing = REQUIRED - exported_names(exposition)
    assert not missing, f"not in /metrics: {sorted(missing)}"


def test_labels_are_the_documented_ones(exposition):
    assert 'regraft_members{role="voter"} 1.0' in exposition
    assert 'regraft_build_info{version="0.1.0"} 1.0' in exposition
    for kind in ("repositories", "manifests", "tags", "blobs"):
        assert f'regraft_entries{{kind="{kind}"}}' in exposition
    assert 'regraft_grpc_requests_total{code="OK",method="PutManifest"}' in exposition
    assert 'regraft_proposals_total{outcome="committed"}' in exposition
