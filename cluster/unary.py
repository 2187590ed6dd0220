"""The unary methods that answer without a thread, served straight off grpcio's core.

grpcio's synchronous server spends more Python on a call than regraft's own work on
a read: an _RPCState with its condition, a servicer context, interceptors, a pool
job, and four completions (request, close, message, status) through one serving
thread. A bare server answering GetManifest with a constant message cost 127 to 173
us of CPU per call at 128 callers here; the same answer given straight off grpcio's
core (cygrpc, the layer grpcio's own servers are built on) cost 64 to 73 us
(docs/performance.md, Session 14).

So the methods that answer without a thread (rpc.write, rpc.read: every Registry
and Access method except Watch and VerifyPassword) are registered with grpcio's core
as methods of their own and served here: the request message is received, checked
(it parses; the caller may call the method, cluster/auth.py) and handed to the
method (a large one on the replica's pool); the method answers now or later, from
any thread, with one batch that sends the response and the status. Everything else
(streams, health, reflection, the Cluster service, VerifyPassword) stays on grpcio's
server, its interceptors and pools: the same port, the same connections, the same
limits (message sizes, streams per connection).

Their events come on grpcio's server's own completion queue, run by its serving
thread like its own (each event's tag is called; ours answer that there is nothing
more for grpcio to do). With a queue and a thread of their own, whichever of the two
threads read a connection had to wake the other for half the events: a follower
answering STALE reads switched 2.8 times per read; one queue, 1.6 (measured on
grpcio's epoll path: docs/performance.md, Session 15).

What grpcio's server did for these calls is done here: calls waiting for their
message are counted among the replica's (cluster/arrivals.py), undecodable requests
are INVALID_ARGUMENT (cluster/decoding.py), refusals are counted, and a method
learns of its caller going away through `add_callback`. The serving thread only
starts operations and runs the methods' first steps: a method must not block on it.

This relies on grpcio's Cython layer and its server's serving loop (1.85):
register_method, request_registered_call, start_server_batch, and a tag called as
`tag(event) -> (rpc_state, callbacks)`; tests/unit/test_unary.py fails when they
change.
"""

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor

import grpc
from grpc import _common
from grpc._cython import cygrpc

from cluster import arrivals, auth, decoding, metrics, streams

log = logging.getLogger(__name__)

_FLAGS = 0
# A request larger than this (a large manifest: its parse and digest take milliseconds)
# is handled on the pool, so that it does not hold the serving thread's other calls.
INLINE_BYTES = 64 * 1024
_CODES = _common.STATUS_CODE_TO_CYGRPC_STATUS_CODE
# Answers of LARGE_ANSWER bytes or more wait in memory until their client reads them:
# one connection that never reads could fill the replica's memory with 4 MiB manifests
# (200 unread GetManifest calls took 2.4 GB). At most this much waits per connection,
# and in all; past it, a large answer is RESOURCE_EXHAUSTED instead.
LARGE_ANSWER = 64 * 1024
MAX_UNREAD_PER_CONNECTION = 64 * 1024 * 1024
MAX_UNREAD = 512 * 1024 * 1024


