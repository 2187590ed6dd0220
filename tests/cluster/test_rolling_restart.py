"""A rolling restart (an upgrade) under write load: nothing lost, writes keep flowing;
and new apply behaviour waits until every replica runs the new code."""

import time

from cluster.datadir import open_state
from cluster.replica import _UPGRADE_PERIOD
from regraft.v1 import access_pb2, cluster_pb2, registry_pb2
from storage.versions import LATEST
from tests.cluster.test_membership import change
from tests.cluster.test_replication import Writer, assert_all_present
from tests.polling import wait_for

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


def _revision(replica) -> int:
    """What a stopped replica's state has applied, read from its data directory."""
    store = open_state(replica.config.data_dir)
    try:
        return store.revision
    finally:
        store.close()


def _caught_up(cluster, replica) -> bool:
    try:
        mine = cluster.status(replica)
    except Exception:
        return False
    leader = cluster.wait_for_leader()
    return mine.applied_index + 100 >= cluster.status(leader).commit_index


def test_new_apply_behaviour_waits_for_every_replica(make_cluster):
    """During a rolling upgrade, replicas run different code: a change in what apply
    does (storage/versions.py) must wait until all run the new code, then start on
    every replica at the same entry, or their states would differ."""
    cluster = make_cluster(env={"REGRAFT_MACHINE_VERSION": "1"})  # the previous release
    assert {cluster.status(r).machine_version for r in cluster.replicas} == {1}

    def upgrade(replica) -> None:
        replica.stop()
        replica.env = {k: v for k, v in replica.env.items() if k != "REGRAFT_MACHINE_VERSION"}
        replica.start()
        wait_for(lambda: _caught_up(cluster, replica), f"{replica.id} to catch up")

    def access_events() -> list[str]:
        with cluster.client() as client:
            stream = client.watch(1, "", to_revision=client.status().revision)
            return [e.operation for e in stream if e.kind == registry_pb2.ACCESS_CHANGE]

    for replica in cluster.replicas[:2]:
        upgrade(replica)
    with cluster.client() as client:
        client.call("CreateOrganization", access_pb2.OrganizationRequest(name="mixed"))
    old = cluster.replicas[2]
    if cluster.wait_for_leader() is old:  # its code knows no newer version to ask about
        request = cluster_pb2.TransferLeadershipRequest(to_id=cluster.replicas[0].id)
        change(cluster, "TransferLeadership", request)
    # The new code leading asks the members, and logs why it keeps the version.
    wait_for(
        lambda: any(
            f"stays 1: {old.id} runs code that supports up to 1" in r.log()
            for r in cluster.replicas
        ),
        f"the leader to find {old.id} running older code",
        timeout=4 * _UPGRADE_PERIOD,
    )
    assert {cluster.status(r).machine_version for r in cluster.replicas} == {1}
    assert access_events() == []
    cluster.wait_converged()

    upgrade(cluster.replicas[2])
    wait_for(
        lambda: {cluster.status(r).machine_version for r in cluster.replicas} == {LATEST},
        "the machine version to be raised once every replica supports it",
    )
    with cluster.client() as client:
        client.call("CreateOrganization", access_pb2.OrganizationRequest(name="upgraded"))
    for replica in cluster.replicas:  # followers now batch what they forward
        with cluster.client([replica]) as client:
            client.call("CreateOrganization", access_pb2.OrganizationRequest(name=replica.id))
    cluster.wait_converged()
    assert access_events() == ["CreateOrganization"] * 4

    # Going back to the previous release now would apply entries the old way: refused
    # before Raft starts, with the entries written meanwhile left to apply.
    downgraded = cluster.replicas[0]
    downgraded.stop()
    with cluster.client(cluster.replicas[1:]) as client:
        client.call("CreateOrganization", access_pb2.OrganizationRequest(name="while-down"))
    applied = _revision(downgraded)
    downgraded.env = {**downgraded.env, "REGRAFT_MACHINE_VERSION": "1"}
    downgraded.start()
    wait_for(lambda: not downgraded.running, f"{downgraded.id} to refuse to run")
    assert downgraded.process.returncode == 2
    refusal = f"the cluster applies machine version {LATEST}, newer than this code supports (1)"
    assert refusal in downgraded.log()
    assert _revision(downgraded) == applied
