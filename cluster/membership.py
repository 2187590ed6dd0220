"""Who is in the cluster, and changing it one member at a time.

Raft (PySyncObj) knows its voters by Raft address only; the replicated member table
(storage/members.py) adds ids, gRPC addresses and learners. A change is a few steps,
each a command in the log, so that a change interrupted half-way (a crash, a lost
leader) is visible in the table and finished by running it again:

    add:      record the member as LEARNER; it starts with `join = true` and receives
              the log (a snapshot first if the log was compacted) without voting
    promote:  LEARNER -> PROMOTING, Raft adds the voter, PROMOTING -> VOTER; the
              learner then restarts its Raft as a voter (cluster/replica.py)
    remove:   VOTER -> REMOVING, leadership moves away if it leads, Raft removes the
              voter, the member is deleted; the removed replica stops itself

Every change runs on the leader (elsewhere: UNAVAILABLE with the leader's address).
"""

import concurrent.futures
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator

import grpc

from cluster import auth, workers
from cluster.client import dial
from cluster.config import Peer, ReplicaConfig
from cluster.raft import ProposalError, Raft
from cluster.rpc import Unavailable, propose_within
from regraft.v1 import cluster_pb2, cluster_pb2_grpc, command_pb2, registry_pb2
from storage import commands, members, names, versions
from storage.db import View
from storage.errors import FailedPrecondition, NotFound
from storage.members import Member, Role

log = logging.getLogger(__name__)

# A learner this many entries behind the commit index is not promoted.
PROMOTE_MAX_LAG = 1000
_SEED_TIMEOUT = 10.0
# How often a promotion looks whether the new voter has restarted as one.
_POLL = 0.2
# The newest machine version (storage/versions.py) this replica announces, seeds and
# raises the cluster to. REGRAFT_MACHINE_VERSION is for upgrade tests: a replica that
# acts as an older release.
SUPPORTED_MACHINE_VERSION = int(os.environ.get("REGRAFT_MACHINE_VERSION", versions.LATEST))
# Roles whose Raft address may be in Raft's voter set.
MAYBE_VOTING = (Role.VOTER, Role.PROMOTING, Role.REMOVING)


class Members:
    """Addresses and roles of the members, as this replica knows them."""

    def __init__(self, config: ReplicaConfig, raft: Raft) -> None:
        self.self_id = config.id
        self._raft = raft
        self._config = config
        self._credentials = auth.peer_credentials(config)
        # This replica's own view of addresses comes first (it may reach a peer
        # through an address other than the one the peer announced).
        self._configured = {p.raft_address: p for p in [config.me, *config.peers]}
        # Only an address the operator said this replica is reached at is published.
        self.advertised = config.advertise_grpc_address

    def dial(self, grpc_address: str) -> grpc.Channel:
        """A channel to another member's gRPC API, with this replica's credentials."""
        return dial(grpc_address, self._credentials)

    def status_of(self, member: Member, timeout: float) -> cluster_pb2.StatusResponse | None:
        """`member`'s own Status answer, from the first of its addresses where it, not
        another replica, answers; None if none does (a stale address such as 0.0.0.0
        reaches whoever dials it)."""
        for address in self.grpc_addresses(member):
            try:
                with self.dial(address) as channel:
                    request = cluster_pb2.StatusRequest()
                    status = cluster_pb2_grpc.ClusterStub(channel).Status(request, timeout=timeout)
            except grpc.RpcError:
                continue
            if status.id == member.id:
                return status
            log.info("%s's address %s reached %r instead", member.id, address, status.id)
        return None

    def table(self, view: View | None = None) -> list[Member]:
        """The replicated table (in `view`, else now); before it is seeded, the configuration."""
        if view is None:
            with self._raft.store.read() as view:
                return self.table(view)
        return members.members(view) or configured_members(self._config)

    def get(self, member_id: str) -> Member | None:
        return next((m for m in self.table() if m.id == member_id), None)

    def local_raft_address(self, member: Member) -> str:
        """Where this replica reaches `member` (its configuration may say otherwise)."""
        peer = self._configured_peer(member)
        return peer.raft_address if peer is not None else member.raft_address

    def grpc_addresses(self, member: Member) -> list[str]:
        """Where `member`'s API is, best first: the table's address (the one it
        publishes), then the one this replica's configuration gives, if another;
        wildcards last (they reach whoever dials them)."""
        peer = self._configured_peer(member)
        found = [member.grpc_address, peer.grpc_address if peer is not None else ""]
        found = [a for a in dict.fromkeys(found) if a]
        return sorted(found, key=names.is_wildcard_address)  # stable: the table's first

    def _configured_peer(self, member: Member) -> Peer | None:
        return next((p for p in self._configured.values() if p.id == member.id), None)

    def by_raft_address(self, address: str) -> Peer:
        """The member Raft knows by `address`, with its best gRPC address."""
        for m in self.table():
            if address in (m.raft_address, self.local_raft_address(m)):
                return Peer(m.id, m.raft_address, self.grpc_addresses(m)[0])
        return self._configured.get(address) or Peer(address, address, "")

    def excluded_by_others(self) -> str | None:
        """The id of a leader whose member table lacks this replica, if one answers.

        Only a leader's own answer counts, and only if its table is at least as new as
        the entry that added this replica: a learner or a follower that is behind may
        name a leader and a table of the past.
        """
        request = cluster_pb2.ListMembersRequest(
            read=registry_pb2.ReadOptions(consistency=registry_pb2.STALE)
        )
        me = self.get(self.self_id)
        added_at = me.added_at if me is not None else 0
        others = {p.grpc_address for p in self._configured.values()}
        others |= {m.grpc_address for m in self.table()}
        for address in sorted(others - {self._config.advertised_grpc_address}):
            try:
                with self.dial(address) as channel:
                    listed = cluster_pb2_grpc.ClusterStub(channel).ListMembers(request, timeout=1.0)
            except grpc.RpcError:
                continue
            leader = next((m for m in listed.members if m.is_self and m.is_leader), None)
            ids = {m.id for m in listed.members}
            if leader and listed.revision >= added_at and self.self_id not in ids:
                return leader.id
        return None

    def leader_grpc_address(self) -> str | None:
        """Where a caller told UNAVAILABLE here should go: the leader as Raft knows it now
        (not the status copy, up to 0.2 s old: it named this replica as the leader in
        answers saying no leader was known), "" when none is known, and None when it is
        this replica (sending callers back here would help none of them)."""
        leader = self._raft._getLeader()
        if leader is None:
            return ""
        peer = self.by_raft_address(leader.id)
        return None if peer.id == self.self_id else peer.grpc_address


