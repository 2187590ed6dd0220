"""DurableTransport: what it adds to PySyncObj's TCP transport, without sockets."""

import errno
import pickle
import random
import socket
import struct
import threading
import time
import zlib
from types import SimpleNamespace

import pytest
from pysyncobj import pickle as pysyncobj_pickle
from pysyncobj import tcp_connection
from pysyncobj.tcp_connection import TcpConnection
from pysyncobj.transport import TCPTransport

from cluster import prevote, readindex
from cluster import transport as transport_module
from cluster.cipher import PeerCipher
from cluster.commitnotice import SYNCED
from cluster.transport import DurableTransport


class Recorder:
    def __init__(self):
        self.calls = []


def make_transport(recorder):
    """A DurableTransport without its constructor: only what send and receive touch."""
    transport = DurableTransport.__new__(DurableTransport)
    journal = SimpleNamespace(sync=lambda: recorder.calls.append("sync"))
    read_index = SimpleNamespace(
        sent_round=0, to_carry={}, on_reply=lambda node, message: None, carried=[]
    )
    read_index.on_carried = lambda node, message: read_index.carried.append((node, message))
    transport._syncObj = SimpleNamespace(
        journal=journal,
        _SyncObj__raftNextIndex={},
        batch_peer_messages=False,
        read_index=read_index,
        raftCurrentTerm=3,
        pre_vote=SimpleNamespace(heard_from_leader=float("-inf")),
        commit_notice=SimpleNamespace(forwarded=[], synced=[]),
    )
    notice = transport._syncObj.commit_notice
    notice.on_forwarded = lambda node, index: notice.forwarded.append((node, index))
    notice.on_synced = lambda node, message: notice.synced.append((node, message))
    transport._onMessageReceivedCallback = None
    transport._outbox = {}
    transport._claims = {}
    transport._pieces = {}
    transport._echoes = {}
    transport.replied = {}
    return transport


@pytest.fixture
def wire(monkeypatch) -> list:
    """The (peer, message) pairs that reach PySyncObj's TCP send, in order."""
    sent = []
    monkeypatch.setattr(TCPTransport, "send", lambda self, node, m: sent.append((node, m)) or True)
    return sent


