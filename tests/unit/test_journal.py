"""cluster.journal.DurableJournal: what survives a reopen, and what a crash leaves behind."""

import errno
import json
import os
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from pysyncobj import journal as pysyncobj_journal

from cluster import journal as journal_module
from cluster.journal import DurableJournal

MAGIC_LENGTH = len(b"REGRAFT-JOURNAL\x01")
RECORD_OVERHEAD = 8 + 16  # length + crc, then index + term


class Journal(DurableJournal):
    """The journal under test, which knows whether its file descriptor is still its own."""

    closed = False

    def _destroy(self) -> None:
        super()._destroy()
        self.closed = True

    def crash(self) -> None:
        """Like kill -9: drop the descriptor without syncing or saving anything."""
        os.close(self._fd)
        self.closed = True


@pytest.fixture
def opened():
    """Open journals, closed at the end of the test whatever happens."""
    journals = []

    def open_journal(path):
        j = Journal(str(path))
        journals.append(j)
        return j

    yield open_journal
    for j in journals:
        if not j.closed:
            j.crash()


def entries(j):
    return [j[i] for i in range(len(j))]


def fill(j, count, first_index=1, term=1):
    made = []
    for i in range(count):
        command = f"command {first_index + i}".encode() * (i % 3 + 1)
        j.add(command, first_index + i, term)
        made.append((command, first_index + i, term))
    return made


def test_is_a_pysyncobj_journal(tmp_path, opened):
    j = opened(tmp_path / "journal")
    assert isinstance(j, pysyncobj_journal.Journal)
    assert len(j) == 0
    assert os.path.getsize(tmp_path / "journal") == MAGIC_LENGTH


def test_entries_survive_reopen(tmp_path, opened):
    path = tmp_path / "journal"
    j = opened(path)
    made = fill(j, 5)
    j.add(b"", 6, 2)  # an empty command is a legal entry
    made.append((b"", 6, 2))
    j.sync()
    assert entries(j) == made
    assert j[-1] == (b"", 6, 2)
    expected_size = MAGIC_LENGTH + sum(RECORD_OVERHEAD + len(c) for c, _, _ in made)
    assert os.path.getsize(path) == expected_size
    j._destroy()

    again = opened(path)
    assert entries(again) == made


def test_unsynced_appends_are_in_the_file(tmp_path, opened):
    """A kill -9 (no _destroy, no sync) keeps what was written: the page cache survives."""
    path = tmp_path / "journal"
    made = fill(opened(path), 3)
    assert entries(opened(path)) == made