def caught_up(status: dict) -> bool:
    """Whether this replica (its Raft status) has applied what its leader committed."""
    return bool(status) and status["last_applied"] >= (status.get("leader_commit_idx") or 0)


def configured_members(config: ReplicaConfig) -> list[Member]:
    """The members a configuration names: itself and its peers, all voters."""
    found = [
        Member(id=p.id, raft_address=p.raft_address, grpc_address=p.grpc_address, role=Role.VOTER)
        for p in [config.me, *config.peers]
    ]
    return sorted(found, key=lambda m: m.id)


def raft_peers(config: ReplicaConfig, table: list[Member]) -> list[str]:
    """The Raft addresses to start with: recorded voters, else the configured peers.

    A configured address wins for a member the configuration names, so that a
    replica keeps reaching a peer the way it was told to.
    """
    if not table:
        return [p.raft_address for p in config.peers]
    configured = {p.id: p.raft_address for p in config.peers}
    return [
        configured.get(m.id, m.raft_address)
        for m in table
        if m.role in MAYBE_VOTING and m.id != config.id
    ]


def starts_as_learner(config: ReplicaConfig, table: list[Member]) -> bool:
    me = next((m for m in table if m.id == config.id), None)
    if me is None:
        return config.join
    return me.role in (Role.LEARNER, Role.PROMOTING)