class _Queue:
    """grpcio's server's completion queue, and the one way operations are started on it.

    grpcio's core aborts the process when an operation is started on a queue that is
    shut down, and a call may be answered after the server stopped (a write settled as
    Raft closes). grpcio's serving thread ends with the server's own calls, which may
    be before the last events of ours: `drain`, once the server stopped, shuts the
    queue and handles them. Operations are not started after that: their calls were
    cancelled with the server."""

    def __init__(self, queue: cygrpc.CompletionQueue) -> None:
        self._queue = queue
        self._lock = threading.Lock()
        self._shut = False
        self._soon: list[Callable[[], None]] = []  # for the serving thread (`soon`)
        self._soon_lock = threading.Lock()

    def start(self, call: cygrpc.Call, operations: tuple, then: Callable) -> bool:
        """Start `operations` on `call`, `then(event)` once done; False if not started."""
        with self._lock:
            if self._shut:
                return False
            return call.start_server_batch(operations, _Tag(then)) == cygrpc.CallError.ok

    def soon(self, call: cygrpc.Call, run: Callable[[], None]) -> None:
        """`run()` on the serving thread. Those asked for before the serving thread gets
        to them run together, after one batch without operations on `call` (the first
        one's), which the core completes at once, whatever state the call is in: the
        thread that settles a round of reads (Raft's) starts one batch, not one a read,
        and each start hands it the GIL back and forth with the serving thread."""
        with self._soon_lock:
            self._soon.append(run)
            if len(self._soon) > 1:
                return  # the batch of the first one runs this one too
        try:
            started = self.start(call, (), self._run_soon)
        except BaseException:  # never seen; later ones would only join a batch never started
            self._run_soon(None)
            raise
        if not started:
            self._run_soon(None)  # the server stopped: the answers are not sent, and settle so

    def _run_soon(self, _event) -> None:
        with self._soon_lock:
            runs, self._soon = self._soon, []
        for run in runs:
            try:
                run()
            except Exception:  # one must not keep the others from running
                log.exception("unexpected error serving a unary call")

    def request(self, core: cygrpc.Server, method: "_Method") -> None:
        """Ask the core for the next call of `method`."""
        with self._lock, contextlib.suppress(ValueError):  # ValueError: the server stopped
            if not self._shut:
                core.request_registered_call(self._queue, self._queue, method.name, method.tag)

    def drain(self) -> None:
        """Shut the queue and handle the events left on it; the server has stopped, and
        with it grpcio's serving thread."""
        with self._lock:
            self._shut = True
            self._queue.shutdown()
        while True:
            event = self._queue.poll()
            if event.completion_type == cygrpc.CompletionType.queue_shutdown:
                return
            if isinstance(event.tag, _Tag):
                event.tag(event)


class _Tag:
    """What runs an event of ours on grpcio's serving thread: `then(event)`, and an
    answer grpcio understands, (rpc_state, callbacks), with nothing for it to do."""

    __slots__ = ("_then",)
    _NOTHING: tuple = (None, ())

    def __init__(self, then: Callable) -> None:
        self._then = then

    def __call__(self, event) -> tuple:
        try:
            self._then(event)
        except Exception:  # never seen; grpcio's thread must not end
            log.exception("unexpected error serving a unary call")
        return self._NOTHING


