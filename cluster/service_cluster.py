"""The Cluster gRPC service: the Raft group as this replica sees it."""

from cluster import rpc
from cluster.membership import Members
from cluster.raft import Raft
from regraft.v1 import cluster_pb2, cluster_pb2_grpc

_ROLES = {0: cluster_pb2.FOLLOWER, 1: cluster_pb2.CANDIDATE, 2: cluster_pb2.LEADER}
VERSION = "0.1.0"


class ClusterService(cluster_pb2_grpc.ClusterServicer):
    def __init__(self, raft: Raft, members: Members) -> None:
        self._raft = raft
        self._members = members

    def leader_hint(self) -> str:
        return self._members.leader_grpc_address()

    @rpc.handler
    def Status(self, request, context):
        status = self._raft.status()
        if not status:
            raise rpc.Unavailable("the replica is still starting")
        leader = status["leader"]
        is_leader = status["state"] == 2
        last = status["last_log_index"]
        members = []
        for address in [status["self"], *sorted(status["peers"])]:
            peer = self._members.by_raft_address(address)
            is_self = address == status["self"]
            match = last if is_self else status.get(f"match_idx_server_{address}", 0)
            members.append(
                cluster_pb2.Member(
                    id=peer.id,
                    raft_address=address,
                    grpc_address=peer.grpc_address,
                    reachable=is_self or status["peers"][address],
                    match_index=match if is_leader else 0,
                    lag=max(0, last - match) if is_leader else 0,
                    is_self=is_self,
                    is_leader=address == leader,
                )
            )
        with self._raft.store.read() as view:
            revision, state_hash = view.revision, view.state_hash
        leader_peer = self._members.by_raft_address(leader) if leader else None
        return cluster_pb2.StatusResponse(
            id=self._members.self_id,
            role=_ROLES[status["state"]],
            term=status["raft_term"],
            leader_id=leader_peer.id if leader_peer else "",
            leader_address=leader or "",
            leader_grpc_address=leader_peer.grpc_address if leader_peer else "",
            commit_index=status["commit_idx"],
            applied_index=status["last_applied"],
            last_log_index=last,
            members=members,
            state_hash=state_hash,
            revision=revision,
            has_quorum=status["has_quorum"],
            version=VERSION,
        )
