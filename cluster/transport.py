"""PySyncObj's TCP transport with the changes below, which make it safe and cheaper.

- Durability: before a vote or a follower's reply leaves, the journal is fsynced: it
  can then only speak of entries that are on disk, and one fsync covers everything
  appended since the last message. A leader's append claims nothing about the
  leader's disk: its own copy counts towards a majority only when the replies are
  read, and the tick syncs the journal before that (cluster/raft.py), so followers
  write while the leader does. Forwarding a command to the leader, and the leader's
  "queued at index N" answer, claim nothing either; syncing for them would cost one
  fsync per command.
- Stale acknowledgements: PySyncObj sets a follower's next index to whatever a
  success reply says, so a late reply to a heartbeat moves it backwards, and the
  leader sends again entries the follower has; PySyncObj's follower then truncates its
  log (matching entries included) and appends the resent batch, which can be shorter
  than what it had acknowledged. A success reply never moves the next index back here.
- Entries held: PySyncObj's follower cuts its log after the append's previous index
  before appending, matching entries included (a learner promoted, a reconnect), and
  logs CRITICAL when it cuts applied ones. An append is first stripped of the entries
  this replica already holds: those it applied (committed, hence the same in every
  later leader's log) and those of the same term (the same entry, by Log Matching).
  Only a conflicting entry truncates the log: an append that ends before the log here
  does cuts nothing, and its reply claims only what is known to be the leader's (see
  _without_entries_held).
- Large entries: PySyncObj's leader sends an entry of 1 MiB or more in pieces, and
  its follower takes a piece for the last one whenever what is left is shorter than
  the command, although the pickle is longer (protocol 2 doubles every byte above
  0x7f): unpickling then raises on the tick thread, over and over. Pieces are put
  together here instead, and the whole entry goes to PySyncObj as a plain append,
  which _without_entries_held then checks like any other (_reassembled).
- Read rounds: the leader's appends carry its latest heartbeat round, and a reply
  echoes the round and term of the append it answers, so that the leader can confirm
  linearizable reads without a log entry (cluster/readindex.py, whose requests and
  answers between followers and the leader also travel here). A round's append to a
  follower that asked may carry the index its reads are served at, which the follower
  confirms itself once PySyncObj has handled the append.
- Commit notices: a leader's word, sent after its fsync, that its journal holds the
  commands a follower forwarded; the follower commits them on it (cluster/commitnotice.py).
  The transport notes the index each forwarded command got (the leader's answer), and
  the notice, like a reply, leaves only after the journal is synced.
- PreVote: the questions a replica asks before it starts an election, and their
  answers, travel here (cluster/prevote.py); an append accepted in this replica's
  term is hearing from a leader, after which it denies them for a while.
- Fewer messages: a write sent to a follower is forwarded to the leader, which
  answers with the index it got: two messages per write, each pickled, compressed
  and encrypted on its own. Those of one tick travel as one message per peer, sent
  at the end of the tick (before the appends, so that an answer still arrives before
  its entry commits). Releases before this one do not read such a message: it is
  sent only once the cluster's machine version says every member does.
- Memory: PySyncObj buffers a frame of whatever length its 4-byte header claims,
  from anyone who connects. Frames are capped: 64 KiB before the other end has
  proven it knows the secret (a frame carrying this side's fresh key: a captured
  first frame replayed does not), 16 MiB after. Entries travel in batches of about 1 MiB
  plus at most one whole entry (a command is at most about 8 MiB: a 4 MiB manifest
  and what is derived from it), snapshot chunks in 1 MiB pieces, forwarded commands
  in batches of the same bound (_batches). Pickle protocol 2 (older releases) may
  double a command's bytes and Fernet adds a third, which compression takes back on a
  large message (_StoredZlib).
- Attack surface: PySyncObj accepts "utility" messages (add or remove a node, transfer
  leadership, status) from any connection that knows the cluster secret, bypassing
  everything regraft checks. Membership changes go through regraft's own API; here
  such a message only closes the connection.
- Lost disks: a voter restarted on an empty data directory (a lost disk, repaired
  with no operator step) has forgotten the term and vote it had, and could vote a
  second time in a term where it already voted: two leaders in one term. While its
  log holds no entry of a leader's term (it has not heard from one since), it
  ignores requests for votes from candidates whose log does; in a new cluster, where
  every log is empty, it votes as usual. Its silence also keeps a candidate that
  lacks entries only it had held from winning with it. With two voters it votes: the
  other is in every majority, so it holds every committed entry and cannot have won
  a term with the lost vote.
- Connection floods: PySyncObj keeps an incoming connection that never says who it is
  for ever, and when accept() then fails for lack of file descriptors it closes its
  listening socket for good: the replica could no longer be reached by its peers. A
  connection must identify itself within IDENTIFY_WITHIN seconds, at most
  MAX_UNIDENTIFIED wait at once (more are closed on arrival), and a failed accept()
  leaves the port open.
- CPU: PySyncObj compresses every message with zlib (level 3: about 10 us for a
  small one, more than the bytes cost on a LAN). A message is still a zlib stream,
  which every release reads, but one under STORED_BELOW bytes is stored, not
  compressed, and a larger one is compressed at level 1 (_StoredZlib). It is
  encrypted by cluster/cipher.py (Fernet tokens, or sealed messages from machine
  version 5).
- Pickles: PySyncObj pickles with protocol 2, where bytes are written as a latin-1
  string, every byte above 0x7f doubled, and loading them calls codecs.encode. A
  command is such bytes inside its entry's pickle, and the entry is pickled again in
  each message that carries it: 20 entries of a small write made a 9.6 KiB message
  that took 11 us to load, 3.7 KiB and 1.6 us with protocol 5 (PICKLE_PROTOCOL),
  which is what entries and messages are written with now. Every release reads both
  (pickle reads any protocol up to its own), so no machine version gates it.
"""