class _Unread:
    """Bytes of large answers sent and not yet read by their clients: per connection
    (the peer's address and port) and in all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_peer: dict[bytes, int] = {}
        self._total = 0

    def take(self, peer: bytes, size: int) -> str:
        """Count an answer of `size` bytes; why not, if it would pass a limit."""
        with self._lock:
            held = self._by_peer.get(peer, 0)
            if held and held + size > MAX_UNREAD_PER_CONNECTION:
                return f"{held >> 20} MiB of answers to this connection are not read yet"
            if self._total and self._total + size > MAX_UNREAD:
                return f"{self._total >> 20} MiB of answers wait for their clients to read them"
            self._by_peer[peer] = held + size
            self._total += size
        metrics.grpc_unread_bytes.inc(size)
        return ""

    def give(self, peer: bytes, size: int) -> None:
        """The answer was read, or its call ended."""
        with self._lock:
            self._total -= size
            left = self._by_peer[peer] - size
            if left:
                self._by_peer[peer] = left
            else:
                del self._by_peer[peer]
        metrics.grpc_unread_bytes.dec(size)


class _Method:
    """A method served here: its full name, its behavior, its request parser, the tag
    its calls arrive with (`arrived(method, event)` runs then), and whether it is always
    handled on the pool (rpc.pooled)."""

    __slots__ = ("behavior", "name", "on_pool", "parse", "tag")

    def __init__(
        self, name: str, behavior: Callable, parse: Callable[[bytes], object], arrived: Callable
    ) -> None:
        self.name = name
        self.behavior = behavior
        self.parse = parse
        self.tag = _Tag(functools.partial(arrived, self))
        self.on_pool = getattr(behavior, "served_on_pool", False)


class UnaryServer:
    """Serves, on `server`'s port, the unary methods of servicers that answer without
    a thread (marked `experimental_non_blocking`); their other methods go to `server`.

    `checks`: the server's AuthInterceptor, or None when every caller may call
    everything. `waiting`: the replica's calls waiting for their request message.
    `pool`: where requests over INLINE_BYTES, and those of methods marked rpc.pooled,
    are handled (None: here).
    Methods are added before `server` starts; `start()` after it, `stop()` after
    `server.stop()` has ended.
    """

    def __init__(
        self,
        server: grpc.Server,
        waiting: arrivals.Arrivals,
        checks: "auth.AuthInterceptor | None" = None,
        pool: Executor | None = None,
    ) -> None:
        self._grpc_server = server
        self._core = server._state.server
        self._queue = _Queue(server._state.completion_queue)
        self._unread = _Unread()
        self._waiting = waiting
        self._checks = checks
        self._pool = pool
        self._methods: dict[str, _Method] = {}

    def add_servicer(self, add: Callable, servicer: object) -> None:
        """`add(servicer, server)` (a generated add_*Servicer_to_server), except that its
        unary methods marked `experimental_non_blocking` are served here."""
        found = _Registrations()
        add(servicer, found)
        if not found.services:
            raise RuntimeError(f"{add.__name__} registered no method handlers: grpcio changed")
        for service, handlers in found.services:
            rest = {}
            for name, handler in handlers.items():
                behavior = handler.unary_unary
                if behavior is None or not getattr(behavior, "experimental_non_blocking", False):
                    rest[name] = handler
                    continue
                full = f"/{service}/{name}"
                self._methods[full] = _Method(
                    full, behavior, handler.request_deserializer, self._arrived
                )
                self._core.register_method(full)
            if rest:
                self._grpc_server.add_generic_rpc_handlers(
                    (grpc.method_handlers_generic_handler(service, rest),)
                )
                self._grpc_server.add_registered_method_handlers(service, rest)

    @property
    def methods(self) -> list[str]:
        """The full names of the methods served here."""
        return sorted(self._methods)

    def start(self) -> None:
        # One call asked for per method, as grpcio does: the core queues the others.
        for method in self._methods.values():
            self._queue.request(self._core, method)

    def stop(self) -> None:
        """Handle the last events of calls served here; the server has stopped (its
        `stop()` has ended), and with it every call."""
        self._queue.drain()

    def _arrived(self, method: _Method, event) -> None:
        self._queue.request(self._core, method)
        if not event.success:  # the server is shutting down
            return
        call = Call(method.name, event.call, event.call_details.deadline, self._queue, self._unread)
        if self._checks is not None:
            try:
                call.caller = self._checks.check(
                    method.name, event.invocation_metadata, _auth_context(event.call)
                )
            except auth.Refused as refusal:
                call.refuse(refusal.code, refusal.message)
                return
            except Exception as error:  # never seen; the call must not wait for its deadline
                log.exception("cannot check the caller of %s", method.name)
                call.finish(grpc.StatusCode.INTERNAL, f"internal error: {error}")
                return
        token = object()
        self._waiting.hold(token, event.call)  # before the message can arrive

        def received(message_event) -> None:
            self._waiting.release(token)
            data = message_event.batch_operations[0].message()
            if data is None:
                call.end_without_message()
            elif (len(data) > INLINE_BYTES or method.on_pool) and self._pool is not None:
                try:
                    self._pool.submit(_handle, method, call, data)
                except RuntimeError:  # the pool is shut down: the replica is stopping
                    call.finish(grpc.StatusCode.UNAVAILABLE, "this replica is stopping")
            else:
                _handle(method, call, data)

        operations = (cygrpc.ReceiveMessageOperation(_FLAGS),)
        if not self._queue.start(event.call, operations, received):
            self._waiting.release(token)  # never seen: the call is over


def _handle(method: _Method, call: "Call", data: bytes) -> None:
    """Parse a call's request and hand it to its method."""
    try:
        request = method.parse(data)
    except Exception as error:
        call.refuse(grpc.StatusCode.INVALID_ARGUMENT, decoding.malformed(method.name, error))
        return
    try:
        method.behavior(request, call)
    except Exception as error:  # the methods answer their own errors; not this
        log.exception("unexpected error in %s", method.name)
        call.finish(grpc.StatusCode.INTERNAL, f"internal error: {error}")


def _sent(_event) -> None:
    """The answer is out, or the call was over: nothing more to do."""


