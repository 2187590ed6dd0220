"""The threads that run a replica's unary gRPC calls, few of them runnable at once.

grpcio's synchronous server hands each call to a thread of its pool. With a plain
pool of 64, a burst of calls wakes dozens of threads that then take turns at the GIL:
every time one of them drops the GIL around a short call into grpcio's core, another
is woken, and the context switches cost more CPU than the calls. Measured here (2
cores, a bare server answering health checks to 64 callers): 190 to 210 us of server
CPU per call with 64 threads, 105 us with 2; regraft's STALE reads at 128 callers
went from about 380 to 235 us of replica CPU each (cluster/DESIGN.md).

So this pool lets only RUNNING threads run calls at once. A call that arrives while
they are busy is queued, and a thread that finishes a call takes the next one
without going to sleep. A call that waits for something (a write for its commit, a
linearizable read for its barrier) says so with `blocking()`: its slot goes to the
next queued call meanwhile, and up to `threads` calls can wait at once, as before.
A call that blocks without saying so cannot stall the others: a call that has run
for STALL seconds outside `blocking()` stops counting against RUNNING until it ends
or waits. A call that takes one request message gets a thread only once the message
has arrived (cluster/arrivals.py): grpcio would have its thread wait for it, and a
client that sends headers and holds the message back would hold a thread.
"""

import collections
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from cluster import arrivals

RUNNING = 2  # calls running at once: the best of 1 to 64 measured here
STALL = 0.05  # seconds after which a running call no longer counts against RUNNING
_SHUT_DOWN = "cannot schedule new calls after shutdown"

_local = threading.local()


@contextlib.contextmanager
def blocking() -> Iterator[None]:
    """Mark the current call as waiting: its pool may run another call meanwhile.
    A no-op on a thread that is not one of a pool's (the Raft thread, a stream's),
    and inside another blocking()."""
    pool = getattr(_local, "pool", None)
    if pool is None or _local.waiting:
        yield
        return
    _local.waiting = True
    pool._release(_local.inbox)
    try:
        yield
    finally:
        pool._reclaim(_local.inbox)
        _local.waiting = False


class Workers(ThreadPoolExecutor):
    """An executor for grpc.server: up to `threads` threads, `running` of them
    running calls at once. Calls inside `blocking()` do not count, nor calls that
    have run for `stall` seconds (they are blocked on something else).

    A ThreadPoolExecutor in type only, none of its machinery used (its __init__ is not
    called): grpcio runs a method on the pool its handler names only if it is one.
    """

    def __init__(
        self,
        threads: int,
        running: int = RUNNING,
        stall: float = STALL,
        name: str = "grpc",
        awaiting: arrivals.Arrivals | None = None,
    ) -> None:
        if not 1 <= running <= threads:
            raise ValueError(f"running must be between 1 and threads ({threads}), not {running}")
        self._threads_max = threads
        self._running_max = running
        self._stall = stall
        self._name = name
        # Calls waiting for their request message (shared with the replica's other pool).
        self._arrivals = awaiting if awaiting is not None else arrivals.Arrivals()
        self._lock = threading.Lock()
        self._queue: collections.deque = collections.deque()
        self._idle: list[_Inbox] = []  # where parked threads wait
        self._threads: list[threading.Thread] = []
        self._running = 0  # threads in a call and not inside blocking()
        self._limit = running  # running plus the calls the watchdog found stuck
        self._since: dict[_Inbox, float] = {}  # running threads: since when
        self._closed = False
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name=f"{name}-watchdog", daemon=True)
        self._watchdog.start()

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(_SHUT_DOWN)
        if arrivals.awaiting_message(args):
            run = functools.partial(self._enqueue, future, fn, kwargs=kwargs)
            self._arrivals.receive_then(args, run)
        else:
            self._enqueue(future, fn, args, kwargs)
        return future

    def _enqueue(self, future: Future, fn: Callable, args: tuple, kwargs: dict) -> None:
        with self._lock:
            if not self._closed:
                self._queue.append((future, fn, args, kwargs))
                self._start_queued()
                return
        future.cancel()  # a message that arrived after shutdown: the caller ends the call
        raise RuntimeError(_SHUT_DOWN)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Run what is queued (or cancel it), then end the threads."""
        with self._lock:
            self._closed = True
            dropped = list(self._queue) if cancel_futures else []
            if cancel_futures:
                self._queue.clear()
            self._wake_idle_to_exit()
        for future, *_ in dropped:  # outside the lock: cancelling runs grpcio's callbacks
            future.cancel()
        self._stop.set()
        if wait:
            joined = 0
            while joined < len(self._threads):  # threads started meanwhile are joined too
                self._threads[joined].join()
                joined += 1
            self._watchdog.join()

    def _start_queued(self) -> None:
        """Give queued calls to threads while fewer than the limit run (lock held)."""
        while self._queue and self._running < self._limit:
            if self._idle:
                inbox = self._idle.pop()
            elif len(self._threads) < self._threads_max:
                inbox = _Inbox()
                thread = threading.Thread(
                    target=self._work,
                    args=(inbox,),
                    name=f"{self._name}_{len(self._threads)}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()
            else:
                return  # every thread is in a call: the queue waits for one to end
            self._running += 1
            self._since[inbox] = time.monotonic()
            inbox.give(self._queue.popleft())

    def _wake_idle_to_exit(self) -> None:
        while self._idle:
            self._idle.pop().give(None)

    def _work(self, inbox: "_Inbox") -> None:
        _local.pool, _local.inbox, _local.waiting = self, inbox, False
        item = inbox.take()
        while item is not None:
            _run(*item)
            with self._lock:
                if self._queue and self._running <= self._limit:
                    item = self._queue.popleft()  # keep the turn: no sleep, no wake-up
                    self._since[inbox] = time.monotonic()
                    continue
                self._running -= 1
                del self._since[inbox]
                if self._closed:
                    return  # the threads still running take what is queued
                self._idle.append(inbox)
            item = inbox.take()

    def _release(self, inbox: "_Inbox") -> None:
        with self._lock:
            self._running -= 1
            del self._since[inbox]
            self._start_queued()

    def _reclaim(self, inbox: "_Inbox") -> None:
        # Over the limit for a moment: the rest of the call is short (answer and go).
        with self._lock:
            self._running += 1
            self._since[inbox] = time.monotonic()

    def _watch(self) -> None:
        while not self._stop.wait(self._stall):
            with self._lock:
                now = time.monotonic()
                stuck = sum(1 for since in self._since.values() if now - since >= self._stall)
                self._limit = self._running_max + stuck
                self._start_queued()


class _Inbox:
    """Where a parked thread waits for its next call: one item, one lock as signal."""

    __slots__ = ("_item", "_ready")

    def __init__(self) -> None:
        self._item = None
        self._ready = threading.Lock()
        self._ready.acquire()

    def give(self, item) -> None:
        self._item = item
        self._ready.release()

    def take(self):
        self._ready.acquire()
        item, self._item = self._item, None
        return item


def _run(future: Future, fn: Callable, args: tuple, kwargs: dict) -> None:
    if future.set_running_or_notify_cancel():
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:  # the future carries it, as in ThreadPoolExecutor
            future.set_exception(error)
        else:
            future.set_result(result)
