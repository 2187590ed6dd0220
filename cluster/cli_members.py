"""`regraft member list | add | promote | remove` and `regraft leader transfer`.

Membership changes run on the leader (cluster/membership.py); these commands send them
to any endpoint and follow the leader's address in an UNAVAILABLE answer.
"""

import argparse
import contextlib
import sys
import time
from collections.abc import Callable

import grpc

from cluster import cli_auth
from cluster.client import Credentials, dial
from cluster.config import DEFAULT_ENDPOINTS, ConfigError
from cluster.tables import text_table
from regraft.v1 import cluster_pb2, cluster_pb2_grpc, record_pb2
from storage import names

# A change may wait for an election or a learner's catch-up: give it time.
_CHANGE_TIMEOUT = 60.0
# Give up this soon when no endpoint answers at all.
_UNREACHED = 5.0


def add_parsers(commands) -> None:
    member = commands.add_parser("member", help="list, add, promote or remove members")
    actions = member.add_subparsers(dest="action", required=True)

    p = actions.add_parser("list", help="members, their roles, reachability and lag")
    _endpoints(p)
    p.set_defaults(run=_list)

    p = actions.add_parser(
        "add", help="record a new member as a learner (then start it with `serve --join`)"
    )
    p.add_argument("id")
    p.add_argument("--raft-address", required=True, help="host:port of its Raft peer port")
    p.add_argument("--grpc-address", required=True, help="host:port of its gRPC API")
    p.add_argument("--force", action="store_true", help="add even if the cluster is unhealthy")
    _endpoints(p)
    p.set_defaults(run=_add)

    p = actions.add_parser("promote", help="make a caught-up learner a voter")
    p.add_argument("id")
    _endpoints(p)
    p.set_defaults(run=_promote)

    p = actions.add_parser("remove", help="remove a voter or a learner")
    p.add_argument("id")
    p.add_argument(
        "--force", action="store_true", help="remove even if the rest would lack a quorum"
    )
    _endpoints(p)
    p.set_defaults(run=_remove)

    leader = commands.add_parser("leader", help="leadership: transfer")
    leader_actions = leader.add_subparsers(dest="action", required=True)
    p = leader_actions.add_parser("transfer", help="hand leadership to another voter")
    p.add_argument("id", nargs="?", default="", help="the voter's id (or --to ID)")
    p.add_argument("--to", default="", help="the voter's id (default: the most caught-up)")
    _endpoints(p)
    p.set_defaults(run=_transfer)


