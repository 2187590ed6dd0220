"""The Raft journal on a disk that fills up, then has room again: found by the disk-full
run (tests/robustness/test_disk_full.py), reduced to the journal alone."""

import contextlib
import os
import subprocess

import pytest

from cluster.journal import DurableJournal
from tests.robustness.conftest import unmount


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, unmounted whatever the test does."""
    path = tmp_path / "disk"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], check=True)
    try:
        yield str(path)
    finally:
        unmount(str(path))


def fill(disk: str) -> str:
    """Fill the disk with a file; its path."""
    ballast = os.path.join(disk, "ballast")
    with contextlib.suppress(OSError), open(ballast, "wb") as f:
        while True:
            f.write(bytes(4096))
            f.flush()
    return ballast


def test_entries_appended_after_a_full_disk_survive_a_restart(small_disk):
    path = os.path.join(small_disk, "raft.journal")
    journal = DurableJournal(path)
    journal.add(b"before", 1, 1)
    journal.sync()
    ballast = fill(small_disk)
    # The next record does not fit: the append fails, one way or another.
    with contextlib.suppress(OSError):
        journal.add(b"x" * 16384, 2, 1)
    os.remove(ballast)
    # Space is back: Raft appends (again) and fsyncs, then acknowledges.
    journal.add(b"after", 2, 1)
    journal.sync()
    journal._destroy()
    reopened = DurableJournal(path)
    reopened._destroy()
    assert [tuple(entry) for entry in reopened] == [(b"before", 1, 1), (b"after", 2, 1)]


def test_the_error_of_a_failed_append_clears_once_there_is_room(small_disk):
    """A replica refuses proposals while its journal cannot be written, so no append
    comes to clear the error: the journal looks for room itself, every second."""
    journal = DurableJournal(os.path.join(small_disk, "raft.journal"))
    ballast = fill(small_disk)
    with pytest.raises(OSError):
        journal.add(b"x" * 16384, 1, 1)
    assert "No space left" in journal.write_error
    with contextlib.suppress(OSError):  # the term and vote cannot be saved either
        journal.onOneSecondTimer()
    assert journal.write_error is not None
    os.remove(ballast)
    journal.onOneSecondTimer()
    assert journal.write_error is None
    assert not any(name.endswith(".room") for name in os.listdir(small_disk))
    journal._destroy()
