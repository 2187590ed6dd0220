"""Membership on real processes: learners, promotion, removal, refusals, leadership."""

import os
import socket
import subprocess
import threading
import time
from dataclasses import replace

import grpc
import pytest

from cluster.cli_members import call_leader
from cluster.config import ReplicaConfig, split_address
from cluster.replica import VOTER_MARKER
from regraft.v1 import cluster_pb2, record_pb2
from storage.versions import LATEST
from tests.cluster.harness import LocalCluster, push, regraft
from tests.cluster.test_replication import Writer, assert_all_present
from tests.polling import wait_for

Role = record_pb2.MemberRecord.Role
ELECTION_TIMEOUT_MAX = ReplicaConfig().election_timeout_max
SNAPSHOTS = "regraft_snapshots_total"


def members_of(cluster, among=None) -> dict[str, cluster_pb2.Member]:
    endpoints = ",".join(r.endpoint for r in (among or cluster.replicas) if r.running)
    listed = call_leader(endpoints, "ListMembers", cluster_pb2.ListMembersRequest(), 30.0)
    return {m.id: m for m in listed.members}


def change(cluster, method: str, request, among=None):
    endpoints = ",".join(r.endpoint for r in (among or cluster.replicas) if r.running)
    return call_leader(endpoints, method, request, 60.0)