def _endpoints(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoints", default=DEFAULT_ENDPOINTS, help="comma-separated gRPC addresses")
    cli_auth.add_client_flags(p)


def call_leader(
    endpoints: str,
    method: str,
    request,
    timeout: float = _CHANGE_TIMEOUT,
    credentials: Credentials | None = None,
):
    """Call a Cluster method on the leader: try each endpoint, follow `leader` hints."""

    def invoke(channel: grpc.Channel, seconds: float):
        return getattr(cluster_pb2_grpc.ClusterStub(channel), method)(request, timeout=seconds)

    return follow_leader(endpoints, invoke, timeout, credentials)


def follow_leader(
    endpoints: str,
    invoke: Callable[[grpc.Channel, float], object],
    timeout: float,
    credentials: Credentials | None = None,
):
    """invoke(channel, seconds left) on each endpoint in turn, and on the leader an
    UNAVAILABLE answer names, until one answers or `timeout` passes."""
    queue = cli_auth.endpoint_list(endpoints)
    started = time.monotonic()
    deadline = started + timeout
    last_error: grpc.RpcError | None = None
    answered = False  # by some replica, if only UNAVAILABLE: an election may end soon
    tried = 0
    while time.monotonic() < deadline:
        if last_error is not None and not answered and time.monotonic() - started > _UNREACHED:
            raise last_error  # nothing listens there: a mistyped endpoint, not an election
        endpoint = queue[tried % len(queue)]
        tried += 1
        with dial(endpoint, credentials) as channel:
            try:
                return invoke(channel, max(1.0, deadline - time.monotonic()))
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                last_error = e
                answered = answered or not cli_auth.not_reached(e)
                leader = dict(e.trailing_metadata() or ()).get("leader")
                if leader and leader not in queue:
                    queue.append(leader)
                if leader:
                    tried = queue.index(leader)
                time.sleep(0.3)
    raise last_error or TimeoutError("no endpoint answered")


def _call(args, method: str, request, timeout: float = _CHANGE_TIMEOUT):
    """call_leader with the command line's endpoints and credentials."""
    credentials = cli_auth.client_credentials(args)
    return call_leader(args.endpoints, method, request, timeout, credentials)


def _dialable_or_placeholder(address: str) -> str:
    """A member's gRPC address, or HOST:PORT for a wildcard one (recorded before its
    replica advertised one), which would reach the new replica itself."""
    return "HOST:PORT" if names.is_wildcard_address(address) else address


def _list(args) -> int:
    request = cluster_pb2.ListMembersRequest()
    response = _call(args, "ListMembers", request, 10.0)
    leader = next((m for m in response.members if m.is_leader), None)
    if (
        leader is not None
        and not leader.is_self
        and not names.is_wildcard_address(leader.grpc_address)
    ):
        # Only the leader knows the lag and which voters answer it: ask it.
        with contextlib.suppress(grpc.RpcError):
            credentials = cli_auth.client_credentials(args)
            response = call_leader(leader.grpc_address, "ListMembers", request, 5.0, credentials)
    print(members_table(response.members))
    if not _from_leader(response.members):
        me = next((m.id for m in response.members if m.is_self), "a replica")
        print(
            f"(as {me} sees them: not the leader, which did not answer; LAG is known to the "
            f"leader only, and REACHABLE is {me}'s own link)",
            file=sys.stderr,
        )
    return 0


def _from_leader(members) -> bool:
    """Whether a member list is the leader's (LAG and REACHABLE as it sees them)."""
    return any(m.is_self and m.is_leader for m in members)


def _add(args) -> int:
    request = cluster_pb2.AddMemberRequest(
        id=args.id, raft_address=args.raft_address, grpc_address=args.grpc_address,
        force=args.force,
    )  # fmt: skip
    response = _call(args, "AddMember", request)
    _print_change(response)
    print(
        f"\n{args.id} is a learner. Start it with the cluster secret and `--join`, e.g.\n"
        f"  regraft serve --join --id {args.id} --raft-address {args.raft_address} "
        f"--grpc-address {args.grpc_address} --metrics-address HOST:PORT --data-dir DIR "
        "--secret-file FILE "
        + " ".join(
            f"--peer {m.id}={m.raft_address},{_dialable_or_placeholder(m.grpc_address)}"
            for m in response.members
            if m.membership == record_pb2.MemberRecord.VOTER
        )
        + f"\nthen, once it has caught up: regraft member promote {args.id}"
    )
    return 0


def _promote(args) -> int:
    request = cluster_pb2.PromoteMemberRequest(id=args.id)
    _print_change(_call(args, "PromoteMember", request))
    return 0


def _remove(args) -> int:
    request = cluster_pb2.RemoveMemberRequest(id=args.id, force=args.force)
    _print_change(_call(args, "RemoveMember", request))
    return 0


def _transfer(args) -> int:
    if args.id and args.to and args.id != args.to:
        raise ConfigError(f"two voters named: {args.id} and --to {args.to}; name one")
    request = cluster_pb2.TransferLeadershipRequest(to_id=args.id or args.to)
    response = _call(args, "TransferLeadership", request)
    print(f"leader is now {response.leader_id} (term {response.term})")
    return 0


def _print_change(response: cluster_pb2.MemberChangeResponse) -> None:
    print(members_table(response.members))
    for warning in response.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def members_table(members) -> str:
    leaders_view = _from_leader(members)
    header = ["ID", "ROLE", "RAFT", "GRPC", "REACHABLE", "LEADER", "LAG"]
    rows = [
        [
            m.id,
            record_pb2.MemberRecord.Role.Name(m.membership).lower(),
            m.raft_address,
            m.grpc_address,
            _reachable(m),
            "*" if m.is_leader else "",
            "-" if is_learner(m) else str(m.lag) if leaders_view else "?",
        ]
        for m in members
    ]
    return text_table(header, rows)


def is_learner(member: cluster_pb2.Member) -> bool:
    """The leader keeps no Raft link to a learner (PySyncObj's read-only node), so its
    view of one (reachable, lag) says nothing: the learner's own status tells."""
    return member.membership == record_pb2.MemberRecord.LEARNER


def _reachable(member) -> str:
    """'-' for a learner (see is_learner)."""
    if is_learner(member):
        return "-"
    return "yes" if member.reachable else "no"
