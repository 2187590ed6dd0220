"""PySyncObj's TCP transport with two changes that make it safe.

- Durability: before a Raft message leaves, the journal is fsynced. A follower's
  acknowledgement or vote, and a leader's append, can then only speak of entries that
  are on disk, and one fsync covers everything appended since the last message.
  Forwarding a command to the leader, and the leader's "queued at index N" answer,
  claim nothing about the disk; syncing for them would cost one fsync per command.
- Stale acknowledgements: PySyncObj sets a follower's next index to whatever a
  success reply says, so a late reply to a heartbeat moves it backwards, and the
  leader sends again entries the follower has; PySyncObj's follower then truncates its
  log (matching entries included) and appends the resent batch, which can be shorter
  than what it had acknowledged. A success reply never moves the next index back here.
- Attack surface: PySyncObj accepts "utility" messages (add or remove a node, transfer
  leadership, status) from any connection that knows the cluster secret, bypassing
  everything regraft checks. Membership changes go through regraft's own API; here
  such a message only closes the connection.
"""

from pysyncobj.transport import TCPTransport

_NO_DURABILITY_CLAIM = frozenset({"apply_command", "apply_command_response"})


class DurableTransport(TCPTransport):
    def send(self, node, message) -> bool:
        if message.get("type") not in _NO_DURABILITY_CLAIM:
            self._syncObj.journal.sync()
        return super().send(node, message)

    def _onMessageReceived(self, node, message) -> None:
        if (
            not isinstance(message, dict)
            or message.get("type") != "next_node_idx"
            or message.get("reset")
        ):
            super()._onMessageReceived(node, message)
            return
        next_index = self._syncObj._SyncObj__raftNextIndex
        before = next_index.get(node)
        super()._onMessageReceived(node, message)
        if before is not None and next_index.get(node, before) < before:
            next_index[node] = before

    def _onUtilityMessage(self, conn, message) -> bool:
        conn.disconnect()
        self._unknownConnections.discard(conn)
        return True