@pytest.mark.parametrize(
    "damage",
    ["garbage", "half_record", "header_only", "flipped_byte", "short_length"],
)
def test_torn_tail_is_dropped_on_reopen(tmp_path, opened, damage):
    path = tmp_path / "journal"
    j = opened(path)
    made = fill(j, 4)
    j.sync()
    good_size = os.path.getsize(path)
    last_record = RECORD_OVERHEAD + len(made[-1][0])
    with open(path, "r+b") as f:
        if damage == "garbage":
            f.seek(0, os.SEEK_END)
            f.write(b"\x13\x00\x00\x00garbage after the last record")
            kept, size = made, good_size
        elif damage == "half_record":
            f.truncate(good_size - last_record // 2)
            kept, size = made[:-1], good_size - last_record
        elif damage == "header_only":
            f.truncate(good_size - last_record + 5)
            kept, size = made[:-1], good_size - last_record
        elif damage == "flipped_byte":
            f.seek(good_size - 1)
            last = f.read(1)
            f.seek(good_size - 1)
            f.write(bytes([last[0] ^ 0x40]))
            kept, size = made[:-1], good_size - last_record
        else:  # a length too small to hold index and term, with a matching crc
            f.seek(0, os.SEEK_END)
            f.write(b"\x00\x00\x00\x00\x00\x00\x00\x00")
            kept, size = made, good_size
    reopened = opened(path)
    assert entries(reopened) == kept
    assert os.path.getsize(path) == size, "the torn tail must be cut off the file"
    # New appends follow the last good record, and are found again.
    reopened.add(b"after the tear", 99, 3)
    reopened.sync()
    assert entries(opened(path)) == [*kept, (b"after the tear", 99, 3)]


def test_delete_entries_from_truncates_and_survives_reopen(tmp_path, opened):
    path = tmp_path / "journal"
    j = opened(path)
    made = fill(j, 6)
    j.deleteEntriesFrom(3)
    assert entries(j) == made[:3]
    j.add(b"replacement", 4, 2)
    assert entries(j) == [*made[:3], (b"replacement", 4, 2)]
    j.deleteEntriesFrom(10)  # past the end: nothing happens
    assert len(j) == 4
    assert entries(opened(path)) == [*made[:3], (b"replacement", 4, 2)]


def test_delete_entries_from_is_durable_without_sync(tmp_path, opened):
    """Truncation is synced at once: no message may reflect the removed entries."""
    path = tmp_path / "journal"
    j = opened(path)
    fill(j, 4)
    j.sync()
    j.deleteEntriesFrom(1)
    assert j._dirty is False
    assert len(opened(path)) == 1


def test_delete_entries_to_keeps_the_suffix_and_survives_reopen(tmp_path, opened):
    path = tmp_path / "journal"
    j = opened(path)
    made = fill(j, 7)
    j.deleteEntriesTo(4)
    assert entries(j) == made[4:]
    assert entries(opened(path)) == made[4:]
    # Offsets of the rewritten file are right: truncating and appending still work.
    j.deleteEntriesFrom(1)
    j.add(b"eight", 8, 5)
    j.sync()
    assert entries(j) == [made[4], (b"eight", 8, 5)]
    assert entries(opened(path)) == [made[4], (b"eight", 8, 5)]
    j.deleteEntriesTo(2)
    assert len(j) == 0
    assert entries(opened(path)) == []
    assert not os.path.exists(str(path) + ".tmp")


def test_clear_empties_the_journal(tmp_path, opened):
    path = tmp_path / "journal"
    j = opened(path)
    fill(j, 3)
    j.clear()
    assert len(j) == 0
    j.add(b"fresh", 10, 4)
    j.sync()
    assert entries(opened(path)) == [(b"fresh", 10, 4)]


def test_term_and_vote_survive_reopen(tmp_path, opened):
    path = tmp_path / "journal"
    j = opened(path)
    assert j.getCurrentTerm() == 0
    assert j.getVotedForNodeId() is None
    j.setCurrentTerm(7, "node-b:4321")
    # No _destroy: setCurrentTerm alone must have made them durable.
    again = opened(path)
    assert again.getCurrentTerm() == 7
    assert again.getVotedForNodeId() == "node-b:4321"
    with open(str(path) + ".meta", "rb") as f:
        assert json.loads(f.read())["term"] == 7
    again.setCurrentTerm(8, None)
    third = opened(path)
    assert (third.getCurrentTerm(), third.getVotedForNodeId()) == (8, None)


def test_a_failed_save_of_term_and_vote_is_reported_until_one_succeeds(
    tmp_path, opened, monkeypatch
):
    """Found with descriptors exhausted (EMFILE): the error stayed after the cause was
    gone, and the replica refused every write for good."""
    j = opened(tmp_path / "journal")
    real = journal_module.write_atomically

    def no_descriptors(path, data):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(journal_module, "write_atomically", no_descriptors)
    with pytest.raises(OSError):
        j.setCurrentTerm(3, None)
    assert j.write_error == "saving the Raft term and vote: Too many open files"
    monkeypatch.setattr(journal_module, "write_atomically", real)
    j.onOneSecondTimer()
    assert j.write_error is None
    assert opened(tmp_path / "journal").getCurrentTerm() == 3


def test_commit_index_is_persisted_by_the_timer(tmp_path, opened):
    path = tmp_path / "journal"
    j = opened(path)
    assert j.getRaftCommitIndex() == 1  # PySyncObj's default
    j.setRaftCommitIndex(42)
    assert j.getRaftCommitIndex() == 42
    j.onOneSecondTimer()
    assert opened(path).getRaftCommitIndex() == 42
    j.setRaftCommitIndex(43)
    j._destroy()
    assert opened(path).getRaftCommitIndex() == 43


def test_a_file_that_is_not_a_journal_is_refused(tmp_path, opened):
    path = tmp_path / "journal"
    path.write_bytes(b"PySyncObj journal, or anything else\n" * 3)
    with pytest.raises(RuntimeError, match="is not a regraft journal"):
        opened(path)
    # And it is left as it was.
    assert path.read_bytes() == b"PySyncObj journal, or anything else\n" * 3


def _synced(path):
    """The durable length the trace records, of the journal file there now."""
    with open(str(path) + ".synced") as f:
        inode, length = map(int, f.read().split())
    assert inode == os.stat(path).st_ino, "the trace is of another file"
    return length


def test_synced_trace_records_the_durable_length(tmp_path, opened, monkeypatch):
    monkeypatch.setattr(journal_module, "_TRACE_SYNCED", True)
    path = tmp_path / "journal"
    j = opened(path)
    fill(j, 2)
    assert not os.path.exists(str(path) + ".synced"), "nothing was synced yet"
    j.sync()
    first = os.path.getsize(path)
    assert _synced(path) == first
    fill(j, 3, first_index=3)
    assert os.path.getsize(path) > first
    assert _synced(path) == first, "appends are not durable before sync()"
    j.sync()
    assert _synced(path) == os.path.getsize(path)
    j.deleteEntriesFrom(1)
    assert _synced(path) == os.path.getsize(path) == MAGIC_LENGTH + RECORD_OVERHEAD + 9
    fill(j, 2, first_index=2)
    j.deleteEntriesTo(1)
    assert _synced(path) == os.path.getsize(path)  # of the new file (_synced checks)
    j.clear()  # a snapshot installed: the cut is traced before anything is appended
    assert _synced(path) == os.path.getsize(path) == MAGIC_LENGTH


def test_synced_trace_is_off_by_default(tmp_path, opened, monkeypatch):
    monkeypatch.setattr(journal_module, "_TRACE_SYNCED", False)
    j = opened(tmp_path / "journal")
    fill(j, 2)
    j.sync()
    assert not os.path.exists(str(tmp_path / "journal") + ".synced")


class JournalModel(RuleBasedStateMachine):
    """Random appends, truncations, compactions, crashes and reopens against a list."""

    def __init__(self):
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "journal")
        self.journal = Journal(self.path)
        self.model: list[tuple[bytes, int, int]] = []
        self.next_index = 1

    def teardown(self):
        self.journal.crash()
        self.dir.cleanup()

    @rule(command=st.binary(max_size=40), term=st.integers(0, 3))
    def add(self, command, term):
        self.journal.add(command, self.next_index, term)
        self.model.append((command, self.next_index, term))
        self.next_index += 1

    @rule(data=st.data())
    def delete_from(self, data):
        at = data.draw(st.integers(0, len(self.model) + 1))
        self.journal.deleteEntriesFrom(at)
        del self.model[at:]

    @rule(data=st.data())
    def delete_to(self, data):
        at = data.draw(st.integers(0, len(self.model)))
        self.journal.deleteEntriesTo(at)
        del self.model[:at]

    @rule()
    def sync(self):
        self.journal.sync()

    @rule(clean=st.booleans())
    def reopen(self, clean):
        if clean:
            self.journal._destroy()
        else:
            self.journal.crash()
        self.journal = Journal(self.path)

    @precondition(lambda self: self.model)
    @rule(cut=st.integers(1, 20))
    def crash_mid_append(self, cut):
        """The last record is torn: it is lost, the rest is kept."""
        record = RECORD_OVERHEAD + len(self.model[-1][0])
        self.journal.sync()
        self.journal.crash()
        size = os.path.getsize(self.path)
        os.truncate(self.path, size - min(cut, record))
        self.journal = Journal(self.path)
        self.model.pop()

    @invariant()
    def matches(self):
        assert entries(self.journal) == self.model


TestJournalModel = JournalModel.TestCase
TestJournalModel.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)


def test_a_failed_fdatasync_is_final(tmp_path, opened, monkeypatch):
    """Linux may drop pages it could not write and report success the next time: after
    one failure nothing since the last good sync may be called durable."""
    j = opened(tmp_path / "journal")
    fill(j, 2)

    def failing(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(journal_module.os, "fdatasync", failing)
    with pytest.raises(OSError):
        j.sync()
    monkeypatch.undo()  # the disk "works" again: the journal must not believe it
    with pytest.raises(OSError, match=r"fdatasync of the Raft journal .* failed"):
        j.sync()
    assert "Input/output error" in j.sync_failed
