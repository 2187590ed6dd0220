"""The short profile: one fault each, under a concurrent compare-and-set workload."""

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


@pytest.mark.parametrize(("fault", "seed"), CASES, ids=[f for f, _ in CASES])
def test_invariants_hold_through(fault, seed, proxied_cluster, tmp_path):
    cluster, network = proxied_cluster(env={"REGRAFT_TRACE_SYNCED": "1"})
    report = scenario.run(cluster, network, [fault], seed, str(tmp_path))
    print(report.summary())
    assert report.outcomes["ok"] > 50, "the workload hardly ran: the test proves nothing"
    assert not report.violations, report.summary()
