"""glibc's malloc in a replica: one arena, and free memory handed back to the kernel.

glibc gives threads arenas of their own (up to eight per core), and each keeps what was
freed in it for reuse; grpc's core allocates on many threads. Measured (cluster/DESIGN.md,
Session 20): a flood of HTTP/2 CONTINUATION frames from 16 connections, which grpc's core
buffers without a bound a server can set, grew a replica to 1.4 to 2.8 GB, and after a
flood ended the process kept hundreds of MB for good. With one arena the same flood
took 0.25 to 2.5 GB (median about 1.0, in 14 runs), and malloc_trim after it gave back
all but about 70 MB. One arena cost nothing measurable, at 1 or 128 callers (three
alternating runs each of writes, STALE and LINEARIZABLE reads)."""

import ctypes
import logging
import threading

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # mallopt's parameter, from glibc's malloc.h
# How often a replica hands free memory back: a trim holds the arena while it walks the
# free chunks, so not on every pass of a busy loop. (Trimming also as soon as the
# process grew by 256 MiB, looked at every 0.5 s, made no clear difference to the peak
# of a CONTINUATION flood: 0.5 to 2.5 GB in six runs against 0.7 to 2.2 in three.)
TRIM_EVERY = 10.0


def _glibc() -> ctypes.CDLL | None:
    """The C library this process runs on (dlopen(NULL)), if it is glibc."""
    libc = ctypes.CDLL(None)
    try:
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except AttributeError:  # musl has neither
        return None
    return libc


_LIBC = _glibc()


def one_arena() -> None:
    """Make every thread allocate from one arena; call it before threads start (arenas
    made before stay). Logging must be set up: this says why when it cannot."""
    if _LIBC is None:
        log.info("malloc is not glibc's: its arenas are left as they are")
        return
    if not _LIBC.mallopt(_M_ARENA_MAX, 1):
        log.warning("mallopt(M_ARENA_MAX, 1) failed: threads keep arenas of their own")


class Trimmer:
    """A thread that hands free memory back to the kernel every TRIM_EVERY seconds.

    A trim holds the arena while it walks the free chunks: every thread that allocates
    waits. A review measured 6 to 8 ms for a heap holding 200 MB free in 2 kB chunks,
    33 ms to give 200 MB back; a replica's usual heap is under 100 MB."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="malloc-trim", daemon=True)

    def start(self) -> None:
        if _LIBC is not None:
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(TRIM_EVERY):
            _LIBC.malloc_trim(0)
