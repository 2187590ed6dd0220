"""The long profile: `pytest -m soak tests/robustness -s`. A random schedule of every
fault kind, one after another, for REGRAFT_SOAK_SECONDS (default 300) under seed
REGRAFT_SOAK_SEED (default 1); prints the summary."""

import os
import random

import pytest

from tests.robustness import scenario
from tests.robustness.faults import FAULTS

# One fault cycle takes about hold + settle + recovery seconds.
_CYCLE = 8.0


@pytest.mark.soak
@pytest.mark.timeout(0)
def test_soak(proxied_cluster, tmp_path):
    seconds = float(os.environ.get("REGRAFT_SOAK_SECONDS", "300"))
    seed = int(os.environ.get("REGRAFT_SOAK_SEED", "1"))
    rng = random.Random(seed)
    schedule = [rng.choice(sorted(FAULTS)) for _ in range(max(1, int(seconds / _CYCLE)))]
    cluster, network = proxied_cluster(env={"REGRAFT_TRACE_SYNCED": "1"}, disk="512m")
    report = scenario.run(cluster, network, schedule, seed, str(tmp_path), writers=6, hold=4.0)
    print("\n" + report.summary())
    assert not report.violations, report.summary()
