"""A rolling restart (an upgrade) under write load: nothing lost, writes keep flowing."""

import time

from regraft.v1 import cluster_pb2
from tests.cluster.test_membership import change, wait_for
from tests.cluster.test_replication import Writer, assert_all_present

# Generous on a shared 2-core machine: a leader change takes an election timeout
# (1-2 s) plus the client's backoff; the figure itself is printed.
MAX_WRITE_GAP = 15.0


def test_rolling_restart_under_writes_loses_nothing(cluster):
    writer = Writer(cluster)
    writer.start()
    wait_for(lambda: len(writer.acked) >= 50, "the first writes")
    began = time.monotonic()
    try:
        for replica in cluster.replicas:
            # The way an operator upgrades the leader: hand leadership over first.
            if cluster.wait_for_leader() is replica:
                request = cluster_pb2.TransferLeadershipRequest()
                change(cluster, "TransferLeadership", request)
            replica.stop()
            replica.start()
            wait_for(lambda r=replica: _caught_up(cluster, r), f"{replica.id} to catch up")
        wait_for(
            lambda: writer.ack_times[-1] > time.monotonic() - 1, "writes after the last restart"
        )
    finally:
        writer.stop()
    gap = writer.longest_gap(began)
    print(f"rolling restart: longest time without an acknowledged write {gap:.2f}s")
    assert gap < MAX_WRITE_GAP, f"writes stalled for {gap:.1f}s during the rolling restart"
    assert_all_present(cluster, writer.acked, writer.digest)
    cluster.wait_converged()


def _caught_up(cluster, replica) -> bool:
    try:
        mine = cluster.status(replica)
    except Exception:
        return False
    leader = cluster.wait_for_leader()
    return mine.applied_index + 100 >= cluster.status(leader).commit_index
