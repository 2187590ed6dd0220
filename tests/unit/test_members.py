"""The replicated member table: one change at a time, compare-and-set roles, validation."""

import pytest

from regraft.v1 import command_pb2, registry_pb2
from storage import commands, members
from storage.errors import InvalidArgument
from storage.members import Member, Role
from storage.versions import MEMBER_ADDRESSES
from tests.unit.test_storage import Replica, all_events

OK = command_pb2.Result.OK
REFUSED = command_pb2.Result.FAILED_PRECONDITION


@pytest.fixture
def replica(tmp_path):
    r = Replica(str(tmp_path / "db"))
    r.ok(commands.seed_members([voter("r1", 1), voter("r2", 2), voter("r3", 3)]))
    yield r
    r.store.close()


def voter(member_id: str, n: int) -> Member:
    return Member(
        id=member_id,
        raft_address=f"10.0.0.{n}:7410",
        grpc_address=f"10.0.0.{n}:7400",
        role=Role.VOTER,
    )


def table(replica) -> dict[str, int]:
    with replica.store.read() as view:
        return {m.id: m.role for m in members.members(view)}


def test_seeding_happens_once(replica):
    [result] = replica.ok(commands.seed_members([voter("x", 9)]))
    assert "already" in result.message
    assert table(replica) == {"r1": Role.VOTER, "r2": Role.VOTER, "r3": Role.VOTER}


def test_a_member_joins_as_a_learner_and_is_promoted_step_by_step(replica):
    [added] = replica.ok(commands.add_member("r4", "10.0.0.4:7410", "10.0.0.4:7400"))
    with replica.store.read() as view:
        assert members.get(view, "r4").added_at == added.revision
    assert table(replica)["r4"] == Role.LEARNER
    replica.ok(commands.set_member_role("r4", Role.LEARNER, Role.PROMOTING))
    replica.ok(commands.set_member_role("r4", Role.PROMOTING, Role.VOTER))
    assert table(replica)["r4"] == Role.VOTER
    replica.ok(commands.set_member_role("r4", Role.VOTER, Role.REMOVING))
    replica.ok(commands.set_member_role("r4", Role.REMOVING, Role.ROLE_UNSPECIFIED))
    assert "r4" not in table(replica)


def test_one_change_at_a_time(replica):
    replica.ok(commands.set_member_role("r3", Role.VOTER, Role.REMOVING))
    before = replica.state_hash()
    [add, promote] = replica.apply(
        commands.add_member("r4", "10.0.0.4:7410", "10.0.0.4:7400"),
        commands.set_member_role("r2", Role.VOTER, Role.REMOVING),
    )
    for result in (add, promote):
        assert result.code == REFUSED
        assert "MEMBER_CHANGE_IN_PROGRESS" in result.oci_code
        assert "'r3' is REMOVING" in result.message
    assert replica.state_hash() == before
    # Finishing the change in progress is allowed, and then the next one may start.
    replica.ok(commands.set_member_role("r3", Role.REMOVING, Role.ROLE_UNSPECIFIED))
    replica.ok(commands.add_member("r4", "10.0.0.4:7410", "10.0.0.4:7400"))


def test_roles_change_only_from_the_expected_one(replica):
    [result] = replica.apply(commands.set_member_role("r1", Role.LEARNER, Role.PROMOTING))
    assert result.code == REFUSED and "'r1' is VOTER, not LEARNER" in result.message
    [result] = replica.apply(commands.set_member_role("r9", Role.VOTER, Role.REMOVING))
    assert result.code == command_pb2.Result.NOT_FOUND and "r9" in result.message


@pytest.mark.parametrize(
    ("member_id", "raft", "grpc", "taken"),
    [
        ("r1", "10.0.0.9:7410", "10.0.0.9:7400", "id 'r1'"),
        ("r9", "10.0.0.2:7410", "10.0.0.9:7400", "raft_address '10.0.0.2:7410'"),
        ("r9", "10.0.0.9:7410", "10.0.0.3:7400", "grpc_address '10.0.0.3:7400'"),
    ],
)
def test_ids_and_addresses_are_unique(replica, member_id, raft, grpc, taken):
    [result] = replica.apply(commands.add_member(member_id, raft, grpc))
    assert result.code == REFUSED and taken in result.message


@pytest.mark.parametrize(
    ("member_id", "raft", "grpc", "field"),
    [
        ("", "h:1", "h:2", "id"),
        ("r 4", "h:1", "h:2", "id"),
        ("-r4", "h:1", "h:2", "id"),
        ("r" * 64, "h:1", "h:2", "id"),
        ("r4", "h", "h:2", "raft_address"),
        ("r4", "h:0", "h:2", "raft_address"),
        ("r4", "h:1", "h:65536", "grpc_address"),
        ("r4", "h:1", "bad host:2", "grpc_address"),
        ("r4", "0.0.0.0:1", "h:2", "raft_address"),
        ("r4", "h:1", "0.0.0.0:7401", "grpc_address"),
    ],
)
def test_bad_members_name_the_field(member_id, raft, grpc, field):
    with pytest.raises(InvalidArgument) as e:
        commands.add_member(member_id, raft, grpc)
    assert e.value.field == field


