"""PySyncObj's TCP transport with two changes that make it safe.

- Durability: before any message leaves, the journal is fsynced. A follower's
  acknowledgement or vote, and a leader's append, can then only speak of entries that
  are on disk, and one fsync covers everything appended since the last message.
- Attack surface: PySyncObj accepts "utility" messages (add or remove a node, transfer
  leadership, status) from any connection that knows the cluster secret, bypassing
  everything regraft checks. Membership changes go through regraft's own API; here
  such a message only closes the connection.
"""

from pysyncobj.transport import TCPTransport


class DurableTransport(TCPTransport):
    def send(self, node, message) -> bool:
        self._syncObj.journal.sync()
        return super().send(node, message)

    def _onUtilityMessage(self, conn, message) -> bool:
        conn.disconnect()
        self._unknownConnections.discard(conn)
        return True
