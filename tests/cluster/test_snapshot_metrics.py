"""Snapshot metrics of real replicas: a wiped replica repaired by snapshot transfer
shows up as bytes sent by the leader and received (and installed) by the replica."""

from tests.cluster.harness import push


def test_snapshot_transfer_is_counted_on_both_ends(make_cluster):
    cluster = make_cluster(snapshot_entries=100)
    leader = cluster.wait_for_leader()
    lost = next(r for r in cluster.replicas if r is not leader)
    assert cluster.metric(lost, "regraft_snapshot_received_bytes_total") == 0
    with cluster.client() as client:
        for i in range(60):
            push(client, "snapmetrics/app", f"a{i}", seed=f"a{i}")
    lost.stop()
    lost.wipe()
    with cluster.client() as client:
        for i in range(60):
            last = push(client, "snapmetrics/app", f"b{i}", seed=f"b{i}").revision
    assert cluster.metric(leader, "regraft_snapshots_total") >= 1
    assert cluster.metric(leader, "regraft_snapshot_size_bytes") > 0
    assert cluster.metric(leader, "regraft_snapshot_last_index") > 0
    lost.start()
    assert cluster.tag_on(lost, "snapmetrics/app", "a0", min_revision=last)
    cluster.wait_converged()
    received = cluster.metric(lost, "regraft_snapshot_received_bytes_total")
    sent = sum(
        cluster.metric(r, "regraft_snapshot_sent_bytes_total")
        for r in cluster.replicas
        if r is not lost
    )
    assert cluster.metric(lost, "regraft_snapshot_installs_total") >= 1
    assert received > 0
    assert sent >= received, (sent, received)
    assert cluster.metric(lost, "regraft_snapshot_last_index") > 0
