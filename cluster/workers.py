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
A call that blocks without saying so (a lock, a slow disk) cannot stall the others:
when queued calls have not moved for STALL seconds, one more thread is let in.
"""

import collections
import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future

RUNNING = 2  # threads running calls at once: the best of 1 to 64 measured here
STALL = 0.05  # seconds queued calls may wait on slots held by threads that block

_local = threading.local()


@contextlib.contextmanager
def blocking() -> Iterator[None]:
    """Mark the current call as waiting: its pool may run another call meanwhile.
    A no-op on a thread that is not one of a pool's (the Raft thread, a stream's)."""
    pool = getattr(_local, "pool", None)
    if pool is None:
        yield
        return
    pool._release()
    try:
        yield
    finally:
        pool._reclaim()


class Workers(Executor):
    """An executor for grpc.server: up to `threads` threads, `running` of them
    running calls at once (calls inside `blocking()` do not count). Queued calls that
    have not moved for `stall` seconds get one more thread."""

    def __init__(
        self, threads: int, running: int = RUNNING, stall: float = STALL, name: str = "grpc"
    ) -> None:
        if not 1 <= running <= threads:
            raise ValueError(f"running must be between 1 and threads ({threads}), not {running}")
        self._threads_max = threads
        self._running_max = running
        self._stall = stall
        self._name = name
        self._lock = threading.Lock()
        self._queue: collections.deque = collections.deque()
        self._idle: list[_Inbox] = []  # where parked threads wait
        self._threads: list[threading.Thread] = []
        self._running = 0  # threads in a call and not inside blocking()
        self._started = 0  # calls started so far: the watchdog's sign of progress
        self._closed = False
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name=f"{name}-watchdog", daemon=True)
        self._watchdog.start()

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._queue.append((future, fn, args, kwargs))
            self._start_queued(self._running_max)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Run what is queued (or cancel it), then end the threads."""
        with self._lock:
            self._closed = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft()[0].cancel()
            self._wake_idle_to_exit()
        self._stop.set()
        if wait:
            for thread in list(self._threads):
                thread.join()
            self._watchdog.join()

    def _start_queued(self, limit: int) -> None:
        """Give queued calls to threads while fewer than `limit` run (lock held)."""
        while self._queue and self._running < limit:
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
            self._started += 1
            inbox.give(self._queue.popleft())

    def _wake_idle_to_exit(self) -> None:
        while self._idle:
            self._idle.pop().give(None)

    def _work(self, inbox: "_Inbox") -> None:
        _local.pool = self
        item = inbox.take()
        while item is not None:
            _run(*item)
            with self._lock:
                if self._queue and self._running <= self._running_max:
                    item = self._queue.popleft()  # keep the slot: no sleep, no wake-up
                    self._started += 1
                    continue
                self._running -= 1
                if self._closed and not self._queue:
                    return
                self._idle.append(inbox)
            item = inbox.take()

    def _release(self) -> None:
        with self._lock:
            self._running -= 1
            self._start_queued(self._running_max)

    def _reclaim(self) -> None:
        # Over the limit for a moment: the rest of the call is short (answer and go).
        with self._lock:
            self._running += 1

    def _watch(self) -> None:
        seen = -1
        while not self._stop.wait(self._stall):
            with self._lock:
                if self._queue and self._started == seen:
                    self._start_queued(self._running + 1)
                seen = self._started


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
