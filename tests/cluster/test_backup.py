"""Backup while writes go on, verify, restore into a new cluster: real processes and CLI."""

import hashlib
import os
import re
import time

import grpc
import pytest

from cluster.client import Client
from cluster.config import ReplicaConfig
from regraft.v1 import cluster_pb2
from tests.cluster.harness import ROOT, LocalCluster, ReplicaProcess, free_port, regraft
from tests.cluster.test_membership import join, members_of
from tests.cluster.test_replication import Writer


def field(output: str, name: str) -> str:
    """The value printed after `name` on its own line of CLI output."""
    found = re.search(rf"^\s+{name}\s+(\S+)", output, re.MULTILINE)
    assert found, f"no {name!r} in:\n{output}"
    return found.group(1)


def all_tags(client, repository: str) -> set[str]:
    tags, after = set(), ""
    while True:
        page = client.list_tags(repository, n=1000, last=after)
        tags.update(page.tags)
        if not page.more:
            return tags
        after = page.tags[-1]


def wait_leading_alone(replica: ReplicaProcess, timeout: float = 60.0) -> None:
    """Until the replica leads a cluster of one."""
    deadline = time.monotonic() + timeout
    status = None
    with Client([replica.endpoint]) as client:
        while time.monotonic() < deadline:
            assert replica.running, replica.log()
            try:
                status = client.status(replica.endpoint, timeout=1.0)
            except grpc.RpcError:
                status = None
            if status and status.leader_id == replica.id and len(status.members) == 1:
                return
            time.sleep(0.2)
    raise AssertionError(f"{replica.id} does not lead alone: {status}\n{replica.log()[-3000:]}")


@pytest.fixture
def solo(tmp_path):
    """Start single replicas on given data directories; all stopped afterwards."""
    started = []

    def start(config: ReplicaConfig) -> ReplicaProcess:
        replica = ReplicaProcess(config, str(tmp_path), {**os.environ, "PYTHONPATH": ROOT})
        started.append(replica)
        replica.start()
        wait_leading_alone(replica)
        return replica

    try:
        yield start
    finally:
        for replica in started:
            replica.stop()


