"""Member gRPC addresses: a replica publishes the one it advertises; the others dial a
member where it answers as itself, and send clients to the address it published.

The cluster tests run this on real processes; here, one replica's side of it over a
real store, with a Raft that applies what is proposed at once and members whose
Status answers come from a table by address."""

import concurrent.futures
import logging
from dataclasses import replace

import grpc
import pytest
from pysyncobj.node import TCPNode

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
# The same cluster as r2 sees it: its configuration names r1 by a real address.
R2_CONFIG = replace(
    CONFIG,
    id="r2",
    raft_address="10.0.0.2:7411",
    advertise_grpc_address="r2:7401",
    peers=[Peer("r1", "10.0.0.1:7411", "r1.internal:7401")],
)


class AppliedAtOnce:
    """The part of cluster.raft.Raft that Members and Changes use, over a real store."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.store = replica.store
        self.proposed: list[str] = []
        self.raft_status = {"state": 2, "last_applied": 10, "leader_commit_idx": 10}
        self.leader: TCPNode | None = None

    def status(self) -> dict:
        return self.raft_status

    def _getLeader(self):  # PySyncObj's: the node it follows now, or None
        return self.leader

    def propose(self, data: bytes, timeout: float) -> concurrent.futures.Future:
        command = command_pb2.Command.FromString(data)
        self.proposed.append(command.WhichOneof("op"))
        future = concurrent.futures.Future()
        future.set_result(self.replica.apply(command)[0])
        return future


class Answering(Members):
    """Members whose API answers: `answers` by address; other addresses are down."""

    def __init__(self, config: ReplicaConfig, raft, answers: dict) -> None:
        super().__init__(config, raft)
        self.answers = answers
        self.dialed: list[str] = []

    def dial(self, grpc_address: str):
        self.dialed.append(grpc_address)
        answer = self.answers.get(grpc_address)

        def status(request, timeout):
            if answer is None:
                raise _Down()
            return answer

        channel = _Channel(status)
        return channel


class _Down(grpc.RpcError):
    pass


class _Channel:
    def __init__(self, status) -> None:
        self._status = status

    def __enter__(self):
        return self

    def __exit__(self, *_):
        return None

    def unary_unary(self, method, **_kwargs):
        return self._status

    unary_stream = unary_unary  # for the stub's other methods, never called


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


def supports(member_id: str, version: int = versions.LATEST) -> cluster_pb2.StatusResponse:
    return cluster_pb2.StatusResponse(id=member_id, supported_machine_version=version)


def test_a_replica_publishes_the_address_it_advertises_once(replica):
    raft = seeded(replica)
    publishing = Changes(raft, Members(CONFIG, raft))
    publishing.publish_address(1.0)
    assert addresses(raft) == {"r1": "r1:7401", "r2": "r2:7401"}
    publishing.publish_address(1.0)
    assert raft.proposed == ["set_member_address"]
    with raft.store.read() as view:
        assert members.get(view, "r1").grpc_address == "r1:7401"


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


def test_no_address_is_published_from_a_table_of_the_past(replica):
    """A replica catching up would propose compare-and-sets that are refused."""
    raft = seeded(replica)
    raft.raft_status = {"state": 0, "last_applied": 5, "leader_commit_idx": 10}
    Changes(raft, Members(CONFIG, raft)).publish_address(1.0)
    assert raft.proposed == []


def test_an_address_another_member_has_is_not_proposed_again_and_again(replica, caplog):
    raft = seeded(replica)
    taken = replace(CONFIG, advertise_grpc_address="r2:7401")
    publishing = Changes(raft, Members(taken, raft))
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            publishing.publish_address(1.0)
    assert raft.proposed == []
    said = [r.getMessage() for r in caplog.records if "member r2's gRPC address" in r.getMessage()]
    assert len(said) == 1, said


def raise_version(raft: AppliedAtOnce, config: ReplicaConfig, answers: dict) -> list[str]:
    """Run the leader's machine-version check; the addresses it dialed."""
    table = Answering(config, raft, answers)
    Changes(raft, table)._raise_version(1.0)
    return table.dialed


def test_the_machine_version_rises_when_every_other_member_answers_for_itself(replica):
    raft = seeded(replica, version=versions.MEMBER_ADDRESSES - 1)
    assert raise_version(raft, CONFIG, {"r2:7401": supports("r2")}) == ["r2:7401"]
    assert raft.proposed == ["set_machine_version"]


def test_a_member_down_at_its_published_address_is_asked_at_the_configured_one(replica):
    raft = seeded(replica, version=versions.MEMBER_ADDRESSES - 1)
    dialed = raise_version(raft, CONFIG, {"r2.internal:7401": supports("r2")})
    assert dialed == ["r2:7401", "r2.internal:7401"]
    assert raft.proposed == ["set_machine_version"]


def test_an_answer_from_another_replica_does_not_count(replica):
    """A table seeded before advertise_grpc_address held 0.0.0.0:7401, which reaches
    whichever replica dials it: its own answer must not stand for the member's."""
    raft = seeded(replica, version=versions.MEMBER_ADDRESSES - 1)
    alone = replace(R2_CONFIG, peers=[])
    assert raise_version(raft, alone, {"0.0.0.0:7401": supports("r2")}) == ["0.0.0.0:7401"]
    assert raft.proposed == []


def test_a_wildcard_in_the_table_is_dialed_last(replica):
    raft = seeded(replica, version=versions.MEMBER_ADDRESSES - 1)
    answers = {"0.0.0.0:7401": supports("r2"), "r1.internal:7401": supports("r1")}
    assert raise_version(raft, R2_CONFIG, answers) == ["r1.internal:7401"]
    assert raft.proposed == ["set_machine_version"]


def test_clients_are_sent_to_the_address_a_member_published(replica):
    """Not to the one the configuration gave before the member moved; a wildcard in
    the table is passed over for the configured address until then."""
    raft = seeded(replica)
    r2 = Members(R2_CONFIG, raft)
    assert r2.by_raft_address("10.0.0.1:7411") == Peer("r1", "10.0.0.1:7411", "r1.internal:7401")
    Changes(raft, Members(CONFIG, raft)).publish_address(1.0)
    assert r2.by_raft_address("10.0.0.1:7411") == Peer("r1", "10.0.0.1:7411", "r1:7401")


def test_the_leader_hint_is_raft_s_leader_now_and_never_this_replica(replica):
    """A write refused with UNAVAILABLE names the leader to retry at: it named this
    replica itself, from a status copy up to 0.2 s old, in answers that said no leader
    was known (an outside review). Now: Raft's leader of the moment, not this replica."""
    raft = seeded(replica)
    known = Members(CONFIG, raft)
    raft.raft_status = {**raft.raft_status, "leader": "10.0.0.1:7411"}  # stale: says r1
    assert known.leader_grpc_address() == ""  # no leader now
    raft.leader = TCPNode("10.0.0.2:7411")
    assert known.leader_grpc_address() == "r2:7401"
    raft.leader = TCPNode("10.0.0.1:7411")  # this replica: said so, not named
    assert known.leader_grpc_address() is None
