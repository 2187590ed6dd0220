"""ReplicaCollector and the snapshot-transfer counters: names, labels and values as
Prometheus will see them, from a fake Raft over a real LMDB store."""

import hashlib
import os

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cluster import metrics, transport
from cluster.config import Peer
from regraft.v1 import registry_pb2
from storage import commands, machine
from storage.db import Store
from storage.members import Member, Role

LEADER, FOLLOWER = 2, 0
R1, R2, R3 = "10.0.0.1:7411", "10.0.0.2:7411", "10.0.0.3:7411"


class FakeRaft:
    def __init__(self, status: dict, snapshot_path: str) -> None:
        self._status = status
        self.snapshot_path = snapshot_path
        self.last_snapshot_index = 40
        self.leader_changes = 3

    def status(self) -> dict:
        return self._status


class FakeMembers:
    _ids = {R1: "r1", R2: "r2", R3: "r3"}

    def by_raft_address(self, address: str) -> Peer:
        return Peer(self._ids[address], address, "")

    def table(self) -> list[Member]:
        roles = [Role.VOTER, Role.VOTER, Role.PROMOTING, Role.LEARNER, Role.LEARNER]
        return [Member(id=f"r{i}", role=role) for i, role in enumerate(roles, start=1)]


def raft_status(state: int, leader: str | None = R1) -> dict:
    return {
        "state": state,
        "leader": leader,
        "raft_term": 7,
        "commit_idx": 90,
        "last_applied": 88,
        "last_log_index": 100,
        "has_quorum": True,
        "peers": {R2: True, R3: False},
        f"match_idx_server_{R2}": 100,
        f"match_idx_server_{R3}": 60,
    }


@pytest.fixture
def store(tmp_path):
    opened = Store(str(tmp_path / "state"))
    digest = "sha256:" + hashlib.sha256(b"layer").hexdigest()
    command = commands.link_blob(
        registry_pb2.LinkBlobRequest(
            repository="app", digest=digest, size=5, media_type="application/octet-stream"
        )
    )
    batch = opened.batch()
    machine.apply(batch, 1, command.SerializeToString())
    batch.commit()
    yield opened
    opened.close()


def scrape(raft, store) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} of one collection, via the text format."""
    registry = CollectorRegistry()
    registry.register(metrics.ReplicaCollector(raft, store, FakeMembers(), "9.9.9"))
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_a_leader_exports_raft_peer_and_storage_state(tmp_path, store):
    snapshot = tmp_path / "raft.snapshot"
    snapshot.write_bytes(b"x" * 1234)
    got = scrape(FakeRaft(raft_status(LEADER), str(snapshot)), store)
    single = {name: values[()] for name, values in got.items() if () in values}
    assert single["regraft_has_leader"] == 1
    assert single["regraft_is_leader"] == 1
    assert single["regraft_term"] == 7
    assert single["regraft_commit_index"] == 90
    assert single["regraft_applied_index"] == 88
    assert single["regraft_last_log_index"] == 100
    assert single["regraft_has_quorum"] == 1
    assert single["regraft_snapshot_last_index"] == 40
    assert single["regraft_snapshot_size_bytes"] == 1234
    assert single["regraft_leader_changes_seen_total"] == 3
    assert single["regraft_revision"] == 1
    assert got["regraft_build_info"] == {(("version", "9.9.9"),): 1}
    assert got["regraft_members"] == {
        (("role", "voter"),): 2,
        (("role", "learner"),): 2,
        (("role", "promoting"),): 1,
        (("role", "removing"),): 0,
    }
    assert got["regraft_peer_reachable"] == {(("peer", "r2"),): 1, (("peer", "r3"),): 0}
    assert got["regraft_peer_match_index"] == {(("peer", "r2"),): 100, (("peer", "r3"),): 60}
    assert got["regraft_peer_lag_entries"] == {(("peer", "r2"),): 0, (("peer", "r3"),): 40}
    entries = {dict(labels)["kind"]: value for labels, value in got["regraft_entries"].items()}
    assert entries == {"repositories": 1, "manifests": 0, "tags": 0, "blobs": 1}
    sizes = store.stat()
    assert single["regraft_db_used_bytes"] == sizes["used_bytes"] > 0
    assert single["regraft_db_map_bytes"] == sizes["map_bytes"]
    assert single["regraft_db_file_bytes"] == sizes["file_bytes"]
    disk = os.statvfs(store.path)
    assert single["regraft_disk_total_bytes"] == disk.f_blocks * disk.f_frsize
    assert 0 < single["regraft_disk_free_bytes"] <= single["regraft_disk_total_bytes"]


def test_a_follower_exports_no_per_peer_progress(tmp_path, store):
    got = scrape(FakeRaft(raft_status(FOLLOWER), str(tmp_path / "none")), store)
    assert got["regraft_is_leader"] == {(): 0}
    assert got["regraft_has_leader"] == {(): 1}
    assert got["regraft_snapshot_size_bytes"] == {(): 0}  # no snapshot file yet
    assert "regraft_peer_lag_entries" not in got
    assert "regraft_peer_match_index" not in got
    assert set(got["regraft_peer_reachable"]) == {(("peer", "r2"),), (("peer", "r3"),)}


def test_without_a_leader_has_leader_is_zero(tmp_path, store):
    got = scrape(FakeRaft(raft_status(FOLLOWER, leader=None), str(tmp_path / "none")), store)
    assert got["regraft_has_leader"] == {(): 0}


def test_a_starting_replica_exports_storage_but_no_raft_state(tmp_path, store):
    got = scrape(FakeRaft({}, str(tmp_path / "none")), store)
    assert "regraft_has_leader" not in got and "regraft_term" not in got
    assert got["regraft_members"][(("role", "voter"),)] == 2
    assert got["regraft_revision"] == {(): 1}
    assert ("version", "9.9.9") in next(iter(got["regraft_build_info"]))


def test_outcome_counters_exist_before_the_first_event():
    """rate() misses the first increment of a series that appears with it."""
    text = generate_latest().decode()
    for outcome in ("committed", "failed"):
        assert f'regraft_proposals_total{{outcome="{outcome}"}}' in text
    for outcome in ("taken", "failed"):
        assert f'regraft_snapshots_total{{outcome="{outcome}"}}' in text


def test_snapshot_chunks_are_counted_and_other_messages_are_not():
    counter = metrics.snapshot_sent_bytes
    before = counter._value.get()
    transport._count_snapshot_chunk(counter, {"type": "append_entries", "serialized": None})
    transport._count_snapshot_chunk(counter, {"type": "append_entries", "serialized": False})
    transport._count_snapshot_chunk(counter, {"type": "append_entries", "entries": [1, 2]})
    transport._count_snapshot_chunk(counter, "not a dict")
    assert counter._value.get() == before
    chunk = (b"y" * 1000, True, False)
    transport._count_snapshot_chunk(counter, {"type": "append_entries", "serialized": chunk})
    assert counter._value.get() == before + 1000
