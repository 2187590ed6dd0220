"""Power loss and lost disks: acknowledged writes survive what Raft promises they survive."""

import os
import time

from tests.cluster.harness import push
from tests.cluster.test_replication import Writer, assert_all_present


def drop_unsynced(replica) -> int:
    """What a power cut does: everything the journal wrote but did not fsync is gone.

    The journal records its durable length after every fsync (REGRAFT_TRACE_SYNCED);
    LMDB commits with fsync, so its file is already what a power cut leaves.
    """
    journal = os.path.join(replica.config.data_dir, "raft.journal")
    with open(journal + ".synced") as f:
        durable = int(f.read())
    dropped = os.path.getsize(journal) - durable
    assert dropped >= 0
    os.truncate(journal, durable)
    return dropped


def test_power_loss_and_a_lost_leader_disk_lose_no_acknowledged_write(make_cluster):
    cluster = make_cluster(env={"REGRAFT_TRACE_SYNCED": "1"})
    writer = Writer(cluster)
    writer.start()
    while len(writer.acked) < 300:
        time.sleep(0.05)
    leader = cluster.wait_for_leader()
    for replica in cluster.replicas:
        replica.kill()
    writer.stop()
    for replica in cluster.replicas:
        if replica is not leader:
            drop_unsynced(replica)
    # The leader's disk is lost entirely: the followers alone must hold every
    # acknowledged write, because an acknowledgement needs a majority's fsync.
    leader.wipe()
    for replica in cluster.replicas:
        if replica is not leader:
            replica.start()
    survivors = [r for r in cluster.replicas if r is not leader]
    cluster.wait_for_leader(survivors)
    assert_all_present(cluster, writer.acked, writer.digest, replicas=survivors)
    leader.start()
    assert_all_present(cluster, writer.acked, writer.digest)
    cluster.wait_converged()


def test_wiped_replica_catches_up_by_snapshot(make_cluster):
    cluster = make_cluster(snapshot_entries=100)
    leader = cluster.wait_for_leader()
    lost = next(r for r in cluster.replicas if r is not leader)
    with cluster.client() as client:
        for i in range(150):
            push(client, "snap/app", f"a{i}", seed=f"a{i}")
    lost.stop()
    lost.wipe()
    term = cluster.status(leader).term
    with cluster.client() as client:
        for i in range(150):
            last = push(client, "snap/app", f"b{i}", seed=f"b{i}").revision
    # The log the leader keeps starts after what the lost replica needs: only a
    # snapshot can bring it back.
    assert cluster.metric(leader, "regraft_snapshots_total") >= 1
    # Snapshots are taken beside the Raft thread: they cause no election.
    assert cluster.status(leader).term == term
    lost.start()
    assert cluster.tag_on(lost, "snap/app", "a0", min_revision=last)
    state_hash = cluster.wait_converged()
    assert cluster.metric(lost, "regraft_snapshot_installs_total") >= 1
    assert len(state_hash) == 64
