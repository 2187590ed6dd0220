"""The Cluster gRPC service: the Raft group as this replica sees it."""

import os

from cluster import auth, nonblocking, rpc
from cluster.backup import BackupSource
from cluster.membership import SUPPORTED_MACHINE_VERSION, Changes, Members
from cluster.raft import Raft
from cluster.reads import Reads
from regraft.v1 import cluster_pb2, cluster_pb2_grpc
from storage import commands, registry

_ROLES = {0: cluster_pb2.FOLLOWER, 1: cluster_pb2.CANDIDATE, 2: cluster_pb2.LEADER}
VERSION = "0.1.0"


class ClusterService(cluster_pb2_grpc.ClusterServicer):
    def __init__(
        self, raft: Raft, reads: Reads, members: Members, backups: BackupSource, changes: Changes
    ) -> None:
        self._raft = raft
        self._reads = reads
        self._members = members
        self._backups = backups
        self._changes = changes

    def leader_hint(self) -> str | None:
        return self._members.leader_grpc_address()

    @rpc.handler
    def Status(self, request, context):
        status = self._raft.status()
        if not status:
            raise rpc.Unavailable("the replica is still starting")
        leader = status["leader"]
        last = status["last_log_index"]
        with self._raft.store.read() as view:
            revision, state_hash = view.revision, view.state_hash
            retention = registry.event_retention(view)
            machine_version = view.machine_version
        sizes = self._raft.store.stat()
        disk = os.statvfs(self._raft.store.path)
        leader_peer = self._members.by_raft_address(leader) if leader else None
        return cluster_pb2.StatusResponse(
            id=self._members.self_id,
            role=cluster_pb2.LEARNER if status["self"] is None else _ROLES[status["state"]],
            term=status["raft_term"],
            leader_id=leader_peer.id if leader_peer else "",
            leader_address=leader or "",
            leader_grpc_address=leader_peer.grpc_address if leader_peer else "",
            commit_index=status["commit_idx"],
            applied_index=status["last_applied"],
            last_log_index=last,
            members=self._member_list(status),
            state_hash=state_hash,
            revision=revision,
            has_quorum=status["has_quorum"],
            version=VERSION,
            db_used_bytes=sizes["used_bytes"],
            db_map_bytes=sizes["map_bytes"],
            disk_free_bytes=disk.f_bavail * disk.f_frsize,
            disk_total_bytes=disk.f_blocks * disk.f_frsize,
            event_retention=cluster_pb2.EventRetention(
                revisions=retention.revisions, max_age_seconds=retention.max_age_seconds
            ),
            machine_version=machine_version,
            supported_machine_version=SUPPORTED_MACHINE_VERSION,
        )

    @rpc.handler
    def SetEventRetention(self, request, context):
        command = commands.set_event_retention(
            request.revisions, request.max_age_seconds, auth.actor(context)
        )
        return cluster_pb2.SetEventRetentionResponse(
            revision=rpc.propose(self._raft, command, context).revision
        )

    @rpc.handler
    def Backup(self, request, context):
        # The wait for a linearizable view is bounded like a read's; the transfer is not.
        yield from self._backups.stream(
            request.read,
            min(rpc.timeout(context), rpc.DEFAULT_TIMEOUT),
            context.is_active,
            nonblocking.Call(context).cancel,
        )

    # -- membership ---------------------------------------------------------------------

    def _member_list(self, status: dict, view=None) -> list[cluster_pb2.Member]:
        """Every member, with what this replica sees of it (lag: on the leader only)."""
        is_leader, last = status["state"] == 2, status["last_log_index"]
        found = []
        for member in self._members.table(view):
            address = self._members.local_raft_address(member)
            is_self = member.id == self._members.self_id
            match = last if is_self else status.get(f"match_idx_server_{address}", 0)
            found.append(
                cluster_pb2.Member(
                    id=member.id,
                    raft_address=member.raft_address,
                    grpc_address=member.grpc_address,
                    reachable=is_self or status["peers"].get(address, False),
                    match_index=match if is_leader else 0,
                    lag=max(0, last - match) if is_leader else 0,
                    is_self=is_self,
                    is_leader=address == status["leader"],
                    membership=member.role,
                )
            )
        return found

    def _changed(self, warnings: list[str]) -> cluster_pb2.MemberChangeResponse:
        return cluster_pb2.MemberChangeResponse(
            members=self._member_list(self._raft.status()),
            revision=self._raft.revision,
            warnings=warnings,
        )

    @rpc.handler
    def ListMembers(self, request, context):
        status = self._raft.status()
        if not status:
            raise rpc.Unavailable("the replica is still starting")
        with self._reads.view(request.read, rpc.timeout(context), context.is_active) as view:
            return cluster_pb2.ListMembersResponse(
                members=self._member_list(status, view), revision=view.revision
            )

    @rpc.handler
    def AddMember(self, request, context):
        warnings = self._changes.add(
            request.id,
            request.raft_address,
            request.grpc_address,
            request.force,
            rpc.timeout(context),
            auth.actor(context),
        )
        return self._changed(warnings)

    @rpc.handler
    def PromoteMember(self, request, context):
        promoted = self._changes.promote(request.id, rpc.timeout(context), auth.actor(context))
        return self._changed(promoted)

    @rpc.handler
    def RemoveMember(self, request, context):
        removed = self._changes.remove(
            request.id, request.force, rpc.timeout(context), auth.actor(context)
        )
        return self._changed(removed)

    @rpc.handler
    def TransferLeadership(self, request, context):
        leader = self._changes.transfer(request.to_id, rpc.timeout(context))
        return cluster_pb2.TransferLeadershipResponse(
            leader_id=leader, term=self._raft.status()["raft_term"]
        )