import errno
import logging
import pickle
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator

import pysyncobj.pickle
from pysyncobj import tcp_connection
from pysyncobj.tcp_connection import TcpConnection
from pysyncobj.tcp_server import TcpServer
from pysyncobj.transport import TCPTransport

from cluster import commitnotice, metrics, prevote, readindex

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 16 << 20
MAX_UNAUTHENTICATED_FRAME_BYTES = 64 << 10
_LENGTH = struct.Struct("i")
_read = TcpConnection._TcpConnection__processRead


def _bounded_read(connection: TcpConnection) -> bool:
    """TcpConnection's read of one chunk: refuses a frame longer than a peer can
    legitimately send, and stops reading once a whole frame is here, so that it is
    parsed (a stranger's refused) before more is read. PySyncObj reads until the socket
    is empty, which a stranger sending faster than that never lets happen: one
    connection announcing a small frame and then pumping bytes held a replica's Raft
    thread in this loop (its buffer growing, by copies, to 32 MiB) until the others
    elected another leader; one per replica left the cluster without a leader.

    A frame is gathered in a bytearray and handed to PySyncObj whole: its `readBuffer
    += incoming` copies the whole buffer for every chunk of 8 to 16 KiB, so a 4 MiB
    frame took 0.28 s of the Raft thread and a 16 MiB one 5 s. Peers send far smaller
    frames (large entries go in pieces), but a replayed frame lets a stranger announce
    one of 16 MiB, and elections followed."""
    sock = connection._TcpConnection__socket
    held = getattr(connection, "_regraft_partial", None)
    if held is None or held[0] is not sock:  # a new connection, or a reconnection
        held = (sock, bytearray())
        connection._regraft_partial = held
    partial = held[1]
    # What PySyncObj left unparsed (the start of the next frame), then the new chunk.
    partial += connection._TcpConnection__readBuffer
    connection._TcpConnection__readBuffer = b""
    more = _read(connection)
    partial += connection._TcpConnection__readBuffer
    connection._TcpConnection__readBuffer = b""
    if len(partial) >= _LENGTH.size:
        (length,) = _LENGTH.unpack_from(partial)
        limit = MAX_FRAME_BYTES if _trusted(connection, sock) else MAX_UNAUTHENTICATED_FRAME_BYTES
        if not 0 <= length <= limit or len(partial) > 2 * MAX_FRAME_BYTES:
            log.warning(
                "peer connection from %s announced a %d-byte frame%s: closing it",
                _remote(connection),
                length,
                _OTHER_PROTOCOLS.get(bytes(partial[:4]), ""),
            )
            partial.clear()
            connection.disconnect()
            return False
        if len(partial) >= _LENGTH.size + length:
            connection._TcpConnection__readBuffer = bytes(partial)
            partial.clear()
            return False  # parse it first; the poller reports what is left to read
    return more


