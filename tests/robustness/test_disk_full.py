"""A full disk under every replica: no acknowledgement without persistence, no
corruption, clear errors, and recovery once space returns."""

import grpc
import pytest

from tests.robustness import scenario
from tests.robustness.faults import DiskFull
from tests.robustness.workload import REPOSITORY, manifest, prepare


def test_full_disks_lose_nothing_and_recover(proxied_cluster, tmp_path):
    """Writes stall while every disk is full; afterwards, and after a restart of every
    replica, every acknowledged write is on every replica and the history is
    linearizable. (The restart used to lose acknowledged writes: a torn journal record
    written at ENOSPC hid later ones; test_journal_full_disk.py.)"""
    cluster, network = proxied_cluster(disk="32m")
    report = scenario.run(cluster, network, ["disk-full", "restart-all"], 21, str(tmp_path))
    print(report.summary())
    assert report.outcomes["ok"] > 50
    assert not report.violations, report.summary()


def test_full_disks_give_a_clear_error(proxied_cluster, tmp_path):
    cluster, network = proxied_cluster(disk="32m")
    with cluster.client(timeout=30.0) as client:
        prepare(client)
        content = manifest("disk-full")
        digest = client.put_manifest(REPOSITORY, "before", content).digest
    fault = DiskFull(cluster, network, None)
    fault.inject()
    try:
        # What is left in the last page of each file still takes a few small writes.
        with (
            cluster.client(timeout=5.0, attempt_timeout=2.0) as client,
            pytest.raises(grpc.RpcError) as refused,
        ):
            for i in range(500):
                client.put_tag(REPOSITORY, f"during-{i}", digest)
    finally:
        fault.heal()
    code, details = refused.value.code(), refused.value.details() or ""
    says_why = any(word in details.lower() for word in ("disk", "space", "full"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED or (
        code == grpc.StatusCode.UNAVAILABLE and says_why
    ), f"a full disk answered {code.name}: {details}"
