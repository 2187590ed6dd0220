"""Elections on real processes: a replica that was away does not depose a healthy leader
when it comes back (PreVote, cluster/prevote.py)."""

import time

import grpc
import pytest

from tests.polling import wait_for

AWAY = 4.0  # seconds paused: past the longest election timeout (2 s)
QUIET = 6.0  # seconds watched once it has come back


@pytest.mark.parametrize("paused", ["follower", "leader"])
def test_a_replica_paused_and_resumed_follows_the_leader_without_an_election(cluster, paused):
    """Without PreVote a follower paused for 4 s found its election timeout long passed
    when it resumed, raised its term at once, and the leader stepped down (term 1 to
    3, another leader)."""
    leader = cluster.wait_for_leader()
    away = leader if paused == "leader" else next(r for r in cluster.replicas if r is not leader)
    away.pause()
    try:
        if away is leader:
            leader = cluster.wait_for_leader(among=[r for r in cluster.replicas if r is not away])
        term = cluster.status(leader).term
        time.sleep(AWAY)
    finally:
        away.resume()
    wait_for(lambda: _leader_seen_by(cluster, away) == leader.id, f"{away.id} to follow", 30.0)
    deadline = time.monotonic() + QUIET
    while time.monotonic() < deadline:
        for replica in cluster.replicas:
            status = cluster.status(replica)
            # The one back may not know the leader for a moment (its links were cut
            # while it was away): it asks, and must not be elected nor raise the term.
            known = (leader.id, "") if replica is away else (leader.id,)
            assert status.leader_id in known and status.term == term, (
                f"{replica.id} saw leader {status.leader_id!r} in term {status.term} after "
                f"{away.id} resumed; {leader.id} led in term {term}"
            )
        time.sleep(0.2)


def _leader_seen_by(cluster, replica) -> str | None:
    try:
        return cluster.status(replica).leader_id
    except grpc.RpcError:  # still waking up
        return None
