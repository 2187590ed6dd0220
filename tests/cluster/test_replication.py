"""Three real replicas on loopback: replication, failover, restarts, catch-up."""

import itertools
import json
import threading
import time

import grpc
import pytest

from cluster.client import STALE
from tests.cluster.harness import image, push
from tests.polling import wait_for


def test_writes_through_any_replica_and_reads_agree(cluster):
    leader = cluster.wait_for_leader()
    followers = [r for r in cluster.replicas if r is not leader]
    written = {}
    for i, replica in enumerate([*followers, leader] * 2):
        with cluster.client([replica]) as client:
            answer = push(client, "team/app", f"v{i}", seed=f"s{i}")
        written[f"v{i}"] = (answer.digest, answer.revision)
    last = max(revision for _, revision in written.values())
    for replica in cluster.replicas:
        for tag, (digest, _) in written.items():
            assert cluster.tag_on(replica, "team/app", tag, min_revision=last) == digest
        with cluster.client([replica]) as client:
            listed = client.list_tags("team/app", consistency=STALE, min_revision=last)
        assert listed.tags == sorted(written)
    cluster.wait_converged()
    # With three voters a follower commits what it forwarded on the leader's notice
    # (cluster/commitnotice.py); the leader commits by its replies, as Raft does.
    early = "regraft_commits_on_leader_notice_total"
    assert all(cluster.metric(follower, early) >= 1 for follower in followers)
    assert cluster.metric(leader, early) == 0


def test_large_manifests_replicate_whole_under_writes(cluster):
    """Entries of 1 MiB and more travel in pieces, which PySyncObj's follower could not
    put back together when the pickle is longer than the command (cluster/transport.py):
    here non-ASCII annotations double it."""
    leader = cluster.wait_for_leader()
    follower = next(r for r in cluster.replicas if r is not leader)
    blobs, manifest = image("large")
    written = {}
    writer = Writer(cluster)
    writer.start()
    try:
        with cluster.client([follower], timeout=60.0) as client:
            for digest, size in blobs:
                client.link_blob("big/app", digest, size)
            for tag, characters in (("small", 600_000), ("limit", 2_000_000)):
                content = json.loads(manifest) | {"annotations": {"note": "é" * characters}}
                encoded = json.dumps(content, ensure_ascii=False).encode()
                written[tag] = (encoded, client.put_manifest("big/app", tag, encoded).revision)
    finally:
        writer.stop()
    last = max(revision for _, revision in written.values())
    for replica in cluster.replicas:
        with cluster.client([replica], timeout=60.0) as client:
            for tag, (content, _) in written.items():
                got = client.get_manifest("big/app", tag, consistency=STALE, min_revision=last)
                assert got.content == content, (replica.id, tag)
    assert_all_present(cluster, writer.acked, writer.digest)
    cluster.wait_converged()
    for replica in cluster.replicas:
        assert "failed _onTick" not in replica.log(), replica.describe()


class Writer(threading.Thread):
    """Writes tags as fast as it can and records which writes were acknowledged."""

    def __init__(self, cluster, replicas=None, prefix="w"):
        super().__init__(daemon=True)
        self.client = cluster.client(replicas, timeout=20.0)
        with cluster.client(replicas) as client:
            self.digest = push(client, "load/app", "base", seed=prefix).digest
        self.prefix = prefix
        self.acked: dict[str, int] = {}
        self.failed = 0
        self.last_started = 0.0  # when the last acknowledged write was sent
        self.ack_times: list[float] = []
        self.stopping = threading.Event()

    def run(self):
        i = 0
        while not self.stopping.is_set():
            tag = f"{self.prefix}{i}"
            started = time.monotonic()
            try:
                self.acked[tag] = self.client.put_tag("load/app", tag, self.digest).revision
                self.last_started = started
                self.ack_times.append(time.monotonic())
            except grpc.RpcError:
                self.failed += 1
            except ValueError:
                if not self.stopping.is_set():
                    raise
            i += 1

    def stop(self):
        """Stop writing. A write in flight is abandoned, its outcome unknown, rather than
        retried until its deadline (20 s when every replica was killed)."""
        self.stopping.set()
        self.client.close()
        self.join(60)
        assert not self.is_alive(), "the writer did not stop"

    def longest_gap(self, since: float) -> float:
        """The longest time without an acknowledgement after `since` (seconds)."""
        times = [since, *(t for t in self.ack_times if t > since)]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def assert_all_present(cluster, acked: dict[str, int], digest: str, replicas=None):
    last = max(acked.values())
    for replica in replicas or cluster.replicas:
        with cluster.client([replica], timeout=60.0) as client:
            tags, after = set(), ""
            while True:
                page = client.list_tags(
                    "load/app", n=1000, last=after, consistency=STALE, min_revision=last
                )
                tags.update(page.tags)
                if not page.more:
                    break
                after = page.tags[-1]
        missing = sorted(set(acked) - tags)
        assert not missing, f"{replica.id} lost acknowledged writes: {missing[:10]}"
    assert (
        cluster.tag_on(
            replicas[0] if replicas else cluster.replicas[0], "load/app", next(iter(acked)), last
        )
        == digest
    )


def test_kill_leader_during_writes_loses_nothing(cluster):
    writer = Writer(cluster)
    writer.start()
    while len(writer.acked) < 50:
        time.sleep(0.05)
    leader = cluster.wait_for_leader()
    leader.kill()
    killed_at = time.monotonic()
    survivors = [r for r in cluster.replicas if r is not leader]
    # Wait for a write that was sent after the leader died to be acknowledged.
    while writer.last_started < killed_at:
        assert time.monotonic() - killed_at < 30, "no write succeeded after the leader died"
        time.sleep(0.02)
    recovered = time.monotonic() - killed_at
    new_leader = cluster.wait_for_leader(survivors)
    assert new_leader is not leader
    # The failover is in the logs an operator reads (at INFO, as replicas run).
    term = cluster.status(new_leader).term
    said = f"leader in term {term}; leader: {new_leader.config.raft_address}"
    wait_for(lambda: said in new_leader.log(), f"{new_leader.id} to log that it leads")
    time.sleep(0.5)
    writer.stop()
    # The bound the issue sets: a new leader accepts writes within 5 s.
    assert recovered < 5.0, f"writes resumed only {recovered:.1f}s after the leader died"
    leader.start()
    assert_all_present(cluster, writer.acked, writer.digest)
    cluster.wait_converged()


def test_all_replicas_killed_and_restarted_keep_acknowledged_writes(cluster):
    writer = Writer(cluster)
    writer.start()
    while len(writer.acked) < 200:
        time.sleep(0.05)
    for replica in cluster.replicas:
        replica.kill()
    writer.stop()
    assert writer.acked
    for replica in cluster.replicas:
        replica.start()
    cluster.wait_for_leader()
    assert_all_present(cluster, writer.acked, writer.digest)
    cluster.wait_converged()


def test_write_without_quorum_fails_within_its_deadline(cluster):
    leader = cluster.wait_for_leader()
    followers = [r for r in cluster.replicas if r is not leader]
    for follower in followers:
        follower.kill()
    with cluster.client([leader], timeout=3.0, attempt_timeout=3.0) as client:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as failure:
            push(client, "lonely/app", "v1", seed="alone")
        took = time.monotonic() - started
    assert failure.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert took < 10.0, f"a write without quorum hung for {took:.1f}s"
