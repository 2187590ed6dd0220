"""One Raft member in this process (a single-member cluster on a free loopback port):
enough to see, without a cluster, what start-up makes of what a crash left on disk
(journal, snapshot, LMDB), what a stuck Raft thread does to callers, and what an older
release does with a newer machine version.
"""

import os
import socket
import subprocess
import sys
import threading

import pytest
from pysyncobj import pickle as pysyncobj_pickle

from cluster import raft as raft_module
from cluster.config import ConfigError
from cluster.datadir import STATE
from cluster.raft import Raft, RaftSettings, _encode_entry, is_voter_change
from cluster.repair import DataDir
from regraft.v1 import command_pb2
from storage import commands, snapshot, versions
from storage.db import Store
from tests.cluster.harness import free_port
from tests.polling import wait_for

BARRIER = command_pb2.Command(barrier=command_pb2.BarrierOp()).SerializeToString()


class Member:
    """A single-member Raft over its own store in `directory`; close() stops both."""

    def __init__(self, directory: str, secret: str | None = None) -> None:
        self.store = Store(os.path.join(directory, STATE), map_size=64 << 20)
        settings = RaftSettings(
            address=f"127.0.0.1:{free_port()}", peers=[], data_dir=directory, secret=secret
        )
        self.raft = Raft(settings, self.store)

    def write(self, count: int) -> None:
        wait_for(self.raft._isLeader, what="leadership")
        for _ in range(count):
            self.raft.propose(BARRIER, timeout=10.0).result(15.0)

    def close(self) -> None:
        self.raft.close()
        self.store.close()


@pytest.fixture
def member(tmp_path):
    made = []

    def make(secret: str | None = None) -> Member:
        m = Member(str(tmp_path), secret)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def test_a_snapshot_newer_than_the_journal_start_keeps_the_later_entries(member, tmp_path):
    """A crash between writing a snapshot and trimming the journal loses nothing.

    PySyncObj clears a journal whose first entries are not the snapshot's: the entries
    after the snapshot (acknowledged ones among them) would be gone.
    """
    first = member()
    first.write(30)
    entries = list(first.raft.journal)
    last_index = entries[-1][1]
    first.close()

    # What the crash leaves: a snapshot at `cut`, the journal still from its start.
    cut = next(i for i, entry in enumerate(entries) if entry[1] == last_index - 10)
    header = {
        "raft_index": entries[cut][1],
        "raft_term": entries[cut][2],
        "last_entry": _encode_entry(entries[cut]),
        "previous_entry": _encode_entry(entries[cut - 1]),
        "nodes": [],
    }
    store = Store(str(tmp_path / STATE), map_size=64 << 20)
    with store.read() as view:
        snapshot.write(store, view, str(tmp_path / "raft.snapshot"), header)
    store.close()

    second = member()
    wait_for(lambda: second.raft.status().get("last_log_index"), what="a status")
    indexes = [entry[1] for entry in second.raft.journal]
    assert indexes[0] == entries[cut - 1][1], "the journal should start at the snapshot"
    assert set(range(entries[cut][1], last_index + 1)) <= set(indexes), (
        f"entries after the snapshot were dropped: the journal holds {indexes}"
    )
    second.write(1)
    assert second.store.revision > last_index


def test_peer_messages_are_sealed_from_the_machine_version_that_says_all_read_them(member):
    """Before it, replicas of an older release may be members: they read only Fernet."""
    first = member("s3cret")
    assert first.raft.encryptor.seal is False
    wait_for(first.raft._isLeader, what="leadership")
    version = commands.set_machine_version(versions.SEALED_PEER_MESSAGES - 1)
    first.raft.propose(version.SerializeToString(), timeout=10.0).result(15.0)
    assert first.raft.encryptor.seal is False
    version = commands.set_machine_version(versions.SEALED_PEER_MESSAGES)
    first.raft.propose(version.SerializeToString(), timeout=10.0).result(15.0)
    assert first.raft.encryptor.seal is True
    first.close()
    assert member("s3cret").raft.encryptor.seal is True  # restarted: from the stored version


def test_a_replica_without_state_asks_before_it_raises_its_term(member):
    """A new cluster, or a wiped disk: no machine version is known yet, and PreVote is
    on while the log is empty too (a wiped replica with an old configuration deposed a
    healthy leader every election timeout); then the version in force decides."""
    first = member()
    assert first.raft.pre_vote.version_unknown is True
    wait_for(first.raft._isLeader, what="leadership")
    first.write(1)  # state from here on: the version in force is 1
    assert (first.raft.pre_vote.version_unknown, first.raft.pre_vote.enabled) == (False, False)
    version = commands.set_machine_version(versions.PRE_VOTE)
    first.raft.propose(version.SerializeToString(), timeout=10.0).result(15.0)
    assert first.raft.pre_vote.enabled is True


def test_entries_and_messages_are_pickled_with_protocol_5(member):
    """PySyncObj's protocol 2 writes bytes as latin-1 strings, doubling those above 0x7f
    and calling codecs.encode to load them (cluster/transport.py, Pickles)."""
    first = member()
    first.write(1)
    command = first.raft._SyncObj__raftLog[-1][0]
    assert command[1:3] == b"\x80\x05", command[:8]
    message = pysyncobj_pickle.dumps({"type": "append_entries", "entries": [(command, 2, 1)]})
    assert message[:2] == b"\x80\x05" and len(message) < len(command) + 100


def test_an_unreadable_snapshot_at_start_up_is_fatal(member, tmp_path):
    """Going on without it would leave a log that starts after what LMDB holds."""
    first = member()
    first.write(3)
    first.close()
    with open(tmp_path / "raft.snapshot", "wb") as f:
        f.write(b"REGRAFT-SNAP-v1\n" + b"\0" * 100)

    second = member()
    error = wait_for(lambda: second.raft.fatal_error, what="the fatal error")
    assert "raft.snapshot" in error and "checksum" in error


