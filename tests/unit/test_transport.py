"""DurableTransport: what it adds to PySyncObj's TCP transport, without sockets."""

from types import SimpleNamespace

from pysyncobj.transport import TCPTransport

from cluster.transport import DurableTransport


class Recorder:
    def __init__(self):
        self.calls = []


def make_transport(recorder):
    """A DurableTransport without its constructor: only what send and receive touch."""
    transport = DurableTransport.__new__(DurableTransport)
    journal = SimpleNamespace(sync=lambda: recorder.calls.append("sync"))
    transport._syncObj = SimpleNamespace(journal=journal, _SyncObj__raftNextIndex={})
    transport._onMessageReceivedCallback = None
    return transport


def test_raft_messages_leave_only_after_the_journal_is_synced(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(
        TCPTransport, "send", lambda self, node, m: recorder.calls.append(m["type"]) or True
    )
    transport = make_transport(recorder)
    for kind in ("append_entries", "next_node_idx", "request_vote", "response_vote"):
        recorder.calls.clear()
        transport.send("peer", {"type": kind})
        assert recorder.calls == ["sync", kind]


def test_forwarding_a_command_does_not_cost_an_fsync(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(
        TCPTransport, "send", lambda self, node, m: recorder.calls.append(m["type"]) or True
    )
    transport = make_transport(recorder)
    transport.send("leader", {"type": "apply_command"})
    transport.send("follower", {"type": "apply_command_response"})
    assert recorder.calls == ["apply_command", "apply_command_response"]


def test_a_stale_success_reply_does_not_move_next_index_back():
    transport = make_transport(Recorder())
    next_index = transport._syncObj._SyncObj__raftNextIndex
    next_index["follower"] = 121

    def pysyncobj_handler(node, message):
        # What PySyncObj does with a success reply: next index := the reply's value.
        next_index[node] = message["next_node_idx"]

    transport._onMessageReceivedCallback = pysyncobj_handler
    transport._onMessageReceived(
        "follower", {"type": "next_node_idx", "next_node_idx": 111, "success": True, "reset": False}
    )
    assert next_index["follower"] == 121
    transport._onMessageReceived(
        "follower", {"type": "next_node_idx", "next_node_idx": 130, "success": True, "reset": False}
    )
    assert next_index["follower"] == 130
    # A reset (the follower lacks entries) must still move it back.
    transport._onMessageReceived(
        "follower", {"type": "next_node_idx", "next_node_idx": 90, "success": False, "reset": True}
    )
    assert next_index["follower"] == 90


def test_utility_messages_are_refused():
    closed = []
    transport = make_transport(Recorder())
    transport._unknownConnections = set()

    class Connection:
        def disconnect(self):
            closed.append(True)

    conn = Connection()
    transport._unknownConnections.add(conn)
    assert transport._onUtilityMessage(conn, ["add", "127.0.0.1:1"]) is True
    assert closed == [True]
    assert conn not in transport._unknownConnections