def test_a_promotion_cut_short_can_be_cancelled(replica):
    replica.ok(commands.add_member("r4", "10.0.0.4:7410", "10.0.0.4:7400"))
    replica.ok(commands.set_member_role("r4", Role.LEARNER, Role.PROMOTING))
    replica.ok(commands.set_member_role("r4", Role.PROMOTING, Role.ROLE_UNSPECIFIED))
    assert "r4" not in table(replica)


def test_membership_changes_are_audit_events(replica):
    replica.ok(commands.add_member("r4", "10.0.0.4:7410", "10.0.0.4:7400", actor="cert:ops"))
    replica.ok(commands.set_member_role("r4", Role.LEARNER, Role.PROMOTING, actor="cert:ops"))
    replica.ok(commands.set_member_role("r4", Role.PROMOTING, Role.VOTER, actor="cert:ops"))
    replica.ok(commands.set_member_role("r1", Role.VOTER, Role.REMOVING, actor="token:bot"))
    replica.ok(commands.set_member_role("r1", Role.REMOVING, Role.ROLE_UNSPECIFIED))
    with replica.store.read() as view:
        found = all_events(view)
    assert {e.kind for e in found} == {registry_pb2.CLUSTER_CHANGE}
    assert [(e.operation, e.target, e.actor) for e in found] == [
        ("SeedMembers", "voters r1, r2, r3", ""),
        ("AddMember", "member 'r4' as LEARNER, raft 10.0.0.4:7410, grpc 10.0.0.4:7400", "cert:ops"),
        ("SetMemberRole", "member 'r4': LEARNER -> PROMOTING", "cert:ops"),
        ("SetMemberRole", "member 'r4': PROMOTING -> VOTER", "cert:ops"),
        ("SetMemberRole", "member 'r1': VOTER -> REMOVING", "token:bot"),
        ("SetMemberRole", "member 'r1': REMOVING -> removed", ""),
    ]


def grpc_addresses(replica) -> dict[str, str]:
    with replica.store.read() as view:
        return {m.id: m.grpc_address for m in members.members(view)}


def test_a_member_moves_its_address_if_it_is_still_the_expected_one(replica):
    replica.ok(commands.set_member_address("r1", "r1.example:7400", "10.0.0.1:7400", "cert:r1"))
    assert grpc_addresses(replica)["r1"] == "r1.example:7400"
    with replica.store.read() as view:
        moved = all_events(view)[-1]
    assert (moved.kind, moved.operation, moved.target, moved.actor) == (
        registry_pb2.CLUSTER_CHANGE,
        "SetMemberAddress",
        "member 'r1': grpc 10.0.0.1:7400 -> r1.example:7400",
        "cert:r1",
    )
    # Again: nothing to do. From an address it no longer has: refused.
    before = replica.state_hash()
    [again] = replica.ok(commands.set_member_address("r1", "r1.example:7400", "r1.example:7400"))
    assert "already" in again.message
    assert replica.state_hash() == before
    [stale] = replica.apply(commands.set_member_address("r1", "r1.other:7400", "10.0.0.1:7400"))
    assert stale.code == REFUSED and "MEMBER_ADDRESS_CHANGED" in stale.oci_code
    assert "'r1' has grpc_address 'r1.example:7400', not '10.0.0.1:7400'" in stale.message
    assert replica.state_hash() == before


@pytest.mark.parametrize(
    ("member_id", "address", "expected", "code", "says"),
    [
        ("r9", "10.0.0.9:7400", "", command_pb2.Result.NOT_FOUND, "no member 'r9'"),
        ("r1", "10.0.0.2:7400", "10.0.0.1:7400", REFUSED, "'r2' already has grpc_address"),
    ],
)
def test_an_address_move_is_refused_for_an_unknown_member_or_a_taken_address(
    replica, member_id, address, expected, code, says
):
    before = replica.state_hash()
    [result] = replica.apply(commands.set_member_address(member_id, address, expected))
    assert result.code == code and says in result.message
    assert replica.state_hash() == before


@pytest.mark.parametrize(
    ("member_id", "address", "field"),
    [("r 1", "h:1", "id"), ("r1", "0.0.0.0:7401", "grpc_address"), ("r1", "h", "grpc_address")],
)
def test_a_bad_address_move_names_the_field(member_id, address, field):
    with pytest.raises(InvalidArgument) as e:
        commands.set_member_address(member_id, address, "10.0.0.1:7400")
    assert e.value.field == field


def test_before_machine_version_6_an_address_move_is_the_unknown_operation_it_was(tmp_path):
    """Replicas of the previous release see no operation in it: so must this code, or
    their states would differ during a rolling upgrade."""
    older = Replica(str(tmp_path / "db"))
    try:
        seed = commands.seed_members([voter("r1", 1)], machine_version=MEMBER_ADDRESSES - 1)
        older.ok(seed)
        before = older.state_hash()
        [result] = older.apply(commands.set_member_address("r1", "h:1", "10.0.0.1:7400"))
        assert (result.code, result.message) == (
            command_pb2.Result.INVALID_ARGUMENT,
            "command names no operation",
        )
        assert older.state_hash() == before
        older.ok(commands.set_machine_version(MEMBER_ADDRESSES))
        older.ok(commands.set_member_address("r1", "h:1", "10.0.0.1:7400"))
        assert grpc_addresses(older) == {"r1": "h:1"}
    finally:
        older.store.close()