def test_raft_messages_leave_only_after_the_journal_is_synced(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(
        TCPTransport, "send", lambda self, node, m: recorder.calls.append(m["type"]) or True
    )
    transport = make_transport(recorder)
    kinds = ("next_node_idx", "request_vote", "response_vote", "timeout_now", SYNCED)
    for kind in kinds:
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


def test_forwarded_commands_of_a_tick_travel_as_one_message_per_peer(wire):
    transport = make_transport(Recorder())
    transport._syncObj.batch_peer_messages = True
    first, second = {"type": "apply_command", "command": b"1"}, {"type": "apply_command"}
    answer = {"type": "apply_command_response", "request_id": 7}
    for node, message in (("leader", first), ("other", answer), ("leader", second)):
        assert transport.send(node, message)
    assert wire == []
    transport.send("leader", {"type": "append_entries"})  # not batched
    transport.flush()
    assert wire == [
        ("leader", {"type": "append_entries"}),
        ("leader", {"type": "regraft_batch", "messages": [first, second]}),
        ("other", answer),  # one alone goes as it is, as older releases send it
    ]
    wire.clear()
    transport.flush()
    assert wire == []


def test_until_every_member_reads_batches_nothing_waits(wire):
    transport = make_transport(Recorder())
    transport.send("leader", {"type": "apply_command"})
    assert wire == [("leader", {"type": "apply_command"})]


def test_the_leader_notes_the_index_each_followers_forwarded_command_got(wire):
    transport = make_transport(Recorder())
    transport.send("b", {"type": "apply_command_response", "request_id": 1, "log_idx": 41})
    transport.send("c", {"type": "apply_command_response", "request_id": 2, "error": 3})
    assert transport._syncObj.commit_notice.forwarded == [("b", 41)]


def test_a_leaders_synced_notice_goes_to_the_commit_notice_not_pysyncobj():
    transport = make_transport(Recorder())
    handled = []
    transport._onMessageReceivedCallback = lambda node, message: handled.append(message)
    notice = {"type": SYNCED, "index": 41, "term": 3}
    transport._onMessageReceived("a", notice)
    assert transport._syncObj.commit_notice.synced == [("a", notice)] and handled == []


def test_a_batch_is_handed_to_pysyncobj_one_message_at_a_time():
    """Only forwarded commands and their answers: a batch is no way around the checks
    the other kinds of message get here."""
    parts = [{"type": "apply_command", "command": b"1"}, {"type": "apply_command_response"}]
    smuggled = [{"type": "request_vote", "term": 9}, "not a message"]
    batch = {"type": "regraft_batch", "messages": [*parts, *smuggled]}
    assert handled_by_pysyncobj([batch], EMPTY_LOG) == parts


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


def handled_by_pysyncobj(messages, own_log, applied=0, other_voters=("b", "c")):
    """What PySyncObj's handler gets, of `messages`, on a replica holding `own_log`
    (applied up to `applied`) among `other_voters`."""
    handled = []
    transport = make_transport(Recorder())
    raft = transport._syncObj
    raft._SyncObj__raftLog, raft.raftLastApplied = own_log, applied
    raft._SyncObj__otherNodes = set(other_voters)
    transport._onMessageReceivedCallback = lambda node, message: handled.append(message)
    for message in messages:
        transport._onMessageReceived("peer", message)
    return handled


EMPTY_LOG = [(b"\x00", 1, 0)]  # PySyncObj's first entry, before any leader
WITH_HISTORY = {"type": "request_vote", "term": 7, "last_log_index": 90, "last_log_term": 6}
NEW_CLUSTER = {"type": "request_vote", "term": 1, "last_log_index": 1, "last_log_term": 0}


def test_a_replica_with_an_empty_log_votes_only_in_a_new_cluster():
    """A voter that lost its disk forgot its vote: it must not vote again in a term it
    may have voted in, nor help elect a candidate lacking writes only it had."""
    requests = [WITH_HISTORY, NEW_CLUSTER]
    assert handled_by_pysyncobj(requests, EMPTY_LOG) == [NEW_CLUSTER]


def test_a_replica_that_heard_from_a_leader_votes_as_usual():
    own_log = [*EMPTY_LOG, (b"\x00", 2, 5)]  # a leader of term 5 reached it
    requests = [WITH_HISTORY, NEW_CLUSTER]
    assert handled_by_pysyncobj(requests, own_log) == requests


def test_with_two_voters_an_empty_replica_votes():
    """The other voter is in every majority: it holds every committed entry."""
    assert handled_by_pysyncobj([WITH_HISTORY], EMPTY_LOG, other_voters=["b"]) == [WITH_HISTORY]


def test_a_reply_is_read_only_after_the_journal_is_synced():
    """A new leader appends its no-op inside a poll and sends it at once: a reply read
    in the same poll must not count a copy that is not on this disk yet."""
    recorder = Recorder()
    transport = make_transport(recorder)
    transport._syncObj._SyncObj__raftNextIndex = {}
    transport._onMessageReceivedCallback = lambda node, m: recorder.calls.append("counted")
    reply = {"type": "next_node_idx", "next_node_idx": 12, "success": True, "reset": False}
    transport._onMessageReceived("follower", reply)
    assert recorder.calls == ["sync", "counted"]


def test_the_leader_notes_when_and_in_which_term_each_voter_last_answered():
    """Raft._reachable: a stopped process keeps its connection, but answers nothing."""
    transport = make_transport(Recorder())
    transport._onMessageReceivedCallback = lambda node, m: None
    before = time.monotonic()
    reply = {"type": "next_node_idx", "next_node_idx": 12, "success": True, "reset": False}
    transport._onMessageReceived("follower", reply)
    at, term = transport.replied["follower"]
    assert at >= before and term == 3


def append_handled_by_pysyncobj(held, applied, message):
    """The append PySyncObj's handler gets once the transport has seen `message`."""
    append_entries = {"type": "append_entries", "term": 3} | message
    (append,) = handled_by_pysyncobj([append_entries], held, applied)
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


def test_a_resend_that_ends_early_keeps_the_entries_after_it():
    """A stale resend from this leader (term 3): every entry here of its term is in
    its log, and so is everything before; PySyncObj would cut 18..20 and reply 18."""
    resent = [(b"c%d" % i, i, 2 if i <= 15 else 3) for i in range(15, 18)]
    for entries in (resent, []):
        append = append_handled_by_pysyncobj(
            HELD, 12, {"prevLogIdx": 14, "prevLogTerm": 2, "entries": entries}
        )
        assert (append["prevLogIdx"], append["prevLogTerm"], append["entries"]) == (20, 3, [])


def append_and_reply(wire, applied, message):
    """What PySyncObj's handler gets of `message` (an append, term 4, commit index 30)
    on HELD, and the reply it sends back: PySyncObj claims its whole log, 21."""
    transport = make_transport(Recorder())
    raft = transport._syncObj
    raft._SyncObj__raftLog, raft.raftLastApplied = HELD, applied
    raft.raftCurrentTerm = message.get("term", 4)
    handled = []

    def pysyncobj_handler(node, append):
        handled.append(append)
        raft._SyncObj__leaderCommitIndex = append["commit_index"]
        reply = {"type": "next_node_idx", "next_node_idx": 21, "success": True, "reset": False}
        transport.send(node, reply)

    transport._onMessageReceivedCallback = pysyncobj_handler
    append = {"type": "append_entries", "term": 4, "commit_index": 30} | message
    transport._onMessageReceived("leader", append)
    (append,) = handled
    ((_, reply),) = wire
    assert transport._claims == {} and transport._echoes == {}
    assert raft._SyncObj__leaderCommitIndex == 30  # what status reports: the leader's
    return append, reply["next_node_idx"]


def test_a_new_leaders_resend_that_ends_early_cuts_nothing_and_claims_what_it_carried(wire):
    """A leader of term 4 may lack this replica's entries of term 3 past its append:
    they are kept (Raft cuts only on a conflict), but neither claimed nor committed."""
    append, claimed = append_and_reply(
        wire, 12, {"prevLogIdx": 16, "prevLogTerm": 3, "entries": [(b"c17", 17, 3)]}
    )
    assert (append["prevLogIdx"], append["prevLogTerm"], append["entries"]) == (20, 3, [])
    assert (append["commit_index"], claimed) == (17, 18)


def test_a_conflicting_entry_still_truncates():
    other_term = [(b"x", 17, 3), (b"y", 18, 4), (b"z", 19, 4)]
    append = append_handled_by_pysyncobj(
        HELD, 12, {"prevLogIdx": 16, "prevLogTerm": 3, "entries": other_term}
    )
    assert (append["prevLogIdx"], append["prevLogTerm"]) == (17, 3)
    assert [e[1] for e in append["entries"]] == [18, 19]


def test_a_heartbeat_from_behind_claims_the_applied_entries(wire):
    """Applied means committed: the same in every later leader's log (here one of
    term 4, which may lack the entries after those)."""
    heartbeat, claimed = append_and_reply(
        wire, 18, {"prevLogIdx": 14, "prevLogTerm": 2, "entries": []}
    )
    assert (heartbeat["prevLogIdx"], heartbeat["prevLogTerm"], heartbeat["entries"]) == (20, 3, [])
    assert (heartbeat["commit_index"], claimed) == (18, 19)


def test_an_append_of_the_leaders_term_claims_what_pysyncobj_says(wire):
    """The last entry here is of its term: the whole log is the leader's."""
    heartbeat, claimed = append_and_reply(
        wire, 12, {"term": 3, "prevLogIdx": 14, "prevLogTerm": 2, "entries": []}
    )
    assert (heartbeat["prevLogIdx"], heartbeat["commit_index"], claimed) == (20, 30, 21)


def test_an_append_of_new_entries_is_passed_as_it_is():
    message = {"prevLogIdx": 20, "prevLogTerm": 3, "entries": [(b"n", 21, 3)]}
    append = append_handled_by_pysyncobj(HELD, 20, message)
    assert append == {"type": "append_entries", "term": 3, **message}


def test_a_divergence_is_left_to_pysyncobj():
    """An applied entry of another term, or a previous entry that does not match: the
    log differs from the leader's, and PySyncObj cuts it and says so."""
    diverged = {"prevLogIdx": 14, "prevLogTerm": 2, "entries": [(b"a", 15, 2), (b"b", 16, 9)]}
    assert append_handled_by_pysyncobj(HELD, 18, diverged) == {
        "type": "append_entries",
        "term": 3,
        **diverged,
    }
    mismatch = {"prevLogIdx": 16, "prevLogTerm": 2, "entries": [(b"c", 17, 3)]}
    assert append_handled_by_pysyncobj(HELD, 12, mismatch)["prevLogIdx"] == 16
    beyond = {"prevLogIdx": None, "prevLogTerm": None, "entries": []}
    assert append_handled_by_pysyncobj(HELD, 12, beyond)["prevLogIdx"] is None


def in_pieces(entry, previous: tuple[int, int], piece_bytes: int = 1000) -> list[dict]:
    """The appends PySyncObj's leader sends for one entry of `piece_bytes` or more, with
    its labels: 'finish' once what is left is shorter than the command, not the pickle
    (pysyncobj/syncobj.py, __sendAppendEntries)."""
    data = pysyncobj_pickle.dumps(entry)
    pieces = []
    for pos in range(0, len(data), piece_bytes):
        if pos == 0:
            label = "start"
        elif pos + piece_bytes >= len(entry[0]):
            label = "finish"
        else:
            label = "process"
        pieces.append(
            {"type": "append_entries", "transmission": label, "data": data[pos : pos + piece_bytes],
             "term": 3, "commit_index": 19, "prevLogIdx": previous[0], "prevLogTerm": previous[1]}
        )  # fmt: skip
    return pieces


# Bytes above 0x7f: pickle protocol 2 doubles them, and PySyncObj labels the pieces
# 'finish' from the middle on.
LARGE = ("é".encode() * 2500, 21, 3)


def test_a_large_entry_reaches_pysyncobj_whole_once_its_last_piece_is_here():
    pieces = in_pieces(LARGE, (20, 3))
    assert [p["transmission"] for p in pieces].count("finish") > 1  # PySyncObj's labels
    handled = handled_by_pysyncobj(pieces, HELD, 12)
    assert handled == [
        {"type": "append_entries", "term": 3, "commit_index": 19, "prevLogIdx": 20,
         "prevLogTerm": 3, "entries": [LARGE]}
    ]  # fmt: skip


def test_a_large_entry_resent_in_pieces_cuts_nothing():
    """Entry 17 again, as one large entry: PySyncObj would cut 18..20."""
    held = [*HELD[:7], ("é".encode() * 2500, 17, 3), *HELD[8:]]
    (append,) = handled_by_pysyncobj(in_pieces(held[7], (16, 3)), held, 12)
    assert (append["prevLogIdx"], append["prevLogTerm"], append["entries"]) == (20, 3, [])


def test_pieces_without_their_first_are_dropped_and_the_next_entry_arrives():
    first, second = in_pieces(LARGE, (20, 3)), in_pieces((LARGE[0], 22, 3), (21, 3))
    handled = handled_by_pysyncobj([*first[1:], *second], HELD, 12)
    assert [a["entries"][0][1] for a in handled] == [22]


def test_pieces_past_the_bound_are_dropped(monkeypatch):
    monkeypatch.setattr(transport_module, "MAX_PIECES_BYTES", 3000)
    assert handled_by_pysyncobj(in_pieces(LARGE, (20, 3)), HELD, 12) == []
    assert len(handled_by_pysyncobj(in_pieces((b"a" * 2000, 21, 3), (20, 3)), HELD, 12)) == 1


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


def test_small_messages_are_zlib_streams_stored_rather_than_compressed():
    """Every release reads them (zlib.decompress); compressing a small one cost more CPU
    than the bytes it saved. A large one is compressed: see the next test."""
    small = b"sha256:" + b"ab" * 500
    large = small * 100
    stored, compressed = (transport_module._StoredZlib.compress(d, 3) for d in (small, large))
    assert len(stored) > len(small) and len(compressed) < len(large) / 10
    for data, framed in ((small, stored), (large, compressed)):
        assert transport_module._StoredZlib.decompress(framed) == data


def frame_bytes(message) -> int:
    """The length of `message` on the wire, framed as PySyncObj's TcpConnection does in
    an older release (pickle protocol 2, the larger)."""
    data = transport_module._StoredZlib.compress(pickle.dumps(message, 2), 3)
    return len(PeerCipher(bytes(32)).encrypt_at_time(data, 1))


def test_the_largest_append_fits_in_a_frame():
    """A command is at most about 8 MiB (a 4 MiB manifest and what is derived from it);
    pickle doubles its bytes >= 0x80 and Fernet adds a third, so stored it would not
    fit. PySyncObj sends it behind up to 1 MiB of smaller entries."""
    rng = random.Random(5)
    worst = bytes(rng.getrandbits(8) | 0x80 for _ in range(8 << 20))
    small = [(b"s" * 1000, index, 3) for index in range(1, 1000)]
    append = {"type": "append_entries", "term": 3, "entries": [*small, (worst, 1000, 3)]}
    assert frame_bytes(append) < transport_module.MAX_FRAME_BYTES


def test_forwarded_commands_are_batched_up_to_a_bound(wire):
    transport = make_transport(Recorder())
    transport._syncObj.batch_peer_messages = True
    commands = [{"type": "apply_command", "command": bytes(600 << 10)} for _ in range(3)]
    for command in commands:
        transport.send("leader", command)
    transport.flush()
    batch = {"type": "regraft_batch", "messages": commands[:2]}
    assert wire == [("leader", batch), ("leader", commands[2])]


def test_a_reply_echoes_the_round_and_term_of_the_append_it_answers(wire):
    """The leader counts echoes of its heartbeat rounds (cluster/readindex.py)."""
    heartbeat = {"term": 3, "prevLogIdx": 20, "prevLogTerm": 3, "entries": []}
    append_and_reply(wire, 12, heartbeat | {readindex.ROUND: 5})
    ((_, echoed),) = wire
    assert echoed[readindex.ECHO] == (5, 3)
    wire.clear()
    append_and_reply(wire, 12, heartbeat)
    ((_, plain),) = wire
    assert readindex.ECHO not in plain


def test_appends_carry_the_leaders_latest_round(wire):
    transport = make_transport(Recorder())
    transport.send("b", {"type": "append_entries", "term": 3})
    transport._syncObj.read_index.sent_round = 4
    transport.send("b", {"type": "append_entries", "term": 3})
    transport.send("b", {"type": "request_vote", "term": 3})
    assert [m.get(readindex.ROUND) for _, m in wire] == [None, 4, None]


def test_a_rounds_append_carries_the_index_for_the_requests_of_its_follower(wire):
    """Once, to that follower, and not on a piece of a large entry (nor a snapshot)."""
    transport = make_transport(Recorder())
    transport._syncObj.read_index.to_carry = {"b": (13, [7])}
    piece = {"type": "append_entries", "transmission": "start", "data": b"x", "term": 3}
    transport.send("b", piece)
    transport.send("c", {"type": "append_entries", "term": 3, "entries": []})
    transport.send("b", {"type": "append_entries", "term": 3, "entries": []})
    transport.send("b", {"type": "append_entries", "term": 3, "entries": []})
    assert [(n, m.get(readindex.CARRIED)) for n, m in wire] == [
        ("b", None),
        ("c", None),
        ("b", (13, [7])),
        ("b", None),
    ]


def test_reads_an_append_carries_are_looked_at_once_pysyncobj_handled_it(wire):
    """The follower confirms them only if it accepted the append in its term: PySyncObj
    must have seen the append's term first."""
    heartbeat = {"term": 4, "prevLogIdx": 20, "prevLogTerm": 3, "entries": []}
    transport = make_transport(Recorder())
    order = []
    transport._onMessageReceivedCallback = lambda node, m: order.append("pysyncobj")
    transport._syncObj.read_index.on_carried = lambda node, m: order.append(("carried", node))
    transport._syncObj._SyncObj__raftLog = HELD
    transport._syncObj.raftLastApplied = 12
    transport._syncObj.raftCurrentTerm = 4
    append = {"type": "append_entries", "commit_index": 30} | heartbeat
    transport._onMessageReceived("leader", append | {readindex.CARRIED: (30, [("r", 1)])})
    transport._onMessageReceived("leader", append)
    assert order == ["pysyncobj", ("carried", "leader"), "pysyncobj"]


class _NoPoller:
    def subscribe(self, *args) -> None:
        pass

    def unsubscribe(self, *args) -> None:
        pass


def _frame(message: object) -> bytes:
    data = zlib.compress(pysyncobj_pickle.dumps(message), 0)
    return struct.pack("i", len(data)) + data


def test_a_large_frame_reaches_pysyncobj_whole_not_chunk_by_chunk():
    """PySyncObj appends every chunk of 8 to 16 KiB to a bytes buffer, copying it: a
    4 MiB frame took 0.28 s of the Raft thread, 16 MiB 5 s. The frame is gathered
    aside and handed over once whole; what follows it is kept for the next one."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    payload = random.randbytes(3 << 20)
    wire = _frame(("first", payload)) + _frame(("second", b"small"))
    wire += _frame(("third", payload))[:999]
    sender = threading.Thread(target=theirs.sendall, args=(wire,))
    sender.start()
    try:
        connection = TcpConnection(_NoPoller(), socket=ours)
        parsed: list = []
        deadline = time.monotonic() + 30
        while len(parsed) < 2 and time.monotonic() < deadline:
            transport_module._bounded_read(connection)
            buffer = connection._TcpConnection__readBuffer
            if buffer:  # handed over: a whole frame at least
                assert struct.unpack_from("i", buffer)[0] + 4 <= len(buffer)
            while (message := connection._TcpConnection__processParseMessage()) is not None:
                parsed.append(message)
        assert parsed == [("first", payload), ("second", b"small")]
        sender.join(timeout=30)
        for _ in range(3):  # the third frame's start is all there is: nothing more
            transport_module._bounded_read(connection)
            assert connection._TcpConnection__processParseMessage() is None
    finally:
        sender.join(timeout=30)
        ours.close()
        theirs.close()


def test_a_grpc_client_dialing_the_peer_port_is_named_in_the_log(caplog):
    """Its HTTP/2 preface reads as a 541,676,112-byte frame: the log says what it is."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        connection = TcpConnection(_NoPoller(), socket=ours)
        theirs.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        with caplog.at_level("WARNING", logger="cluster.transport"):
            while connection.state != tcp_connection.CONNECTION_STATE.DISCONNECTED:
                transport_module._bounded_read(connection)
        assert "announced a 541676112-byte frame (an HTTP/2 preface" in caplog.text
    finally:
        ours.close()
        theirs.close()


def test_pre_vote_questions_are_answered_as_a_vote_would_be_withheld_and_cost_no_fsync(
    monkeypatch,
):
    """A replica with an empty log would not vote for a candidate with history: it does
    not grant it a pre-vote either (cluster/prevote.py). Asking changes nothing on
    disk, so neither the question nor the answer waits for an fsync."""
    recorder = Recorder()
    monkeypatch.setattr(
        TCPTransport, "send", lambda self, node, m: recorder.calls.append(m["type"]) or True
    )
    transport = make_transport(recorder)
    raft = transport._syncObj
    raft._SyncObj__raftLog, raft._SyncObj__otherNodes = EMPTY_LOG, {"b", "c"}
    asked = []
    raft.pre_vote.on_request = lambda node, m, withheld: asked.append((m["term"], withheld))
    raft.pre_vote.on_answer = lambda node, m: asked.append(("answer", m["granted"]))
    for request in (WITH_HISTORY, NEW_CLUSTER):
        transport._onMessageReceived("b", {**request, "type": prevote.REQUEST})
    transport._onMessageReceived("b", {"type": prevote.ANSWER, "term": 8, "granted": True})
    assert asked == [(7, True), (1, False), ("answer", True)]
    transport.send("b", {"type": prevote.REQUEST})
    transport.send("b", {"type": prevote.ANSWER})
    assert recorder.calls == [prevote.REQUEST, prevote.ANSWER]


def test_an_append_accepted_in_this_term_is_hearing_from_a_leader(wire):
    """Voters deny pre-votes for a while after (cluster/prevote.py). One of an older
    term is answered with this replica's term (PySyncObj would ignore it silently, and
    a replica whose votes were lost would stay out): the leader steps down."""
    transport = make_transport(Recorder())
    raft = transport._syncObj
    raft._SyncObj__raftLog, raft.raftLastApplied = HELD, 12
    handled = []
    transport._onMessageReceivedCallback = lambda node, m: handled.append(m["term"])
    heartbeat = {"type": "append_entries", "commit_index": 12, "prevLogIdx": 20}
    transport._onMessageReceived("a", heartbeat | {"term": 2, "prevLogTerm": 3})  # older
    assert raft.pre_vote.heard_from_leader == float("-inf") and handled == []
    assert wire == [("a", {"type": prevote.TERM, "term": 3})]
    before = time.monotonic()
    transport._onMessageReceived("a", heartbeat | {"term": 3, "prevLogTerm": 3})
    assert raft.pre_vote.heard_from_leader >= before and handled == [3]
    told = []
    raft.pre_vote.on_term = told.append
    transport._onMessageReceived("b", {"type": prevote.TERM, "term": 9})
    assert told == [{"type": prevote.TERM, "term": 9}]


def test_carried_reads_stay_for_the_answer_when_their_append_is_not_sent(monkeypatch):
    """Not connected: the leader answers them after the echoes, rather than the
    follower waiting to ask again."""
    monkeypatch.setattr(TCPTransport, "send", lambda self, node, m: False)
    transport = make_transport(Recorder())
    transport._syncObj.read_index.to_carry = {"b": (13, [7])}
    transport.send("b", {"type": "append_entries", "term": 3, "entries": []})
    assert transport._syncObj.read_index.to_carry == {"b": (13, [7])}
