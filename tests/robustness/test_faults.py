"""The short profile: one fault each, under a concurrent compare-and-set workload."""

import os

import pytest

from tests.robustness import scenario

# One fixed seed per fault: a failure names the seed, and rerunning it replays the
# same workload choices and fault targets (timing still differs from run to run).
CASES = [
    ("kill-leader", 11),
    ("pause-leader", 12),
    ("partition-leader", 13),
    ("slow-flaky-network", 14),
    ("restart-all", 15),
    ("power-loss", 16),
    ("replace-leader", 17),
]


# On direct links, with the log compacted every 200 entries under the workload: a
# replica rebuilds its state from a snapshot after a power cut, a new member joins by
# snapshot, a new leader sends them.
SNAPSHOT_CASES = [("power-loss", 21), ("replace-follower", 22), ("kill-leader", 23)]


@pytest.mark.parametrize(("fault", "seed"), CASES, ids=[f for f, _ in CASES])
def test_invariants_hold_through(fault, seed, proxied_cluster, tmp_path):
    cluster, network = proxied_cluster(env={"REGRAFT_TRACE_SYNCED": "1"})
    report = scenario.run(cluster, network, [fault], seed, str(tmp_path))
    print(report.summary())
    assert report.outcomes["ok"] > 50, "the workload hardly ran: the test proves nothing"
    assert not report.violations, report.summary()


@pytest.mark.parametrize(("fault", "seed"), SNAPSHOT_CASES, ids=[f for f, _ in SNAPSHOT_CASES])
def test_invariants_hold_with_snapshots_through(fault, seed, make_cluster, tmp_path):
    cluster = make_cluster(env={"REGRAFT_TRACE_SYNCED": "1"}, snapshot_entries=200)
    report = scenario.run(cluster, None, [fault], seed, str(tmp_path))
    print(report.summary())
    assert report.outcomes["ok"] > 50, "the workload hardly ran: the test proves nothing"
    assert not report.violations, report.summary()
    snapshots = [r.id for r in cluster.replicas if os.path.exists(_snapshot_of(r))]
    assert snapshots, "no replica took a snapshot: the test proves nothing"


def _snapshot_of(replica) -> str:
    return os.path.join(replica.config.data_dir, "raft.snapshot")
