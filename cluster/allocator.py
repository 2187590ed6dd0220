"""glibc's malloc in a replica: one arena, and free memory handed back to the kernel.

glibc gives threads arenas of their own (up to eight per core), and each keeps what was
freed in it for reuse; grpc's core allocates on many threads. Measured (cluster/DESIGN.md,
Session 20): a flood of HTTP/2 CONTINUATION frames from 16 connections, which grpc's core
buffers without a bound a server can set, grew a replica to 1.4 to 2.8 GB, and after a
flood ended the process kept hundreds of MB for good. With one arena the same flood
took 0.25 to 1.9 GB (about 0.6 in most runs), and malloc_trim gave all but the replica's
own 65 MB back. One arena cost nothing measurable at 128 callers (three alternating
runs each of writes, STALE and LINEARIZABLE reads)."""

import ctypes
import ctypes.util
import logging
import time

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # mallopt's parameter, from glibc's malloc.h
# How often a replica hands free memory back: malloc_trim holds the arena's lock while
# it walks the free chunks, so not on every pass of a busy loop.
TRIM_EVERY = 10.0


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt, libc.malloc_trim  # noqa: B018  (glibc's: musl has neither)
    except (OSError, AttributeError, TypeError):
        return None
    return libc


_LIBC = _glibc()


def one_arena() -> None:
    """Make every thread allocate from one arena; call it before threads start (arenas
    made before stay)."""
    if _LIBC is None:
        log.info("malloc is not glibc's: its arenas are left as they are")
        return
    _LIBC.mallopt(_M_ARENA_MAX, 1)


class Trimmer:
    """Hands free memory back to the kernel every TRIM_EVERY seconds, when asked often."""

    def __init__(self) -> None:
        self._last = time.monotonic()

    def maybe_trim(self) -> None:
        now = time.monotonic()
        if _LIBC is None or now - self._last < TRIM_EVERY:
            return
        self._last = now
        _LIBC.malloc_trim(0)