def refused(cluster, method: str, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        change(cluster, method, request)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value
    return caught.value


def role_of(cluster, replica) -> int | None:
    """What the replica's own Status says it is; None while it does not answer."""
    try:
        return cluster.status(replica).role
    except grpc.RpcError:
        return None


def join(cluster, member_id: str, among=None):
    """member add, start the replica with --join, promote it once it caught up."""
    replica = cluster.new_member(member_id)
    change(
        cluster,
        "AddMember",
        cluster_pb2.AddMemberRequest(
            id=member_id,
            raft_address=replica.config.raft_address,
            grpc_address=replica.endpoint,
        ),
        among,
    )
    assert members_of(cluster, among)[member_id].membership == Role.LEARNER
    replica.start()

    def promoted():
        try:
            change(cluster, "PromoteMember", cluster_pb2.PromoteMemberRequest(id=member_id), among)
            return True
        except grpc.RpcError as e:
            # Still catching up, or not answering yet: both are reasons to wait.
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
            assert "LEARNER_BEHIND" in e.details() or "LEARNER_UNREACHABLE" in e.details()
            return False

    wait_for(lambda: role_of(cluster, replica) == cluster_pb2.LEARNER, f"{member_id} as learner")
    wait_for(promoted, f"{member_id} to be promoted")
    # The promotion returns once the new voter runs as one, so that the next change
    # does not find it down (restarting) and refuse: it never answers as a learner again.
    assert wait_for(lambda: role_of(cluster, replica), f"{member_id} to answer") != (
        cluster_pb2.LEARNER
    )
    return replica


def test_grow_to_five_and_shrink_to_three_under_writes(cluster):
    writer = Writer(cluster)
    writer.start()
    try:
        for member_id in ("r4", "r5"):
            join(cluster, member_id)
        listed = members_of(cluster)
        assert sorted(listed) == ["r1", "r2", "r3", "r4", "r5"]
        assert all(m.membership == Role.VOTER for m in listed.values())

        # Remove the leader first (leadership moves away), then another original member.
        leader = cluster.wait_for_leader()
        removed = [leader, next(r for r in cluster.replicas[:3] if r is not leader)]
        for replica in removed:
            change(cluster, "RemoveMember", cluster_pb2.RemoveMemberRequest(id=replica.id))
        remaining = [r for r in cluster.replicas if r not in removed]
        assert sorted(members_of(cluster, remaining)) == sorted(r.id for r in remaining)
    finally:
        writer.stop()
    assert len(writer.acked) > 20
    # A removed replica stops by itself.
    for replica in removed:
        wait_for(lambda r=replica: not r.running, _stopping(cluster, replica))
        assert replica.process.returncode == 0
    new_leader = cluster.wait_for_leader(remaining)
    assert new_leader not in removed
    assert_all_present(cluster, writer.acked, writer.digest, remaining)
    cluster.wait_converged(remaining)
    # A promotion restarts the learner's Raft on the log it has: the leader resends
    # entries it holds, which PySyncObj would cut, applied ones included, and append
    # again (cluster/transport.py).
    for replica in cluster.replicas:
        assert "truncating already-applied" not in replica.log(), replica.describe()


def _stopping(cluster, replica) -> str:
    """What the test waits for, and how the replica looks now (for a failure message)."""
    try:
        status = cluster.status(replica)
        seen = f"role {status.role}, leader {status.leader_id!r}, term {status.term}"
    except grpc.RpcError as e:
        seen = e.code().name
    return f"{replica.id} to stop after its removal (it was: {seen})"


def test_refusals(cluster):
    # A learner that cannot reach the cluster never catches up: not promoted.
    stranded = cluster.new_member("r4", peers=[])
    change(
        cluster,
        "AddMember",
        cluster_pb2.AddMemberRequest(
            id="r4", raft_address=stranded.config.raft_address, grpc_address=stranded.endpoint
        ),
    )
    stranded.start()
    error = wait_for(
        lambda: _refusal_once_it_answers(cluster, "r4"), "the stranded learner to answer"
    )
    assert "LEARNER_BEHIND" in error.details() and "not receiving the log" in error.details()
    assert members_of(cluster)["r4"].membership == Role.LEARNER
    # Its own table is empty: it must not take the configured members (itself a voter
    # among them) for the cluster's and promote itself. Alone as a voter, it would lead.
    time.sleep(2 * ELECTION_TIMEOUT_MAX)
    assert not os.path.exists(os.path.join(stranded.config.data_dir, VOTER_MARKER))
    assert cluster.status(stranded).role != cluster_pb2.LEADER
    # An address already taken, and an unknown member.
    taken = cluster.replicas[0]
    error = refused(
        cluster,
        "AddMember",
        cluster_pb2.AddMemberRequest(
            id="r9", raft_address=taken.config.raft_address, grpc_address="127.0.0.1:1"
        ),
    )
    assert taken.config.raft_address in error.details()
    with pytest.raises(grpc.RpcError) as unknown:
        change(cluster, "RemoveMember", cluster_pb2.RemoveMemberRequest(id="nobody"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    # Bad input names the field.
    with pytest.raises(grpc.RpcError) as bad:
        change(
            cluster,
            "AddMember",
            cluster_pb2.AddMemberRequest(id="r 5", raft_address="x", grpc_address="y"),
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "id" in bad.value.details()
    with pytest.raises(grpc.RpcError) as empty:
        change(cluster, "PromoteMember", cluster_pb2.PromoteMemberRequest(id=""))
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT, empty.value
    change(cluster, "RemoveMember", cluster_pb2.RemoveMemberRequest(id="r4"))
    assert "r4" not in members_of(cluster)

    # With one voter down: removing another would leave no quorum; adding is unsafe.
    down = cluster.replicas[2]
    down.kill()
    live = cluster.replicas[:2]
    victim = cluster.replicas[1]
    wait_for(lambda: not members_of(cluster, live)[down.id].reachable, f"{down.id} to look down")
    error = refused(cluster, "RemoveMember", cluster_pb2.RemoveMemberRequest(id=victim.id))
    assert "quorum" in error.details() and "--force" in error.details()
    add = ("member", "add", "r6", "--raft-address", "127.0.0.1:9", "--grpc-address")
    add += ("127.0.0.1:8", "--endpoints", ",".join(r.endpoint for r in live))
    unsafe = regraft(*add)
    assert unsafe.returncode == 1
    assert "CLUSTER_UNHEALTHY: refusing to add 'r6'" in unsafe.stderr
    assert down.id in unsafe.stderr and "--force" in unsafe.stderr
    assert sorted(members_of(cluster, live)) == ["r1", "r2", "r3"]
    # The operator's explicit --force overrides the refusal.
    forced = regraft(*add, "--force")
    assert forced.returncode == 0, forced.stderr
    assert members_of(cluster, live)["r6"].membership == Role.LEARNER


def test_a_forced_removal_below_quorum_waits_for_the_voter_that_is_down(cluster):
    """--force removes a voter although the voters left cannot reach a quorum while
    one of them is down: the removal cannot commit until that one is back (nothing is
    lost meanwhile), and the same command then finishes it."""
    leader = cluster.wait_for_leader()
    down, victim = [r for r in cluster.replicas if r is not leader]
    with cluster.client() as client:
        before = push(client, "force/app", "before", "before")
    down.kill()
    live = [leader, victim]
    wait_for(lambda: not members_of(cluster, live)[down.id].reachable, f"{down.id} to look down")
    remove = cluster_pb2.RemoveMemberRequest(id=victim.id, force=True)
    with pytest.raises(grpc.RpcError) as stuck:
        call_leader(",".join(r.endpoint for r in live), "RemoveMember", remove, 4.0)
    assert stuck.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    down.start()
    remaining = [leader, down]
    change(cluster, "RemoveMember", remove, among=remaining)
    assert sorted(members_of(cluster, remaining)) == sorted(r.id for r in remaining)
    wait_for(lambda: not victim.running, f"the removed {victim.id} to stop by itself")
    with cluster.client(remaining) as client:
        after = push(client, "force/app", "after", "after")
        for tag, pushed in (("before", before), ("after", after)):
            assert client.get_manifest("force/app", tag).digest == pushed.digest


def _refusal_once_it_answers(cluster, member_id: str) -> grpc.RpcError | None:
    error = refused(cluster, "PromoteMember", cluster_pb2.PromoteMemberRequest(id=member_id))
    return None if "LEARNER_UNREACHABLE" in error.details() else error


def test_member_cli_and_leadership_transfer(cluster):
    endpoints = ",".join(cluster.endpoints)
    before = cluster.wait_for_leader()
    target = next(r for r in cluster.replicas if r is not before)
    out = _cli("leader", "transfer", "--to", target.id, "--endpoints", endpoints).stdout
    assert f"leader is now {target.id}" in out
    assert cluster.wait_for_leader() is target
    listing = _cli("member", "list", "--endpoints", endpoints).stdout
    lines = listing.splitlines()
    assert lines[0].split()[:2] == ["ID", "ROLE"]
    assert [line.split()[0] for line in lines[1:]] == ["r1", "r2", "r3"]
    assert all(line.split()[1] == "voter" for line in lines[1:])
    leader_line = next(line for line in lines[1:] if line.startswith(target.id))
    assert "*" in leader_line.split()

    # add prints how to start the learner; removing a learner changes no voter count.
    added = _cli(
        *("member", "add", "r4", "--raft-address", "127.0.0.1:9", "--grpc-address"),
        *("127.0.0.1:8", "--endpoints", endpoints),
    )
    assert "r4 is a learner" in added.stdout and "regraft member promote r4" in added.stdout
    assert "regraft serve --join --id r4" in added.stdout
    assert not _cli("member", "remove", "r4", "--endpoints", endpoints).stderr
    # Two voters tolerate no more failures than one: the CLI says so.
    follower = next(r for r in cluster.replicas if r is not target)
    removed = _cli("member", "remove", follower.id, "--endpoints", endpoints)
    assert [line.split()[0] for line in removed.stdout.splitlines()[1:]] == sorted(
        r.id for r in cluster.replicas if r is not follower
    )
    assert (
        "warning: 2 voters tolerate no more failed replicas than 1 do; an odd number is "
        "recommended" in removed.stderr
    )


def _cli(*args: str) -> subprocess.CompletedProcess:
    """`regraft ARGS`, which must succeed."""
    done = regraft(*args, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def test_a_learner_running_older_code_is_not_promoted(cluster):
    """It would apply entries the way of an older machine version (storage/versions.py):
    the promotion is refused, and the learner itself stops once it sees the version."""
    old = cluster.new_member("r4")
    old.env = {**old.env, "REGRAFT_MACHINE_VERSION": "1"}
    request = cluster_pb2.AddMemberRequest(
        id="r4", raft_address=old.config.raft_address, grpc_address=old.endpoint
    )
    change(cluster, "AddMember", request)
    old.start()
    refusals = []

    def kept_out():
        try:
            change(cluster, "PromoteMember", cluster_pb2.PromoteMemberRequest(id="r4"))
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
            refusals.append(e.details())
            return not old.running
        raise AssertionError("a learner on older code was promoted")

    wait_for(kept_out, "the learner on older code to stop")
    assert old.process.returncode == 1
    refusal = f"the cluster applies machine version {LATEST}, newer than this code supports (1)"
    assert refusal in old.log()
    too_old = [d for d in refusals if "LEARNER_TOO_OLD" in d]
    for details in too_old:  # if asked while it still ran
        assert f"supports machine version 1, and the cluster applies version {LATEST}" in details
    assert members_of(cluster)["r4"].membership == Role.LEARNER


def test_leadership_moves_under_continuous_writes(cluster):
    """PySyncObj hands over only to a voter whose log matches the leader's last entry at
    that instant, which continuous writes almost never allow: the leader holds new
    proposals back for a moment (cluster/raft.py). Before, a transfer under load took
    up to 40 s or failed; no acknowledged write may be lost either way."""
    writers = [Writer(cluster, prefix=f"m{i}-") for i in range(8)]
    for writer in writers:
        writer.start()
    try:
        for _ in range(3):
            before = cluster.wait_for_leader()
            started = time.monotonic()
            moved = change(cluster, "TransferLeadership", cluster_pb2.TransferLeadershipRequest())
            assert moved.leader_id != before.id
            assert time.monotonic() - started < 20, "a liveness bound, generous on 2 cores"
    finally:
        for writer in writers:
            writer.stop()
    assert all(writer.acked for writer in writers)
    for writer in writers:
        assert_all_present(cluster, writer.acked, writer.digest, cluster.replicas)


def test_a_learner_compacts_its_log(make_cluster):
    """A learner takes snapshots too (PySyncObj counts it as a None node)."""
    cluster = make_cluster(snapshot_entries=50)
    learner = cluster.new_member("r4")
    change(
        cluster,
        "AddMember",
        cluster_pb2.AddMemberRequest(
            id="r4", raft_address=learner.config.raft_address, grpc_address=learner.endpoint
        ),
    )
    learner.start()
    with cluster.client(cluster.replicas[:3]) as client:
        digest = push(client, "compact/app", "base", seed="compact").digest
        for i in range(300):
            client.put_tag("compact/app", f"t{i}", digest)
    wait_for(
        lambda: cluster.metric(learner, SNAPSHOTS, outcome="taken") >= 1,
        "a snapshot on the learner",
    )
    assert cluster.metric(learner, SNAPSHOTS, outcome="failed") == 0
    assert members_of(cluster)["r4"].membership == Role.LEARNER


def test_a_learner_joins_by_snapshot_once_the_log_is_compacted(make_cluster):
    """The entries it lacks are gone from every member's log: only a snapshot brings it
    in, and it is promoted once it has caught up."""
    cluster = make_cluster(snapshot_entries=50)
    with cluster.client() as client:
        digest = push(client, "compact/app", "base", seed="compact").digest
        for i in range(150):
            client.put_tag("compact/app", f"t{i}", digest)
    wait_for(
        lambda: all(cluster.metric(r, SNAPSHOTS, outcome="taken") >= 1 for r in cluster.replicas),
        "every member to compact its log",
    )
    joined = join(cluster, "r4")
    assert cluster.metric(joined, "regraft_snapshot_installs_total") >= 1
    assert members_of(cluster)["r4"].membership == Role.VOTER
    cluster.wait_converged()


def test_a_second_concurrent_change_is_refused(cluster):
    """While one change runs (here: a promote waiting on a learner that never answers),
    another is refused rather than interleaved."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers: the Status call times out
    try:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        request = cluster_pb2.AddMemberRequest(
            id="r4", raft_address="127.0.0.1:9", grpc_address=address
        )
        change(cluster, "AddMember", request)
        outcome: list[grpc.RpcError] = []

        def promote():
            with pytest.raises(grpc.RpcError) as first:
                change(cluster, "PromoteMember", cluster_pb2.PromoteMemberRequest(id="r4"))
            outcome.append(first.value)

        slow = threading.Thread(target=promote)
        slow.start()
        silent.settimeout(30)
        waiting, _ = silent.accept()  # the leader is now asking the learner (for 3 s)
        second = refused(
            cluster,
            "AddMember",
            cluster_pb2.AddMemberRequest(
                id="r5", raft_address="127.0.0.1:10", grpc_address="127.0.0.1:11"
            ),
        )
        slow.join(30)
        waiting.close()
        assert "MEMBER_CHANGE_IN_PROGRESS" in second.details()
        assert "LEARNER_UNREACHABLE" in outcome[0].details()
        assert sorted(members_of(cluster)) == ["r1", "r2", "r3", "r4"]
    finally:
        silent.close()


def test_replicas_bound_to_every_interface_are_listed_where_they_are_reached(tmp_path):
    """In containers the API binds 0.0.0.0: the member table (which the others dial,
    and which leader hints come from) must hold the advertised address instead. A
    table seeded without one (before advertise_grpc_address existed) names 0.0.0.0 for
    the seeding leader: restarted with advertise_grpc_address, each replica publishes
    its own."""
    local = LocalCluster(str(tmp_path))
    for replica in local.replicas:
        port = split_address(replica.config.grpc_address)[1]
        replica.config = replace(replica.config, grpc_address=f"0.0.0.0:{port}")
    try:
        local.start()
        local.wait_for_leader()
        local.wait_seeded()

        def listed() -> dict[str, str]:
            with local.client() as client:
                members = client.cluster().ListMembers(cluster_pb2.ListMembersRequest())
            return {m.id: m.grpc_address for m in members.members}

        assert [a for a in listed().values() if a.startswith("0.0.0.0:")], listed()
        local.stop()
        for replica in local.replicas:
            port = split_address(replica.config.grpc_address)[1]
            replica.config = replace(replica.config, advertise_grpc_address=f"127.0.0.1:{port}")
        advertised = {r.id: r.config.advertised_grpc_address for r in local.replicas}
        local.start()
        local.wait_for_leader()
        wait_for(lambda: listed() == advertised, "the table to list every member")
    finally:
        local.stop()


def test_a_wiped_replica_with_an_old_configuration_deposes_no_leader(cluster):
    """A machine replaced after the membership changed, started with the configuration
    it had: on an empty disk it knows neither the leader nor the current voters, and it
    refuses the leader's connection. It used to raise its term every election timeout,
    and each higher term it sent a voter deposed the healthy leader (an outside review,
    after removing r1, adding r4 and moving leadership there: three elections, writes
    failing for seconds). Here its configuration lists only a follower: the same
    situation, without the membership changes. Without state it now asks first."""
    leader = cluster.wait_for_leader()
    wiped = next(r for r in cluster.replicas if r is not leader)
    other = next(r for r in cluster.replicas if r not in (leader, wiped))
    wiped.stop()
    wiped.wipe()
    wiped.config = replace(wiped.config, peers=[p for p in wiped.config.peers if p.id == other.id])
    wiped.start()
    wait_for(lambda: role_of(cluster, wiped) is not None, f"the wiped {wiped.id} to answer")
    term = cluster.status(leader).term
    with cluster.client([leader, other]) as client:
        ends = time.monotonic() + 3 * ELECTION_TIMEOUT_MAX
        while time.monotonic() < ends:
            push(client, "wiped/app", "v1", seed="old-configuration")
            time.sleep(0.2)
    assert cluster.status(leader).term == term, "an election was held"
    assert cluster.wait_for_leader([leader, other]) is leader
    # It says why it hears from no leader, when the leader is the one that dials it.
    if leader.config.raft_address > wiped.config.raft_address:
        said = f"a peer connected as {leader.config.raft_address}, which is not among"
        wait_for(lambda: said in wiped.log(), f"{wiped.id} to log the unknown leader")
