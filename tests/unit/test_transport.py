"""DurableTransport: what it adds to PySyncObj's TCP transport, without sockets."""

import errno
from types import SimpleNamespace

import pytest
from pysyncobj.transport import TCPTransport

from cluster import transport as transport_module
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
    transport.withhold_votes = False
    return transport


def test_raft_messages_leave_only_after_the_journal_is_synced(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(
        TCPTransport, "send", lambda self, node, m: recorder.calls.append(m["type"]) or True
    )
    transport = make_transport(recorder)
    for kind in ("next_node_idx", "request_vote", "response_vote", "timeout_now"):
        recorder.calls.clear()
        transport.send("peer", {"type": kind})
        assert recorder.calls == ["sync", kind]


def test_messages_that_claim_nothing_about_the_disk_cost_no_fsync(monkeypatch):
    """Forwarding a command, and a leader's append (the leader syncs before it reads
    the replies: cluster/raft.py)."""
    recorder = Recorder()
    monkeypatch.setattr(
        TCPTransport, "send", lambda self, node, m: recorder.calls.append(m["type"]) or True
    )
    transport = make_transport(recorder)
    transport.send("leader", {"type": "apply_command"})
    transport.send("follower", {"type": "apply_command_response"})
    transport.send("follower", {"type": "append_entries"})
    assert recorder.calls == ["apply_command", "apply_command_response", "append_entries"]


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


def test_a_replica_with_an_empty_log_votes_only_in_a_new_cluster_until_a_leader_speaks():
    """A voter that lost its disk forgot its vote: it must not vote again in a term it
    may have voted in. It still votes for a candidate as new as itself (all replicas
    of a new cluster), and for anyone once a leader has been heard."""
    handled = []
    transport = make_transport(Recorder())
    transport._onMessageReceivedCallback = lambda node, message: handled.append(message)
    transport.withhold_votes = True
    old_log = {"type": "request_vote", "term": 7, "last_log_index": 90, "last_log_term": 6}
    new_log = {"type": "request_vote", "term": 1, "last_log_index": 1, "last_log_term": 0}
    transport._onMessageReceived("candidate", old_log)
    assert handled == []
    transport._onMessageReceived("candidate", new_log)
    assert handled == [new_log]
    append = {"type": "append_entries", "term": 7, "commit_index": 90, "entries": []}
    transport._onMessageReceived("leader", append)
    transport._onMessageReceived("candidate", old_log)
    assert handled == [new_log, append, old_log]
    assert not transport.withhold_votes


def append_handled_by_pysyncobj(held, applied, message):
    """The append PySyncObj's handler gets once the transport has seen `message`."""
    handled = []
    transport = make_transport(Recorder())
    transport._syncObj._SyncObj__raftLog = held
    transport._syncObj.raftLastApplied = applied
    transport._onMessageReceivedCallback = lambda node, m: handled.append(m)
    transport._onMessageReceived("leader", {"type": "append_entries", "term": 3, **message})
    (append,) = handled
    return append


# A follower's log: indexes 10..20, term 2 up to 15, then term 3.
HELD = [(b"c%d" % i, i, 2 if i <= 15 else 3) for i in range(10, 21)]


def test_an_append_skips_the_entries_the_follower_holds():
    """PySyncObj cuts the log after prevLogIdx, matching entries included."""
    resent = [(b"c%d" % i, i, 2 if i <= 15 else 3) for i in range(17, 23)]
    append = append_handled_by_pysyncobj(
        HELD, 12, {"prevLogIdx": 16, "prevLogTerm": 3, "entries": resent}
    )
    assert (append["prevLogIdx"], append["prevLogTerm"]) == (20, 3)
    assert [e[1] for e in append["entries"]] == [21, 22]


def test_a_conflicting_entry_still_truncates():
    other_term = [(b"x", 17, 3), (b"y", 18, 4), (b"z", 19, 4)]
    append = append_handled_by_pysyncobj(
        HELD, 12, {"prevLogIdx": 16, "prevLogTerm": 3, "entries": other_term}
    )
    assert (append["prevLogIdx"], append["prevLogTerm"]) == (17, 3)
    assert [e[1] for e in append["entries"]] == [18, 19]


def test_applied_entries_are_never_cut_even_by_a_heartbeat():
    """Applied means committed: the same in every later leader's log."""
    heartbeat = append_handled_by_pysyncobj(
        HELD, 18, {"prevLogIdx": 14, "prevLogTerm": 2, "entries": []}
    )
    assert (heartbeat["prevLogIdx"], heartbeat["prevLogTerm"]) == (18, 3)
    assert heartbeat["entries"] == []


def test_an_append_of_new_entries_is_passed_as_it_is():
    message = {"prevLogIdx": 20, "prevLogTerm": 3, "entries": [(b"n", 21, 3)]}
    append = append_handled_by_pysyncobj(HELD, 20, message)
    assert append == {"type": "append_entries", "term": 3, **message}


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


class Stranger:
    """An incoming connection that never says who it is."""

    def __init__(self):
        self.closed = False

    def disconnect(self):
        self.closed = True

    def setOnMessageReceivedCallback(self, callback):
        pass

    def setOnDisconnectedCallback(self, callback):
        pass


def test_incoming_connections_past_the_cap_are_closed_on_arrival(monkeypatch):
    monkeypatch.setattr(transport_module, "MAX_UNIDENTIFIED", 3)
    transport = make_transport(Recorder())
    transport._unknownConnections, transport._arrivals = set(), {}
    transport._syncObj.encryptor = None
    waiting = [Stranger() for _ in range(3)]
    for conn in waiting:
        transport._onNewIncomingConnection(conn)
    surplus = Stranger()
    transport._onNewIncomingConnection(surplus)
    assert surplus.closed and surplus not in transport._unknownConnections
    assert not any(conn.closed for conn in waiting)


def test_connections_that_never_identify_are_closed_after_a_while():
    transport = make_transport(Recorder())
    transport._unknownConnections, transport._arrivals = set(), {}
    old, young, identified = Stranger(), Stranger(), Stranger()
    transport._unknownConnections |= {old, young}
    transport._arrivals = {old: 100.0, young: 104.0, identified: 100.0}
    transport.drop_unidentified(100.0 + transport_module.IDENTIFY_WITHIN + 1)
    assert old.closed and old not in transport._unknownConnections
    assert not young.closed and young in transport._unknownConnections
    assert not identified.closed  # it said who it is: no longer watched
    assert set(transport._arrivals) == {young}


def test_a_failed_accept_for_lack_of_descriptors_keeps_the_port():
    class Exhausted:
        def accept(self):
            raise OSError(errno.EMFILE, "Too many open files")

    class Broken:
        def accept(self):
            raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(BlockingIOError) as later:  # TcpServer ignores EAGAIN
        transport_module._ListeningSocket(Exhausted()).accept()
    assert later.value.errno == errno.EAGAIN
    with pytest.raises(OSError) as broken:  # TcpServer unbinds: the socket is unusable
        transport_module._ListeningSocket(Broken()).accept()
    assert broken.value.errno == errno.EBADF
