"""cluster/allocator.py: one malloc arena, and free memory handed back now and then."""

import subprocess
import sys
import time

from cluster import allocator


class FakeLibc:
    def __init__(self) -> None:
        self.trims = 0

    def malloc_trim(self, pad: int) -> int:
        self.trims += 1
        return 1


def test_the_thread_trims_every_trim_every_seconds_until_stopped(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(allocator, "_LIBC", libc)
    monkeypatch.setattr(allocator, "TRIM_EVERY", 0.01)
    trimmer = allocator.Trimmer()
    trimmer.start()
    deadline = time.monotonic() + 10
    while libc.trims < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    trimmer.stop()
    assert libc.trims >= 3
    stopped = libc.trims
    time.sleep(0.05)
    assert libc.trims == stopped


def test_without_glibc_nothing_is_called(monkeypatch):
    monkeypatch.setattr(allocator, "_LIBC", None)
    allocator.one_arena()
    trimmer = allocator.Trimmer()
    trimmer.start()  # no thread: nothing to call
    trimmer.stop()


_ARENAS = """
import ctypes, sys, tempfile, threading
from cluster import allocator
libc = allocator._LIBC
assert libc is not None, "glibc not found"
if sys.argv[1] == "one":
    allocator.one_arena()
blocks, ready = [], threading.Barrier(8)
def work():
    ready.wait()  # all alive at once: glibc gives concurrent threads arenas of their own
    blocks.extend(bytearray(20_000) for _ in range(200))
threads = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
blocks.clear()
libc.malloc_trim(0)
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile("r") as report:
    stream = libc.fopen(report.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    print(report.read().count("<heap nr="))
"""


def _arenas(setting: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _ARENAS, setting], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_threads_of_a_replica_share_one_arena():
    """The real mallopt and malloc_trim, in processes of their own whose threads
    allocate at once: glibc's default gives them several arenas, one_arena() one."""
    assert _arenas("default") > 1  # the check can tell
    assert _arenas("one") == 1