class Changes:
    """The membership operations of the Cluster service; one at a time per replica."""

    def __init__(self, raft: Raft, members_: Members) -> None:
        self._raft = raft
        self._members = members_
        self._lock = threading.Lock()
        self._unpublishable: tuple[str, str] | None = None  # (address, member holding it)
        self._held_back_by: tuple | None = None  # (version, member, its version): logged

    def _propose(self, command: command_pb2.Command, timeout: float) -> command_pb2.Result:
        return propose_within(self._raft, command, timeout)

    @contextlib.contextmanager
    def _one_at_a_time(self) -> Iterator[None]:
        if not self._lock.acquire(blocking=False):
            raise FailedPrecondition(
                "MEMBER_CHANGE_IN_PROGRESS", "another membership change is running on this replica"
            )
        try:
            with workers.blocking():  # a change mostly waits: on Raft, on other members
                self._require_leader()
                self.seed(_SEED_TIMEOUT)
                yield
        finally:
            self._lock.release()

    def _require_leader(self) -> None:
        if self._raft.status().get("state") != 2:
            raise Unavailable("membership changes run on the leader")

    def seed(self, timeout: float) -> None:
        """The leader records the configured members, once (storage.members.seed)."""
        if self._raft.status().get("state") != 2:
            return
        with self._raft.store.read() as view:
            if members.members(view):
                return
        seed = commands.seed_members(
            self._members.table(), uuid.uuid4().hex, SUPPORTED_MACHINE_VERSION
        )
        self._propose(seed, timeout)

    def upgrade(self, timeout: float) -> None:
        """As leader, raise the machine version once every member runs code that
        supports a newer one: until then, all apply entries as the oldest does."""
        if self._raft.status().get("state") != 2:
            return
        # Not while a membership change runs: a member added meanwhile would go unasked.
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._raise_version(timeout)
        finally:
            self._lock.release()

    def _raise_version(self, timeout: float) -> None:
        with self._raft.store.read() as view:
            current, table = view.machine_version, members.members(view)
        if current >= SUPPORTED_MACHINE_VERSION or not table:
            return
        for member in table:
            if member.id == self._members.self_id:
                continue
            status = self._members.status_of(member, 2.0)
            if status is None:
                return  # unreachable: ask again later
            # Older code leaves the field out: 0, below every version.
            supported = status.supported_machine_version
            if supported < SUPPORTED_MACHINE_VERSION:
                if self._held_back_by != (current, member.id, supported):
                    self._held_back_by = (current, member.id, supported)
                    log.info(
                        "machine version stays %d: %s runs code that supports up to %d "
                        "(this code: %d)",
                        current,
                        member.id,
                        supported,
                        SUPPORTED_MACHINE_VERSION,
                    )
                return
        log.info("every member supports machine version %d: raising it", SUPPORTED_MACHINE_VERSION)
        self._propose(commands.set_machine_version(SUPPORTED_MACHINE_VERSION), timeout)

    def publish_address(self, timeout: float) -> None:
        """Record the gRPC address this replica is configured to advertise, where the
        table has another (it moved, or the table predates advertise_grpc_address): the
        others dial it, and clients are sent to it, from the table. As etcd members
        publish their client URLs. An address given to `member add` stays until then."""
        advertised = self._members.advertised
        # Only once caught up: a compare-and-set on a table of the past is refused.
        if not advertised or not caught_up(self._raft.status()):
            return
        with self._raft.store.read() as view:
            table, in_force = members.members(view), view.machine_version
        me = next((m for m in table if m.id == self._members.self_id), None)
        if me is None or me.grpc_address == advertised or in_force < versions.MEMBER_ADDRESSES:
            return
        holder = next((m.id for m in table if m.grpc_address == advertised), None)
        if holder is not None:
            if self._unpublishable != (advertised, holder):  # said once, not every round
                self._unpublishable = (advertised, holder)
                log.warning(
                    "advertise_grpc_address %s is member %s's gRPC address: not recording it "
                    "as this replica's (two replicas advertise the same address?)",
                    advertised, holder,
                )  # fmt: skip
            return
        log.info("publishing this replica's gRPC address %s (was %s)", advertised, me.grpc_address)
        command = commands.set_member_address(
            me.id, advertised, me.grpc_address, actor=f"replica:{me.id}"
        )
        self._propose(command, timeout)

    def add(self, member_id: str, raft_address: str, grpc_address: str, force: bool,
            timeout: float, actor: str = "") -> list[str]:  # fmt: skip
        """Record a new member as a learner; refused while the cluster is unhealthy."""
        command = commands.add_member(member_id, raft_address, grpc_address, actor)
        with self._one_at_a_time():
            problem = self._health_problem()
            if problem and not force:
                raise FailedPrecondition(
                    "CLUSTER_UNHEALTHY",
                    f"refusing to add {member_id!r}: {problem}. A member joining an unhealthy "
                    "cluster can split it; fix the cluster first, or pass --force",
                )
            self._propose(command, timeout)
        return []

    def promote(self, member_id: str, timeout: float, actor: str = "") -> list[str]:
        """Make a caught-up learner a voter (or finish a promotion cut short)."""
        deadline = time.monotonic() + timeout
        with self._one_at_a_time():
            member = self._require(member_id)
            if member.role == Role.VOTER:
                return [f"{member_id!r} is already a voter"]
            if member.role == Role.REMOVING:
                raise FailedPrecondition(
                    "MEMBER_ROLE_CHANGED", f"{member_id!r} is being removed; remove it again"
                )
            if member.role == Role.LEARNER:
                self._require_caught_up(member)
                self._set_role(member, Role.PROMOTING, timeout, actor)
            if not self._is_voter(member):
                self._change_voters(True, member, timeout)
            self._set_role(member, Role.VOTER, timeout, actor)
            joined = self._await_voting(member, deadline)
        return joined + self._even_warning()

    def remove(self, member_id: str, force: bool, timeout: float, actor: str = "") -> list[str]:
        """Remove a learner or a voter (or cancel a promotion, or finish a removal)."""
        with self._one_at_a_time():
            member = self._require(member_id)
            if member.role == Role.LEARNER:
                self._set_role(member, Role.ROLE_UNSPECIFIED, timeout, actor)
                return []
            if member.role == Role.VOTER:
                problem = self._quorum_after_removing(member)
                if problem and not force:
                    raise FailedPrecondition(
                        "QUORUM_AT_RISK",
                        f"refusing to remove {member_id!r}: {problem}; pass --force to remove "
                        "it anyway",
                    )
                self._set_role(member, Role.REMOVING, timeout, actor)
            # REMOVING, or PROMOTING: a promotion cut short is cancelled the same way.
            if self._is_self(member):
                self._hand_over_leadership(timeout)
            if self._is_voter(member):
                self._change_voters(False, member, timeout)
            self._set_role(member, Role.ROLE_UNSPECIFIED, timeout, actor)
        return self._even_warning()

    def transfer(self, to_id: str, timeout: float) -> str:
        """Hand leadership to `to_id` (or the most caught-up voter); the new leader's id."""
        with self._one_at_a_time():
            target = None
            if to_id:
                member = self._require(to_id)
                if member.role != Role.VOTER:
                    raise FailedPrecondition(
                        "NOT_A_VOTER", f"{to_id!r} is {members.role_name(member.role)}, not a voter"
                    )
                target = member.raft_address
            return self._transfer(target, timeout)

    # -- steps --------------------------------------------------------------------------

    def _require(self, member_id: str) -> Member:
        names.validate_member_id(member_id)
        with self._raft.store.read() as view:
            member = members.get(view, member_id)
        if member is None:
            raise NotFound("MEMBER_UNKNOWN", f"no member {member_id!r} (see regraft member list)")
        return member

    def _set_role(self, member: Member, role: int, timeout: float, actor: str) -> None:
        self._propose(commands.set_member_role(member.id, member.role, role, actor), timeout)
        member.role = role

    def _voters(self) -> set[str]:
        status = self._raft.status()
        return {status["self"], *status["peers"]}

    def _is_voter(self, member: Member) -> bool:
        """In Raft's voter set, under its own address or the one configured here."""
        voters = self._voters()
        return bool({member.raft_address, self._members.local_raft_address(member)} & voters)

    def _is_self(self, member: Member) -> bool:
        return member.id == self._members.self_id

    def _change_voters(self, add: bool, member: Member, timeout: float) -> None:
        """Raft's own voter change; a timeout leaves its outcome unknown (run it again).

        A voter is removed under the address Raft knows it by, which this replica's
        configuration may give rather than the member table (PySyncObj refuses any other).
        """
        address = member.raft_address
        if not add:
            local = self._members.local_raft_address(member)
            address = local if local in self._voters() else address
        future = self._raft.change_voters(add, address, timeout)
        try:
            future.result(timeout + 1)
        except concurrent.futures.TimeoutError:
            raise ProposalError(
                f"the voter change for {member.id!r} was not confirmed in time: outcome "
                "unknown; run the same command again",
                definite=False,
            ) from None

    def _await_voting(self, member: Member, deadline: float) -> list[str]:
        """Wait until the promoted member runs as a voter and the leader reaches it.

        The learner restarts its Raft once it sees its promotion: until then the
        cluster counts it as down, and a change made meanwhile (the next member add)
        would be refused as unhealthy. A warning when it does not within the deadline.
        """
        restarted = None  # this replica's status copy when the member was seen restarted
        addresses = {member.raft_address, self._members.local_raft_address(member)}
        while time.monotonic() < deadline and self._raft.status().get("state") == 2:
            if restarted is None:
                status = self._members.status_of(member, 1.0)  # None while restarting
                if (
                    status is not None
                    and status.role != cluster_pb2.LEARNER
                    and status.leader_id == self._members.self_id
                ):
                    restarted = self._raft.status()
            else:
                # A copy taken later shows the link as it is since the restart.
                now = self._raft.status()
                if now is not restarted and any(now["peers"].get(a) for a in addresses):
                    return []
            time.sleep(_POLL)
        return [
            f"{member.id!r} is a voter, but this leader has not yet seen it run as one (its "
            "log says 'promoted to voter' when it restarts); until then the cluster may "
            "count it as down: see regraft status"
        ]

    def _health_problem(self) -> str | None:
        status = self._raft.status()
        if not status.get("has_quorum"):
            return "the leader cannot reach a quorum"
        down = sorted(self._members.by_raft_address(a).id for a, up in status["peers"].items()
                      if not up)  # fmt: skip
        if down:
            return f"voter(s) {', '.join(down)} unreachable"
        return None

    def _quorum_after_removing(self, member: Member) -> str | None:
        status = self._raft.status()
        remaining = self._voters() - {member.raft_address, self._members.local_raft_address(member)}
        if not remaining:
            return "it is the last voter"
        up = {status["self"], *(a for a, ok in status["peers"].items() if ok)}
        reachable = len(remaining & up)
        if reachable < len(remaining) // 2 + 1:
            return (
                f"only {reachable} of the {len(remaining)} voters left would be reachable, "
                "fewer than a quorum"
            )
        return None

    def _require_caught_up(self, member: Member) -> None:
        commit = self._raft.status()["commit_idx"]
        status = self._members.status_of(member, 3.0)
        if status is None:
            raise FailedPrecondition(
                "LEARNER_UNREACHABLE",
                f"cannot ask learner {member.id!r} how far it is: it does not answer at "
                f"{' or '.join(self._members.grpc_addresses(member))}",
            )
        # First: code too old for the version in force may not even read the peer
        # messages (sealed from version 5), so it is behind too, for that reason.
        with self._raft.store.read() as view:
            in_force = view.machine_version
        if max(status.supported_machine_version, 1) < in_force:
            raise FailedPrecondition(
                "LEARNER_TOO_OLD",
                f"learner {member.id!r} runs code that supports machine version "
                f"{max(status.supported_machine_version, 1)}, and the cluster applies version "
                f"{in_force}: it would apply entries differently; upgrade it first",
            )
        if status.applied_index < member.added_at:
            raise FailedPrecondition(
                "LEARNER_BEHIND",
                f"learner {member.id!r} has applied index {status.applied_index}, not yet the "
                f"entry that added it ({member.added_at}): it is not receiving the log. Check "
                "that it runs with --join, the cluster secret, and a peer it can reach",
            )
        behind = commit - status.applied_index
        if behind > PROMOTE_MAX_LAG:
            raise FailedPrecondition(
                "LEARNER_BEHIND",
                f"learner {member.id!r} has applied index {status.applied_index}, {behind} "
                f"entries behind the commit index {commit} (at most {PROMOTE_MAX_LAG}); "
                "wait for it to catch up and promote it again",
            )

    def _hand_over_leadership(self, timeout: float) -> None:
        """Called on the leader that is being removed: step aside, let the caller retry."""
        new_leader = self._transfer(None, timeout)
        raise Unavailable(f"leadership moved to {new_leader}: run the removal there to finish it")

    def _transfer(self, target: str | None, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        status = self._raft.status()
        if target is not None and target == status["self"]:
            return self._members.self_id  # already leads
        before = status["raft_term"]
        while time.monotonic() < deadline:
            status = self._raft.status()
            if status["leader"] != status["self"] and status["raft_term"] > before:
                if status["leader"] is not None:
                    return self._members.by_raft_address(status["leader"]).id
            elif status["state"] == 2 and not self._raft.transfer_leadership(target):
                log.info("leadership transfer not possible yet: retrying")
            time.sleep(0.3)
        raise FailedPrecondition(
            "TRANSFER_FAILED", f"leadership did not move within {timeout:.0f} s; try again"
        )

    def _even_warning(self) -> list[str]:
        voters = sum(1 for m in self._members.table() if m.role == Role.VOTER)
        if voters % 2 == 0:
            return [
                f"{voters} voters tolerate no more failed replicas than {voters - 1} do; "
                "an odd number is recommended: add or remove one"
            ]
        return []
