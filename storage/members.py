"""The replicated member table: who is in the cluster, at which addresses, in which role.

Raft (PySyncObj) knows its voters by Raft address only, and applies a voter change
outside this state machine. The table adds what operators and front-ends need (ids,
gRPC addresses, learners) and turns each change into compare-and-set steps on a
member's role (LEARNER -> PROMOTING -> VOTER, VOTER -> REMOVING -> gone), so that a
change interrupted half-way is visible, and a second change is refused meanwhile.
"""

from regraft.v1 import command_pb2, record_pb2, registry_pb2
from storage.db import View
from storage.errors import FailedPrecondition, NotFound

Member = record_pb2.MemberRecord
Role = Member.Role
PENDING = (Role.PROMOTING, Role.REMOVING)
_CHANGED = registry_pb2.EventKind.CLUSTER_CHANGE


def role_name(role: int) -> str:
    return Role.Name(role)


def members(view: View) -> list[Member]:
    """Every member, in id order."""
    return [Member.FromString(value) for _, value in view.scan("members", b"")]


def get(view: View, member_id: str) -> Member | None:
    raw = view.get("members", member_id.encode())
    return Member.FromString(raw) if raw is not None else None


def pending(view: View) -> Member | None:
    """The member whose change is in progress, if any."""
    return next((m for m in members(view) if m.role in PENDING), None)


def seed(change, op: command_pb2.SeedMembersOp) -> command_pb2.Result:
    """Record the configured members once, and name the cluster: the first leader does."""
    if op.cluster_id and not change.batch.cluster_id:
        change.batch.set_cluster_id(op.cluster_id)
    if members(change.batch):
        return command_pb2.Result(message="members already recorded")
    if op.machine_version > change.batch.machine_version:  # a new cluster
        change.batch.set_machine_version(op.machine_version)
    for member in op.members:
        _put(change.batch, member)
    target = "voters " + ", ".join(m.id for m in op.members)
    if change.batch.cluster_id:
        target += f" of cluster {change.batch.cluster_id}"
    change.record(_CHANGED, "SeedMembers", target)
    return command_pb2.Result()


def add(change, op: command_pb2.AddMemberOp) -> command_pb2.Result:
    batch, new = change.batch, op.member
    _refuse_while_pending(batch, f"add {new.id!r}")
    for member in members(batch):
        for what, mine, theirs in [
            ("id", new.id, member.id),
            ("raft_address", new.raft_address, member.raft_address),
            ("grpc_address", new.grpc_address, member.grpc_address),
        ]:
            if mine == theirs:
                raise FailedPrecondition(
                    "MEMBER_EXISTS", f"member {member.id!r} already has {what} {mine!r}"
                )
    _put(batch, Member(id=new.id, raft_address=new.raft_address, grpc_address=new.grpc_address,
                       role=Role.LEARNER, added_at=change.revision))  # fmt: skip
    change.record(
        _CHANGED,
        "AddMember",
        f"member {new.id!r} as LEARNER, raft {new.raft_address}, grpc {new.grpc_address}",
    )
    return command_pb2.Result()


def set_role(change, op: command_pb2.SetMemberRoleOp) -> command_pb2.Result:
    batch = change.batch
    member = get(batch, op.id)
    if member is None:
        raise NotFound("MEMBER_UNKNOWN", f"no member {op.id!r}")
    if member.role != getattr(op, "from"):
        raise FailedPrecondition(
            "MEMBER_ROLE_CHANGED",
            f"member {op.id!r} is {role_name(member.role)}, not {role_name(getattr(op, 'from'))}",
        )
    if op.to in PENDING:
        _refuse_while_pending(batch, f"start changing {op.id!r}")
    if op.to == Role.ROLE_UNSPECIFIED:
        batch.delete("members", op.id.encode())
    else:
        member.role = op.to
        _put(batch, member)
    after = role_name(op.to) if op.to != Role.ROLE_UNSPECIFIED else "removed"
    change.record(
        _CHANGED, "SetMemberRole", f"member {op.id!r}: {role_name(getattr(op, 'from'))} -> {after}"
    )
    return command_pb2.Result()


def set_address(change, op: command_pb2.SetMemberAddressOp) -> command_pb2.Result:
    """Move a member's gRPC address, if it is still `expected_grpc_address`."""
    batch = change.batch
    member = get(batch, op.id)
    if member is None:
        raise NotFound("MEMBER_UNKNOWN", f"no member {op.id!r}")
    if member.grpc_address != op.expected_grpc_address:
        raise FailedPrecondition(
            "MEMBER_ADDRESS_CHANGED",
            f"member {op.id!r} has grpc_address {member.grpc_address!r}, "
            f"not {op.expected_grpc_address!r}",
        )
    if op.grpc_address == member.grpc_address:
        return command_pb2.Result(message=f"member {op.id!r} already has it")
    for other in members(batch):
        if other.grpc_address == op.grpc_address:
            raise FailedPrecondition(
                "MEMBER_EXISTS", f"member {other.id!r} already has grpc_address {op.grpc_address!r}"
            )
    previous, member.grpc_address = member.grpc_address, op.grpc_address
    _put(batch, member)
    change.record(
        _CHANGED, "SetMemberAddress", f"member {op.id!r}: grpc {previous} -> {op.grpc_address}"
    )
    return command_pb2.Result()


def _refuse_while_pending(batch, what: str) -> None:
    busy = pending(batch)
    if busy is not None:
        raise FailedPrecondition(
            "MEMBER_CHANGE_IN_PROGRESS",
            f"cannot {what}: member {busy.id!r} is {role_name(busy.role)}; one membership "
            "change at a time (finish it by running the same promote or remove again)",
        )


def _put(batch, member: Member) -> None:
    batch.put("members", member.id.encode(), member.SerializeToString(deterministic=True))