class Call:
    """One call of a method served here, as its behavior sees it (in place of grpcio's
    servicer context): answered once, from any thread."""

    __slots__ = (
        "_call",
        "_callbacks",
        "_deadline",
        "_lock",
        "_method",
        "_over",
        "_queue",
        "_unread",
        "caller",
    )

    def __init__(
        self, method: str, call: cygrpc.Call, deadline: float, queue: _Queue, unread: _Unread
    ) -> None:
        self._method = method
        self._call = call
        self._queue = queue
        self._unread = unread
        self._deadline = deadline
        self.caller: auth.Caller | None = None  # who calls, when callers are checked
        self._lock = threading.Lock()
        self._over = False  # answered
        self._callbacks: list[Callable[[], None]] | None = None  # watching for the end

    def time_remaining(self) -> float:
        """Seconds left before the caller's deadline (infinite when it set none)."""
        return max(self._deadline - time.time(), 0)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """Run `callback()` once the call is over: answered, cancelled, or timed out."""
        with self._lock:
            if self._callbacks is None:
                if self._over:
                    return False
                self._callbacks = []
                watch = (cygrpc.ReceiveCloseOnServerOperation(_FLAGS),)
                if not self._queue.start(self._call, watch, self._closed):
                    self._callbacks = None  # the answer receives the close, then
                    return False
            self._callbacks.append(callback)
            return True

    def _closed(self, _event) -> None:
        with self._lock:
            callbacks, self._callbacks = self._callbacks or [], []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a callback of a %s call failed", self._method)

    def soon(self, run: Callable[[], None]) -> None:
        """`run()` on the serving thread, with the others asked for meanwhile (possibly
        before events of this call already queued, such as its cancel: an answer to a
        call that is over is not sent): a read settled on the Raft thread is served
        there, rather than by a pool thread woken for it (a thread more taking turns at
        the GIL: about two context switches a read)."""
        self._queue.soon(self._call, run)

    def respond(self, data: bytes) -> grpc.StatusCode:
        """End the call with its serialized response and OK; the code it ended with:
        RESOURCE_EXHAUSTED instead when too many large answers wait to be read (OK
        too when the call was over already: nothing is sent then)."""
        then = _sent
        if len(data) >= LARGE_ANSWER:
            peer, size = self._call.peer(), len(data)
            crowded = self._unread.take(peer, size)
            if crowded:
                code = grpc.StatusCode.RESOURCE_EXHAUSTED
                self.finish(code, f"{crowded}: read them, or retry later")
                return code

            def then(_event) -> None:
                self._unread.give(peer, size)

        started = self._end(
            cygrpc.SendMessageOperation(data, _FLAGS),
            cygrpc.SendStatusFromServerOperation((), cygrpc.StatusCode.ok, b"", _FLAGS),
            then=then,
        )
        if not started:
            then(None)  # no completion will come
        return grpc.StatusCode.OK

    def finish(
        self,
        code: grpc.StatusCode = grpc.StatusCode.OK,
        details: str = "",
        trailers: tuple[tuple[str, str], ...] = (),
        then: Callable = _sent,
    ) -> None:
        """End the call with this status, no response, and trailing metadata;
        `then(event)` once done."""
        self._end(
            cygrpc.SendStatusFromServerOperation(trailers, _CODES[code], details.encode(), _FLAGS),
            then=then,
        )

    def refuse(self, code: grpc.StatusCode, message: str) -> None:
        """End a call its method never saw, counted as the refusals of interceptors are."""
        streams.count_refusal(self._method, code)
        self.finish(code, message)

    def end_without_message(self) -> None:
        """End a call whose request message never came: UNIMPLEMENTED, counted as a
        refusal, when its client ended it without one; neither when it was cancelled
        (by its client, its deadline, or `waiting` for waiting too long), which the core
        also reports as no message."""
        code = grpc.StatusCode.UNIMPLEMENTED

        def ended(event) -> None:
            close = event.batch_operations[-1]
            if isinstance(close, cygrpc.ReceiveCloseOnServerOperation) and not close.cancelled():
                streams.count_refusal(self._method, code)

        self.finish(code, decoding.no_message(self._method), then=ended)

    def _end(self, *operations: cygrpc.Operation, then: Callable = _sent) -> bool:
        """Start the call's last operations, `then(event)` once done; False if the call
        was answered already or is over (then nothing was started)."""
        with self._lock:
            if self._over:
                return False
            self._over = True
            watched = self._callbacks is not None
        batch = (cygrpc.SendInitialMetadataOperation((), _FLAGS), *operations)
        if not watched:  # a call is over for the core once its close is received too
            batch += (cygrpc.ReceiveCloseOnServerOperation(_FLAGS),)
        return self._queue.start(self._call, batch, then)


def _auth_context(call: cygrpc.Call) -> dict:
    found = cygrpc.auth_context(call) or {}
    return {_common.decode(key): value for key, value in found.items()}


class _Registrations:
    """What a generated add_*Servicer_to_server registers, kept (it registers each
    service both ways, with the same handlers)."""

    def __init__(self) -> None:
        self.services: list[tuple[str, dict]] = []

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.services.append((service, handlers))

    def add_generic_rpc_handlers(self, _handlers) -> None:
        pass
