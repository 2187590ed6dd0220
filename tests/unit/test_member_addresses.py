"""Member gRPC addresses: a replica publishes the one it advertises, and the leader's
machine-version check counts only answers from the member it meant to ask.

The cluster tests run both on real processes; here, one replica's side of it over a
real store, with a Raft that applies what is proposed at once."""

import concurrent.futures
from dataclasses import replace

import pytest

from cluster.config import Peer, ReplicaConfig
from cluster.membership import Changes, Members
from regraft.v1 import cluster_pb2, command_pb2
from storage import commands, members, versions
from storage.members import Member, Role
from tests.unit.test_storage import Replica

TABLE = [
    Member(id="r1", raft_address="10.0.0.1:7411", grpc_address="0.0.0.0:7401", role=Role.VOTER),
    Member(id="r2", raft_address="10.0.0.2:7411", grpc_address="r2:7401", role=Role.VOTER),
]
CONFIG = ReplicaConfig(
    id="r1",
    raft_address="10.0.0.1:7411",
    grpc_address="0.0.0.0:7401",
    advertise_grpc_address="r1:7401",
    peers=[Peer("r2", "10.0.0.2:7411", "r2.internal:7401")],
)


class AppliedAtOnce:
    """The part of cluster.raft.Raft that Members and Changes use, over a real store."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.store = replica.store
        self.proposed: list[str] = []

    def status(self) -> dict:
        return {"state": 2}

    def propose(self, data: bytes, timeout: float) -> concurrent.futures.Future:
        command = command_pb2.Command.FromString(data)
        self.proposed.append(command.WhichOneof("op"))
        future = concurrent.futures.Future()
        future.set_result(self.replica.apply(command)[0])
        return future


@pytest.fixture
def replica(tmp_path):
    r = Replica(str(tmp_path / "db"))
    yield r
    r.store.close()


def seeded(replica: Replica, version: int = versions.LATEST) -> AppliedAtOnce:
    replica.ok(commands.seed_members(TABLE, machine_version=version))
    return AppliedAtOnce(replica)


def addresses(raft: AppliedAtOnce) -> dict[str, str]:
    with raft.store.read() as view:
        return {m.id: m.grpc_address for m in members.members(view)}


def test_a_replica_publishes_the_address_it_advertises_once(replica):
    raft = seeded(replica)
    publishing = Changes(raft, Members(CONFIG, raft))
    publishing.publish_address(1.0)
    assert addresses(raft) == {"r1": "r1:7401", "r2": "r2:7401"}
    publishing.publish_address(1.0)
    assert raft.proposed == ["set_member_address"]


def test_an_address_is_published_only_if_the_operator_gave_one(replica):
    """A bind address (127.0.0.1, say) is no better than a name `member add` was given."""
    raft = seeded(replica)
    bound = replace(CONFIG, grpc_address="10.0.0.1:7401", advertise_grpc_address="")
    Changes(raft, Members(bound, raft)).publish_address(1.0)
    assert raft.proposed == []


def test_no_address_is_published_before_every_replica_can_apply_it(replica):
    raft = seeded(replica, version=versions.MEMBER_ADDRESSES - 1)
    Changes(raft, Members(CONFIG, raft)).publish_address(1.0)
    assert raft.proposed == []
    assert addresses(raft)["r1"] == "0.0.0.0:7401"


def asked(answers: dict, raft: AppliedAtOnce, config: ReplicaConfig = CONFIG) -> list[str]:
    """Run the leader's machine-version check with `answers` by the address dialed."""
    dialed = []
    table = Members(config, raft)

    def status_of(member, timeout):
        address = table.local_grpc_address(member)
        dialed.append(address)
        return answers[address]

    table.status_of = status_of
    Changes(raft, table)._raise_version(1.0)
    return dialed


def test_the_machine_version_rises_when_every_other_member_answers_for_itself(replica):
    raft = seeded(replica, version=versions.MEMBER_ADDRESSES - 1)
    r2 = cluster_pb2.StatusResponse(id="r2", supported_machine_version=versions.LATEST)
    # This replica's configuration names r2's API, and comes before the table.
    assert asked({"r2.internal:7401": r2}, raft) == ["r2.internal:7401"]
    assert raft.proposed == ["set_machine_version"]


def test_an_answer_from_another_replica_does_not_count(replica):
    """A table seeded before advertise_grpc_address held 0.0.0.0:7401, which reaches
    whichever replica dials it: its own answer must not stand for the member's."""
    raft = seeded(replica, version=versions.MEMBER_ADDRESSES - 1)
    r2_itself = cluster_pb2.StatusResponse(id="r2", supported_machine_version=versions.LATEST)
    leader_r2 = replace(
        CONFIG, id="r2", raft_address="10.0.0.2:7411", advertise_grpc_address="r2:7401", peers=[]
    )
    assert asked({"0.0.0.0:7401": r2_itself}, raft, leader_r2) == ["0.0.0.0:7401"]
    assert raft.proposed == []