TcpConnection._TcpConnection__processRead = _bounded_read
_parse = TcpConnection._TcpConnection__processParseMessage
# The connection whose frame the tick thread is parsing, while it has not proven itself.
_parsing = threading.local()


def _parse_noting_proof(connection: TcpConnection):
    """TcpConnection's parse of one frame, noting when it proves the other end a peer.

    PySyncObj's handshake has each side send a fresh random key (sealed with the
    cluster secret), and every later frame carry the key the other side sent. A
    frame is parsed only once its seal and key check out, so one parsed while this
    side's key was already out shows that the other end knows the secret and is
    live: a first frame alone proves nothing, since it can be a copy of one captured
    on the wire (replayed, it makes this side send its key, which the copier cannot
    read). Until then frames are capped at MAX_UNAUTHENTICATED_FRAME_BYTES: before,
    a replayed first frame let a stranger announce 16 MiB frames (48 connections
    held 476 MB). Its frames also inflate to at most as much (_StoredZlib)."""
    sock = connection._TcpConnection__socket
    keyed = connection.recvRandKey is not None
    _parsing.unproven = None if _trusted(connection, sock) else connection
    try:
        message = _parse(connection)
    finally:
        _parsing.unproven = None
    if keyed and message is not None:
        connection._regraft_proven = sock
    return message


def _trusted(connection: TcpConnection, sock: socket.socket) -> bool:
    """Whether the cluster has no secret (--insecure), or a frame on this socket (not
    an earlier one of the same connection object: outgoing connections reconnect)
    proved the other end a peer."""
    if connection.encryptor is None:
        return True
    return sock is not None and getattr(connection, "_regraft_proven", None) is sock


TcpConnection._TcpConnection__processParseMessage = _parse_noting_proof


# What a frame's length is when another protocol's client dialed the peer port.
_OTHER_PROTOCOLS = {
    b"PRI ": " (an HTTP/2 preface: a gRPC client pointed at the Raft port?)",
    b"GET ": " (an HTTP request: a browser or probe pointed at the Raft port?)",
}


def _remote(connection: TcpConnection) -> str:
    """host:port of the other end, for the log."""
    try:
        host, port = connection._TcpConnection__socket.getpeername()[:2]
    except (AttributeError, OSError, ValueError):  # ValueError: not an IP socket
        return "an unknown address"
    return f"{host}:{port}"


IDENTIFY_WITHIN = 5.0
MAX_UNIDENTIFIED = 64
# accept() errors that say "not now", not "this socket is broken".
_TRANSIENT_ACCEPT = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED}
_bind = TcpServer.bind


class _ListeningSocket:
    """The peer port's socket: a failed accept() for lack of descriptors or memory reads
    as "nothing to accept now", where TcpServer would otherwise close the port."""

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock

    def accept(self):
        try:
            return self._socket.accept()
        except OSError as e:
            if e.errno not in _TRANSIENT_ACCEPT:
                raise
            log.warning("peer port: accept failed (%s); the port stays open", e)
            time.sleep(0.05)  # the connection stays queued: do not spin on it
            raise BlockingIOError(errno.EAGAIN, "try again later") from e

    def __getattr__(self, name: str):
        return getattr(self._socket, name)


def _bind_keeping_the_port(server: TcpServer) -> None:
    _bind(server)
    server._TcpServer__socket = _ListeningSocket(server._TcpServer__socket)