def test_emergency_repair_drops_a_voter_change_it_could_not_commit(member, tmp_path):
    """A promotion cut short by the loss of quorum must not come back after the repair."""
    first = member()
    first.write(5)
    # A second voter that never comes: the entry adding it is logged, never committed.
    adding = first.raft.change_voters(True, "127.0.0.1:1", timeout=1.0)
    with pytest.raises(Exception, match="outcome unknown"):
        adding.result(5.0)
    assert any(is_voter_change(command) for command, _, _ in first.raft.journal)
    first.close()

    repaired = DataDir(str(tmp_path))
    try:
        repaired.make_single("r1")
        assert not any(is_voter_change(command) for command, _, _ in repaired.journal)
    finally:
        repaired.close()

    second = member()
    second.write(1)  # alone, it commits: no dead voter to wait for
    assert second.raft.status()["peers"] == {}


def test_a_taken_peer_port_stops_the_raft_thread(tmp_path, monkeypatch):
    """The tick thread must not go on retrying the bind (and lead, once the port frees)."""
    monkeypatch.setattr(raft_module, "BIND_ATTEMPTS", 2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen(1)
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        store = Store(str(tmp_path / "state"))
        before = {t.ident for t in threading.enumerate()}
        settings = RaftSettings(address=address, peers=[], data_dir=str(tmp_path), secret=None)
        with pytest.raises(ConfigError, match=f"cannot listen on raft_address '{address}'"):
            Raft(settings, store)
    started = [t for t in threading.enumerate() if t.ident not in before]
    assert not [t for t in started if t.is_alive()], started
    store.close()


_OLDER_RELEASE = """
import os, sys
from cluster.raft import Raft, RaftSettings
from storage import commands
from storage.db import Store
from tests.polling import wait_for
from tests.unit.test_raft_member import BARRIER

directory, address = sys.argv[1], sys.argv[2]
store = Store(os.path.join(directory, "state"), map_size=64 << 20)
# Code that applies machine version 1 only, in a cluster that raises it to 2.
settings = RaftSettings(address=address, peers=[], data_dir=directory, secret=None,
                        machine_version=1)
raft = Raft(settings, store)
wait_for(raft._isLeader, what="leadership")
raise_it = commands.set_machine_version(2).SerializeToString()
futures = [raft.propose(raise_it, 10.0)] + [raft.propose(BARRIER, 10.0) for _ in range(5)]
for future in futures:
    future.result(15.0)
print("applied everything", flush=True)
"""


def test_older_code_stops_before_an_entry_past_its_machine_version(tmp_path):
    """A replica whose code supports an older machine version than the one just raised
    (rolled back after the leader asked) exits before it applies the next entry: applied
    the old way, it would stay different, since no entry is applied twice. The release
    that can apply the rest does so from the journal."""
    script = [sys.executable, "-c", _OLDER_RELEASE, str(tmp_path), f"127.0.0.1:{free_port()}"]
    older = subprocess.run(
        script,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert older.returncode == 1, older.stderr
    assert "applied everything" not in older.stdout
    assert versions.too_new(2, 1) in older.stderr
    store = Store(str(tmp_path / STATE))
    try:
        with store.read() as view:  # applied up to the entry that raised the version
            raised_at, version = view.revision, view.machine_version
    finally:
        store.close()
    assert version == 2
    newer = Member(str(tmp_path))  # the release that supports version 2
    try:
        wait_for(lambda: newer.raft.revision == raised_at + 5, "the rest to be applied")
    finally:
        newer.close()


class Stuck(Exception):
    pass


def test_deadlines_expire_while_the_raft_thread_is_stuck(member):
    """The Raft thread expires deadlines after each tick; stuck (a full disk retried, a
    long snapshot install), it cannot, and a caller without a deadline of its own would
    wait until it is free again."""
    one = member()
    one.write(1)
    release = threading.Event()
    held = one.raft.on_tick(lambda: release.wait(30))
    try:
        future = one.raft.deadline_future(0.2, Stuck("no answer"))
        assert isinstance(future.exception(timeout=10), Stuck)
        assert not held.done()  # answered while the Raft thread was still held
    finally:
        release.set()
    assert held.result(timeout=10) is True
    one.write(1)  # and it goes on


class _Seen:
    """What Raft._reachable reads: a link, a role, the term and replies (time, term)."""

    def __init__(self, connected: bool, leading: bool, replied: dict) -> None:
        self.isNodeConnected = lambda node: connected
        self._isLeader = lambda: leading
        self.raftCurrentTerm = 5
        self._answered_within = raft_module.ANSWERED_WITHIN
        self._SyncObj__transport = type("Transport", (), {"replied": replied})()


@pytest.mark.parametrize(
    ("connected", "leading", "replied", "reachable"),
    [
        (False, False, {}, False),
        (True, False, {}, True),  # a follower knows its links only
        (True, True, {"p": (99.5, 5)}, True),
        (True, True, {}, False),  # a stopped process keeps its connection
        (True, True, {"p": (99.5, 4)}, False),  # answered an earlier leader of ours
        (True, True, {"p": (100.0 - raft_module.ANSWERED_WITHIN - 0.1, 5)}, False),
    ],
)
def test_seen_from_the_leader_a_voter_is_reachable_once_it_answers_this_term(
    connected, leading, replied, reachable
):
    seen = _Seen(connected, leading, replied)
    assert Raft._reachable(seen, "p", 100.0) is reachable
