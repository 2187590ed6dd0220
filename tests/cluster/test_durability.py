"""Power loss and lost disks: acknowledged writes survive what Raft promises they survive."""

import os
import random
import time
import uuid

import pytest

from tests.cluster.harness import push
from tests.cluster.test_replication import Writer, assert_all_present


def power_cut(replica) -> int:
    """What a power cut does to a killed replica's disk, at its worst.

    The journal loses everything it wrote but did not fsync (it records which file and
    how much of it is durable after every fsync: REGRAFT_TRACE_SYNCED). LMDB commits
    without fsync, so its pages may reach the disk in any order: its file is left
    garbage. The machine then boots again (REGRAFT_BOOT_ID). Returns the journal bytes
    lost.
    """
    journal = os.path.join(replica.config.data_dir, "raft.journal")
    with open(journal + ".synced") as f:
        inode, durable = map(int, f.read().split())
    size = os.path.getsize(journal)
    if os.stat(journal).st_ino != inode:
        # Killed between compaction's rename of the rewritten journal (fsynced before
        # it) and its trace: all of it is durable, and so was the file it replaced.
        durable = size
    # Smaller than the trace: killed between a cut of conflicting entries and its
    # sync; what is left was durable.
    dropped = max(0, size - durable)
    os.truncate(journal, size - dropped)
    state = os.path.join(replica.config.data_dir, "state", "data.mdb")
    size = os.path.getsize(state)
    with open(state, "r+b") as f:
        f.write(random.Random(size).randbytes(size))
    replica.env = {**replica.env, "REGRAFT_BOOT_ID": uuid.uuid4().hex}
    return dropped


@pytest.mark.parametrize("lost", ["leader", "follower"])
def test_power_loss_and_a_lost_disk_lose_no_acknowledged_write(make_cluster, lost):
    # Snapshots every 100 entries: the state is rebuilt from one and the journal after it.
    cluster = make_cluster(
        env={"REGRAFT_TRACE_SYNCED": "1", "REGRAFT_BOOT_ID": "before"}, snapshot_entries=100
    )
    writer = Writer(cluster)
    writer.start()
    while len(writer.acked) < 300:
        time.sleep(0.05)
    leader = cluster.wait_for_leader()
    for replica in cluster.replicas:
        replica.kill()
    writer.stop()
    # One disk is lost entirely: the other two alone must hold every acknowledged
    # write, because an acknowledgement needs a majority's fsync, the leader's own
    # included when it is one of the two.
    gone = leader if lost == "leader" else next(r for r in cluster.replicas if r is not leader)
    survivors = [r for r in cluster.replicas if r is not gone]
    for replica in survivors:
        power_cut(replica)
        replica.start()
    gone.wipe()
    cluster.wait_for_leader(survivors)
    assert_all_present(cluster, writer.acked, writer.digest, replicas=survivors)
    for replica in survivors:
        assert "rebuilding it from the Raft snapshot and journal" in replica.log()
    gone.start()
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


def test_a_voter_back_with_an_empty_disk_cannot_elect_a_replica_missing_writes(make_cluster):
    """Writes committed by the leader and one follower while the third replica was
    stopped; then both lose power, and the follower its disk too. The stale third
    replica must not win an election with the vote of the one that forgot everything:
    it would lose those writes. Once the old leader is back, all of them are there."""
    cluster = make_cluster()
    leader = cluster.wait_for_leader()
    wiped, stale = [r for r in cluster.replicas if r is not leader]
    stale.pause()
    acked = {}
    with cluster.client([leader, wiped]) as client:
        digest = push(client, "load/app", "base", seed="base").digest
        for i in range(20):
            acked[f"t{i}"] = client.put_tag("load/app", f"t{i}", digest).revision
    leader.kill()
    wiped.kill()
    wiped.wipe()
    stale.resume()
    wiped.start()
    # The stale replica keeps asking whether it would be elected (it has a log); the
    # wiped one, which started empty and has not heard from a leader, says no. (The
    # stale one names the dead leader until its election timeout passes.)
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline:
        leader_id = cluster.status(stale).leader_id
        assert leader_id in ("", leader.id), f"{leader_id} was elected without the writes"
        time.sleep(0.2)
    assert "not voting for" in wiped.log()
    leader.start()
    cluster.wait_for_leader()
    assert_all_present(cluster, acked, digest)
    cluster.wait_converged()