TcpServer.bind = _bind_keeping_the_port

# Sent at the end of the tick, batched per peer; a batch ends once its commands
# reach BATCH_BYTES, so that a frame stays far below MAX_FRAME_BYTES.
_BATCHED = frozenset({"apply_command", "apply_command_response"})
BATCH = "regraft_batch"
BATCH_BYTES = 1 << 20
PICKLE_PROTOCOL = 5
# Messages shorter than this (nearly all) are framed as stored zlib streams.
STORED_BELOW = 64 << 10
_NO_DURABILITY_CLAIM = _BATCHED | {
    "append_entries",
    BATCH,
    readindex.REQUEST,
    readindex.ANSWER,
    prevote.REQUEST,
    prevote.ANSWER,
    prevote.TERM,
}
# One entry in pieces: at most a pickled command (about 2 x 8 MiB), with room to spare.
MAX_PIECES_BYTES = 2 * MAX_FRAME_BYTES


class _StoredZlib:
    """The zlib module as PySyncObj's TcpConnection sees it (see the module's docstring)."""

    @staticmethod
    def decompress(data: bytes) -> bytes:
        """zlib.decompress, giving at most MAX_UNAUTHENTICATED_FRAME_BYTES while a frame
        of a connection not yet proven is parsed (`_parse_noting_proof`): a frame under
        the cap on the wire may inflate to megabytes, and any frame captured on the wire
        can be replayed as a first one (an attack review replayed a 37 KB frame holding
        an 8 MiB command: 64 connections held 530 MB). Raising makes PySyncObj close
        the connection."""
        connection = getattr(_parsing, "unproven", None)
        if connection is None:
            return zlib.decompress(data)
        inflater = zlib.decompressobj()
        message = inflater.decompress(data, MAX_UNAUTHENTICATED_FRAME_BYTES)
        if not inflater.eof and not inflater.unconsumed_tail:
            raise ValueError("a truncated zlib stream")
        if not inflater.eof:
            log.warning(
                "peer connection from %s sent a frame of more than %d bytes before proving "
                "it knows the secret: closing it",
                _remote(connection),
                MAX_UNAUTHENTICATED_FRAME_BYTES,
            )
            raise ValueError("an unproven peer's frame inflates past the cap")
        return message

    @staticmethod
    def compress(data: bytes, _level: int = -1) -> bytes:
        return zlib.compress(data, 0 if len(data) < STORED_BELOW else 1)


