"""Quorum lost for good: emergency repair makes the survivor a cluster of one, and
two new replicas join it."""

import os
import re
import time

from regraft.v1 import cluster_pb2
from tests.cluster.harness import regraft
from tests.cluster.test_backup import all_tags, wait_leading_alone
from tests.cluster.test_membership import join
from tests.cluster.test_replication import Writer


def test_emergency_repair_of_the_last_survivor(make_cluster):
    cluster = make_cluster()
    writer = Writer(cluster)
    writer.start()
    try:
        while len(writer.acked) < 200:
            time.sleep(0.05)
        leader = cluster.wait_for_leader()
        # The survivor is a follower: it may lag the writes the others committed.
        survivor = next(r for r in cluster.replicas if r is not leader)
        for replica in cluster.replicas:
            if replica is not survivor:
                replica.kill()
    finally:
        writer.stop()
    data_dir = survivor.config.data_dir
    repair = ("emergency-repair", "--data-dir", data_dir, "--id", survivor.id)

    # Refused while the replica runs on its data directory.
    busy = regraft(*repair, "--yes")
    assert busy.returncode != 0
    assert "is in use by another regraft process: stop that replica first" in busy.stderr
    survivor.stop()
    files = sorted(os.listdir(data_dir))

    # Without --yes it asks; anything but "yes" changes nothing.
    declined = regraft(*repair, stdin="no\n")
    assert declined.returncode == 1
    assert "What may be lost" in declined.stdout and "aborted: nothing changed" in declined.stdout
    assert sorted(os.listdir(data_dir)) == files

    # Compared with another survivor's data directory, it names the most recent one
    # (and refuses, or asks, either way changing nothing when told no).
    lost = next(r for r in cluster.replicas if r is not survivor).config.data_dir
    compared = regraft(*repair, "--compare", lost, stdin="no\n")
    assert compared.returncode == 1
    rows = [line for line in compared.stdout.splitlines() if line.strip().startswith("/")]
    assert [row.split()[0] for row in rows] == [data_dir, lost]
    assert sum("<- most recent" in row for row in rows) == 1
    assert sorted(os.listdir(data_dir)) == files

    done = regraft(*repair, "--yes")
    assert done.returncode == 0, done.stderr
    row = re.search(rf"^\s+{re.escape(data_dir)}\s+(\d+)\s+(\d+)", done.stdout, re.MULTILINE)
    assert row, done.stdout
    applied, last_index = int(row.group(1)), int(row.group(2))
    assert applied <= last_index
    assert "is a single-replica cluster" in done.stdout

    # Restarted with its old configuration (peers and all), it leads alone.
    survivor.start()
    wait_leading_alone(survivor)
    kept = {tag for tag, revision in writer.acked.items() if revision <= applied}
    assert kept
    with cluster.client([survivor], timeout=60.0) as client:
        assert kept <= all_tags(client, "load/app")
        answer = client.put_tag("load/app", "after-repair", writer.digest)
        assert answer.revision > last_index
        status = client.status(survivor.endpoint)
        assert [m.id for m in status.members] == [survivor.id]
        # The replicated member table forgot the lost replicas too.
        table = client.cluster().ListMembers(cluster_pb2.ListMembersRequest(), timeout=10)
        assert [m.id for m in table.members] == [survivor.id]
        assert status.revision >= answer.revision

    # Two new replicas (new identities: the old machines are gone) join the survivor.
    joined = [join(cluster, member_id, among=[survivor]) for member_id in ("r4", "r5")]
    members = [survivor, *joined]
    cluster.wait_converged(members)
    for replica in joined:
        with cluster.client([replica], timeout=60.0) as client:
            assert kept | {"after-repair"} <= all_tags(client, "load/app")
