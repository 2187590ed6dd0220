"""Who is in the cluster: replica ids, Raft and gRPC addresses.

Raft knows members by their Raft address only; front-ends and operators need the id
and the gRPC address, e.g. to follow an UNAVAILABLE error to the leader.
"""

from cluster.config import Peer, ReplicaConfig
from cluster.raft import Raft


class Members:
    def __init__(self, config: ReplicaConfig, raft: Raft) -> None:
        self.self_id = config.id
        self._raft = raft
        me = Peer(config.id, config.raft_address, config.grpc_address)
        self._by_raft = {p.raft_address: p for p in [me, *config.peers]}

    def by_raft_address(self, address: str) -> Peer:
        return self._by_raft.get(address) or Peer(address, address, "")

    def leader_grpc_address(self) -> str:
        leader = self._raft.status().get("leader")
        return self.by_raft_address(leader).grpc_address if leader else ""