class DurableTransport(TCPTransport):
    def __init__(self, *args, **kwargs) -> None:
        tcp_connection.zlib = _StoredZlib
        # pysyncobj.pickle's protocol for messages and entries (a module-level name).
        setattr(pysyncobj.pickle, "__protocol", PICKLE_PROTOCOL)
        # Incoming connections that have not said who they are, by arrival time.
        self._arrivals: dict[TcpConnection, float] = {}
        self._swept_at = 0.0
        self._outbox: dict = {}
        # Per peer, while its append is handled: the highest next index to claim.
        self._claims: dict = {}
        # Per peer: the pieces so far of one large entry (see _reassembled).
        self._pieces: dict = {}
        # Per peer, while its append is handled: (round, term) for the reply to echo.
        self._echoes: dict = {}
        # Per peer: (time.monotonic(), term) of its last reply to an append.
        self.replied: dict = {}
        # Addresses of unknown peers, when last said in the log (once a minute each).
        self._strangers_said: dict[str, float] = {}
        super().__init__(*args, **kwargs)

    def _onNewIncomingConnection(self, conn: TcpConnection) -> None:
        if len(self._unknownConnections) >= MAX_UNIDENTIFIED:
            conn.disconnect()
            return
        self._arrivals[conn] = time.monotonic()
        super()._onNewIncomingConnection(conn)

    def _onTick(self) -> None:
        super()._onTick()
        now = time.monotonic()
        if now - self._swept_at >= 0.5:
            self._swept_at = now
            self.drop_unidentified(now)

    def drop_unidentified(self, now: float) -> None:
        """Close the incoming connections that took too long to say who they are."""
        for conn in list(self._arrivals):
            if conn not in self._unknownConnections:
                del self._arrivals[conn]  # identified, or gone
            elif now - self._arrivals[conn] > IDENTIFY_WITHIN:
                del self._arrivals[conn]
                self._unknownConnections.discard(conn)
                conn.disconnect()

    def send(self, node, message) -> bool:
        kind = message.get("type")
        if kind == "next_node_idx" and node in self._claims:
            # The reply to an append that left entries here the leader may lack.
            claim = min(message["next_node_idx"], self._claims[node])
            message = {**message, "next_node_idx": claim}
        if kind == "apply_command_response" and "log_idx" in message:
            self._syncObj.commit_notice.on_forwarded(node, message["log_idx"])
        if kind == "next_node_idx" and node in self._echoes:
            message = {**message, readindex.ECHO: self._echoes[node]}
        elif kind == "append_entries":
            reads = self._syncObj.read_index
            if reads.sent_round:
                message = {**message, readindex.ROUND: reads.sent_round}
            if node in reads.to_carry and "entries" in message:  # not a piece, nor a snapshot
                message = {**message, readindex.CARRIED: reads.to_carry[node]}
        if kind in _BATCHED and self._syncObj.batch_peer_messages:
            self._outbox.setdefault(node, []).append(message)
            return True
        sent = self._send_now(node, message)
        if sent and readindex.CARRIED in message:
            del self._syncObj.read_index.to_carry[node]  # else answered after the echoes
        return sent

    def flush(self) -> None:
        """Send the messages batched during this tick (on the tick thread, like send)."""
        outbox, self._outbox = self._outbox, {}
        for node, messages in outbox.items():
            for batch in _batches(messages):
                self._send_now(node, batch)

    def _send_now(self, node, message) -> bool:
        if message.get("type") not in _NO_DURABILITY_CLAIM:
            self._syncObj.journal.sync()
        sent = super().send(node, message)
        if sent:
            _count_snapshot_chunk(metrics.snapshot_sent_bytes, message)
        return sent

    def _onMessageReceived(self, node, message) -> None:
        _count_snapshot_chunk(metrics.snapshot_received_bytes, message)
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "request_vote" and self._withheld(node, message):
            return
        if kind == BATCH:
            for part in message.get("messages", ()):
                if isinstance(part, dict) and part.get("type") in _BATCHED:
                    super()._onMessageReceived(node, part)
            return
        if kind == readindex.REQUEST:
            self._syncObj.read_index.on_request(node, message)
            return
        if kind == prevote.REQUEST:
            self._syncObj.pre_vote.on_request(node, message, self._withheld(node, message))
            return
        if kind == prevote.ANSWER:
            self._syncObj.pre_vote.on_answer(node, message)
            return
        if kind == prevote.TERM:
            self._syncObj.pre_vote.on_term(message)
            return
        if kind == commitnotice.SYNCED:
            self._syncObj.commit_notice.on_synced(node, message)
            return
        if kind == readindex.ANSWER:
            self._syncObj.read_index.on_answer(node, message)
            return
        if kind == "append_entries" and "transmission" in message:
            message = self._reassembled(node, message)
            if message is None:
                return
        if kind == "append_entries" and self._behind(message):
            # PySyncObj ignores it without a word: this replica would stay out of the
            # cluster until the leader hears of a higher term (cluster/prevote.py).
            self._send_now(node, {"type": prevote.TERM, "term": self._syncObj.raftCurrentTerm})
            return
        if kind == "append_entries":
            if readindex.ROUND in message:  # the reply echoes it (cluster/readindex.py)
                self._echoes[node] = (message[readindex.ROUND], message.get("term"))
            try:
                self._on_append(node, message)
            finally:
                self._echoes.pop(node, None)
            if message.get("term") == self._syncObj.raftCurrentTerm:  # accepted: a leader's
                self._syncObj.pre_vote.heard_from_leader = time.monotonic()
            if readindex.CARRIED in message:
                self._syncObj.read_index.on_carried(node, message)
            return
        if kind != "next_node_idx":
            super()._onMessageReceived(node, message)
            return
        self._on_reply(node, message)
        self._syncObj.read_index.on_reply(node, message)

    def _behind(self, append: dict) -> bool:
        """Whether an append comes from a leader of a term older than this replica's."""
        term = append.get("term")
        return isinstance(term, int) and term < self._syncObj.raftCurrentTerm

    def _on_append(self, node, message: dict) -> None:
        leader_commit = message.get("commit_index")
        message, claim = self._without_entries_held(message)
        if claim is None:
            super()._onMessageReceived(node, message)
            return
        self._claims[node] = claim
        try:
            super()._onMessageReceived(node, message)
        finally:
            del self._claims[node]
        raft = self._syncObj
        if message["term"] == raft.raftCurrentTerm:
            # PySyncObj also keeps the capped value as the leader's commit index,
            # which status reports and readiness compares with: the real one.
            raft._SyncObj__leaderCommitIndex = leader_commit

    def _on_reply(self, node, message: dict) -> None:
        # A reply may count this replica's own copy of an entry towards a majority:
        # one appended inside this poll (a new leader's no-op) is synced first.
        self._syncObj.journal.sync()
        self.replied[node] = (time.monotonic(), self._syncObj.raftCurrentTerm)
        if message.get("reset"):
            super()._onMessageReceived(node, message)
            return
        next_index = self._syncObj._SyncObj__raftNextIndex
        before = next_index.get(node)
        super()._onMessageReceived(node, message)
        if before is not None and next_index.get(node, before) < before:
            next_index[node] = before

    def _reassembled(self, node, piece: dict) -> dict | None:
        """The append of one large entry once its last piece is here (else None).

        PySyncObj labels a piece 'finish' too early (see the module's docstring), so
        the pieces end where they unpickle; a piece whose first one was lost (a
        reconnect) is dropped, and the leader sends the entry again.
        """
        label, data = piece.get("transmission"), piece.get("data")
        if not isinstance(data, bytes):
            return None
        if label == "start":
            self._pieces[node] = [data]
        elif label in ("process", "finish") and node in self._pieces:
            self._pieces[node].append(data)
        else:
            return None
        pieces = self._pieces[node]
        if sum(map(len, pieces)) > MAX_PIECES_BYTES:
            log.warning("a large entry from %s exceeds %d bytes: dropped", node, MAX_PIECES_BYTES)
            del self._pieces[node]
            return None
        if label != "finish":
            return None
        try:
            entry = pickle.loads(b"".join(pieces))
        except (pickle.UnpicklingError, EOFError, ValueError):
            return None  # pieces still to come
        del self._pieces[node]
        whole = {k: v for k, v in piece.items() if k not in ("transmission", "data")}
        return whole | {"entries": [entry]}

    def _without_entries_held(self, message: dict) -> tuple[dict, int | None]:
        """The append minus the entries at its front that this replica holds already,
        and the highest next index its reply may claim (None: whatever PySyncObj says).

        PySyncObj cuts the log after the append's previous index, matching entries
        included, which Raft forbids: a stale resend (capped at 1 MiB) could cut
        entries this replica acknowledged, and a majority holding a committed entry
        would shrink. So an append whose entries are all here is made to end at the
        last entry here, and nothing is cut. If that entry is of the leader's term, the
        whole log is the leader's (Raft's Log Matching). If not, the entries past what
        the append carried and what this replica applied (committed, so in every later
        leader's log) may not be the leader's: the reply claims, and the commit index
        moves, only up to there, and a later append cuts them if they conflict.
        Only when the append agrees with the log here at its previous index, and on the
        term of every entry it carries that this replica applied: a divergence goes to
        PySyncObj unchanged, which cuts the log and says so.
        """
        previous = message.get("prevLogIdx")
        if previous is None:
            return message, None  # a snapshot, or nothing to check
        held = self._syncObj._SyncObj__raftLog
        first, last = held[0][1], held[-1][1]
        if not first <= previous <= last or held[previous - first][2] != message["prevLogTerm"]:
            return message, None
        entries = message.get("entries", ())
        applied = self._syncObj.raftLastApplied
        previous_term = message["prevLogTerm"]
        skipped = 0
        for _, index, term in entries:
            if index > last:
                break
            if held[index - first][2] != term:
                if index <= applied:
                    return message, None  # applied entries differ: let PySyncObj say so
                break
            previous, previous_term = index, term
            skipped += 1
        entries = entries[skipped:]
        claim = None
        if not entries and previous < last:
            # Everything it carries is here, and the log goes on. Known to be the
            # leader's: all of it when the last entry is of the leader's term, else what
            # it carried and what is applied (committed). The rest is kept, as Raft
            # wants, but neither claimed in the reply nor committed on this append.
            if held[-1][2] != message["term"]:
                claim = max(previous, min(applied, last)) + 1
                message = {**message, "commit_index": min(message["commit_index"], claim - 1)}
            previous, previous_term = last, held[-1][2]
        if previous == message["prevLogIdx"]:
            return message, claim
        rewritten = {**message, "prevLogIdx": previous, "prevLogTerm": previous_term}
        return rewritten | {"entries": entries}, claim

    def _withheld(self, node, message: dict) -> bool:
        """Whether to refuse a vote, or a pre-vote (see the module's docstring); said in
        the log each time: a cluster may wait for its leader because of it."""
        raft = self._syncObj
        if raft._SyncObj__raftLog[-1][2] > 0 or message.get("last_log_term", 0) == 0:
            return False
        if len(raft._SyncObj__otherNodes) < 2:
            return False
        log.warning(
            "not voting for %s in term %s: this replica's log is empty (a new replica, or "
            "its disk was lost) and waits to hear from a leader",
            getattr(node, "id", node),
            message.get("term"),
        )
        return True

    def _onIncomingMessageReceived(self, conn: TcpConnection, message) -> None:
        """PySyncObj's handshake; a peer that proved it knows the secret but names an
        address this replica does not count among its members is said in the log before
        PySyncObj closes the connection: the usual cause is a configuration whose peers
        predate a membership change (a replica restarted on a wiped disk then never
        hears from a leader it does not list)."""
        unknown = (
            isinstance(message, str)
            and message != "readonly"
            and message not in self._nodeAddrToNode
            and (self._syncObj.encryptor is None or conn.sendRandKey is not None)
        )
        if unknown and time.monotonic() - self._strangers_said.get(message, -60.0) >= 60.0:
            if len(self._strangers_said) >= 64:  # without a secret, anyone names anything
                self._strangers_said.clear()
            self._strangers_said[message] = time.monotonic()
            log.warning(
                "a peer connected as %s, which is not among the members this replica "
                "knows (%s): refused. If the membership changed, list the current members "
                "in this replica's peers",
                message,
                ", ".join(sorted(self._nodeAddrToNode)) or "none",
            )
        super()._onIncomingMessageReceived(conn, message)

    def _onUtilityMessage(self, conn, message) -> bool:
        conn.disconnect()
        self._unknownConnections.discard(conn)
        return True


def _batches(messages: list[dict]) -> Iterator[dict]:
    """The messages in order, as batches whose commands stop growing at BATCH_BYTES;
    one alone goes as it is (as older releases send it)."""
    group, size = [], 0
    for position, message in enumerate(messages):
        group.append(message)
        size += len(message.get("command") or b"")
        if size >= BATCH_BYTES or position == len(messages) - 1:
            yield group[0] if len(group) == 1 else {"type": BATCH, "messages": group}
            group, size = [], 0


def _count_snapshot_chunk(counter, message) -> None:
    """A snapshot travels as append_entries messages carrying (chunk, first, last)."""
    chunk = message.get("serialized") if isinstance(message, dict) else None
    if chunk:  # None between snapshots, False when PySyncObj could not read its file
        counter.inc(len(chunk[0]))