def test_backup_during_writes_restores_into_a_new_cluster(make_cluster, solo, tmp_path):
    cluster = make_cluster()
    secret = os.path.join(cluster.directory, "cluster.secret")
    writer = Writer(cluster)
    writer.start()
    try:
        while len(writer.acked) < 100:
            time.sleep(0.05)
        out = str(tmp_path / "backups" / "b1.regraft")
        os.makedirs(os.path.dirname(out))
        taken = regraft("backup", "--endpoint", cluster.endpoints[1], "--out", out)
        assert taken.returncode == 0, taken.stderr
        acked_after = len(writer.acked)
        while len(writer.acked) < acked_after + 50:  # writes went on; keep going a little
            time.sleep(0.05)
    finally:
        writer.stop()
    revision = int(field(taken.stdout, "revision"))
    with open(out, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == field(taken.stdout, "sha256")
    assert "100%" in taken.stderr  # the progress bar's last state
    assert os.listdir(os.path.dirname(out)) == ["b1.regraft"]  # no temporary left
    source_cluster = field(taken.stdout, "cluster")
    # The backup is the state at one revision: every write acknowledged at or below
    # it, none acknowledged above it.
    before = {tag for tag, rev in writer.acked.items() if rev <= revision}
    after = {tag for tag, rev in writer.acked.items() if rev > revision}
    assert before and after

    checked = regraft("backup", "verify", out)
    assert checked.returncode == 0, checked.stderr
    assert int(field(checked.stdout, "revision")) == revision
    state_hash = field(checked.stdout, "state hash")
    assert state_hash == field(taken.stdout, "state hash")
    # Cut short (a copy that stopped half-way): refused by both, and the empty data
    # directory given to restore stays empty.
    truncated, empty = str(tmp_path / "truncated.regraft"), str(tmp_path / "empty")
    with open(out, "rb") as f, open(truncated, "wb") as g:
        g.write(f.read()[: os.path.getsize(out) // 2])
    os.mkdir(empty)
    for refused in (
        regraft("backup", "verify", truncated),
        regraft("restore", truncated, "--data-dir", empty),
    ):
        assert refused.returncode == 1
        assert f"{truncated}: checksum mismatch: the file is truncated or corrupt" in (
            refused.stderr
        )
    assert os.listdir(empty) == []

    new = ReplicaConfig(
        id="n1",
        data_dir=str(tmp_path / "restored"),
        raft_address=f"127.0.0.1:{free_port()}",
        grpc_address=f"127.0.0.1:{free_port()}",
        secret_file=secret,
    )
    restored = regraft(
        *("restore", out, "--data-dir", new.data_dir, "--bump-revision", "1000"),
        *("--id", new.id, "--raft-address", new.raft_address),
        *("--grpc-address", new.grpc_address),
    )
    assert restored.returncode == 0, restored.stderr
    new_cluster = field(restored.stdout, "cluster")
    assert new_cluster != source_cluster

    replica = solo(new)
    with cluster.client([replica], timeout=60.0) as client:
        status = client.status(replica.endpoint, timeout=5.0)
        # Nothing applied since the restore: the state the backup holds (with the
        # new member table, so another hash).
        assert status.revision == revision
        assert [m.id for m in status.members] == ["n1"]
        table = client.cluster().ListMembers(cluster_pb2.ListMembersRequest(), timeout=10)
        assert [(m.id, m.grpc_address) for m in table.members] == [("n1", new.grpc_address)]
        tags = all_tags(client, "load/app")
        assert before <= tags
        assert not tags & after
        assert client.get_manifest("load/app", "base").digest == writer.digest
        # It takes writes, numbered above the backup's revision and the bump.
        answer = client.put_tag("load/app", "after-restore", writer.digest)
        assert answer.revision > revision + 1000
        assert client.get_manifest("load/app", "after-restore").digest == writer.digest
    # A backup of the restored cluster carries its new identity.
    again = str(tmp_path / "backups" / "b2.regraft")
    second = regraft("backup", "--endpoint", replica.endpoint, "--out", again)
    assert second.returncode == 0, second.stderr
    assert field(second.stdout, "cluster") == new_cluster
    # Linearizable: it reflects the acknowledged write (and the read barriers since).
    assert int(field(second.stdout, "revision")) >= answer.revision

    # The restored cluster grows as any other: a second replica joins it and ends with
    # the same state.
    restored = LocalCluster(str(tmp_path / "restored-cluster"), size=0)
    restored.replicas = [replica]
    try:
        joined = join(restored, "n2", among=[replica])
        restored.wait_converged([replica, joined])
        assert sorted(members_of(restored, [replica])) == ["n1", "n2"]
    finally:
        restored.stop()


def test_backup_and_restore_refusals_change_nothing(tmp_path):
    out = str(tmp_path / "b.regraft")
    unreachable = regraft("backup", "--endpoint", f"127.0.0.1:{free_port()}", "--out", out)
    assert unreachable.returncode == 1
    assert "backup from 127.0.0.1:" in unreachable.stderr and "UNAVAILABLE" in unreachable.stderr
    assert os.listdir(tmp_path) == []

    with open(out, "wb") as f:
        f.write(b"REGRAFT-SNAP-v1\n" + os.urandom(200))
    data_dir = str(tmp_path / "r1")
    corrupt = regraft("restore", out, "--data-dir", data_dir)
    assert corrupt.returncode == 1
    assert f"{out}: checksum mismatch: the file is truncated or corrupt" in corrupt.stderr
    assert os.listdir(tmp_path) == ["b.regraft"]
    verify = regraft("backup", "verify", out)
    assert verify.returncode == 1
    assert "checksum mismatch" in verify.stderr
