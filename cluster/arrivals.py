"""Calls wait for their request message without a thread.

grpcio's synchronous server hands a call to a pool thread as soon as its headers
arrive, and that thread waits for the call's request message (grpc/_server.py,
`_unary_request`). Anyone may open calls and never send their messages (a health
check needs no credentials): one connection holding back 70 of them took every thread
of a replica's unary pool, and every unary call then timed out; 38 held-back Watch
calls would have done the same to the streams. Here the message of a call that takes
one request message (every regraft method, Health, Backup, Watch) is received first,
as grpcio's asyncio server does: the call reaches its pool once its message (or its
end) has arrived, and until then costs an HTTP/2 stream and a few objects. At most
MAX_WAITING calls wait at once; past that the one that has waited longest on the
connection holding the most is cancelled, so that the calls of real clients, whose
messages come with their headers, or come slowly on a connection of their own, are
not the ones dropped. The receive itself is nonblocking.receive().

This relies on grpcio's private server module (1.85). A job it does not recognize
goes to the pool unchanged, as before; tests/unit/test_arrivals.py fails when
grpcio no longer submits calls the way this expects.
"""

import collections
import itertools
import threading
from collections.abc import Callable

from grpc import _server
from grpc._cython import cygrpc
from prometheus_client import Counter, Gauge

from cluster import decoding, metrics, nonblocking

# Real clients' calls wait microseconds (a large manifest: milliseconds), so few wait
# at once; each may hold part of a message, up to MAX_REQUEST_BYTES (cluster/replica.py).
MAX_WAITING = 256
_IN_POOL = (_server._unary_response_in_pool, _server._stream_response_in_pool)
_WAITS_FOR_MESSAGE = "_unary_request.<locals>.unary_request"


def awaiting_message(args: tuple) -> bool:
    """Whether a job grpcio submits to its pool would begin by waiting for the call's
    request message: (in_pool, rpc_event, state, behavior, argument_thunk, ...)."""
    return (
        len(args) >= 6
        and args[0] in _IN_POOL
        and getattr(args[4], "__qualname__", "") == _WAITS_FOR_MESSAGE
    )


_Held = tuple[int, cygrpc.Call]


class IdlestFirst:
    """Calls kept with the one idle longest first, at most `limit` of them: one more
    cancels the idlest call of the connection that holds the most (the oldest of
    those on a tie), so that one connection flooding the replica with calls that
    stay idle has its own calls cancelled, not the slow upload of another client.
    Counted in `gauge`; the cancelled in `cancelled`."""

    def __init__(self, limit: int, gauge: Gauge, cancelled: Counter) -> None:
        self._limit = limit
        self._gauge = gauge
        self._cancelled = cancelled
        self._lock = threading.Lock()
        # Per connection (the peer's address and port), its calls idlest first, each
        # with the turn it was last active in.
        self._by_peer: dict[bytes, collections.OrderedDict[object, _Held]] = {}
        self._peer_of: dict[object, bytes] = {}
        self._arrivals = itertools.count()  # orders calls across connections

    def __len__(self) -> int:
        return len(self._peer_of)

    def add(self, key: object, call: cygrpc.Call) -> None:
        peer = call.peer()
        idlest = None
        with self._lock:
            self._peer_of[key] = peer
            self._by_peer.setdefault(peer, collections.OrderedDict())[key] = (
                next(self._arrivals),
                call,
            )
            self._gauge.inc()
            if len(self._peer_of) > self._limit:
                idlest = self._evict()
                self._gauge.dec()
                self._cancelled.inc()
        if idlest is not None:
            idlest.cancel()  # outside the lock: grpcio may run callbacks

    def _evict(self) -> cygrpc.Call:
        most = max(len(calls) for calls in self._by_peer.values())
        peer = min(
            (peer for peer, calls in self._by_peer.items() if len(calls) == most),
            key=lambda peer: next(iter(self._by_peer[peer].values()))[0],
        )
        key, (_, call) = self._by_peer[peer].popitem(last=False)
        self._forget(key, peer)
        return call

    def active(self, key: object) -> None:
        """The call did something: it is now the one idle the shortest."""
        with self._lock:
            peer = self._peer_of.get(key)
            if peer is not None:  # not if it was cancelled for being idle
                calls = self._by_peer[peer]
                calls[key] = (next(self._arrivals), calls[key][1])
                calls.move_to_end(key)

    def remove(self, key: object) -> None:
        with self._lock:
            peer = self._peer_of.get(key)
            if peer is not None:
                del self._by_peer[peer][key]
                self._forget(key, peer)
                self._gauge.dec()

    def _forget(self, key: object, peer: bytes) -> None:
        del self._peer_of[key]
        if not self._by_peer[peer]:
            del self._by_peer[peer]


class Arrivals:
    """The calls waiting for their request message, oldest first."""

    def __init__(self, limit: int = MAX_WAITING) -> None:
        if limit < 1:
            raise ValueError(
                f"the limit of calls waiting for their message must be at least 1, not {limit}"
            )
        self._waiting = IdlestFirst(
            limit, metrics.grpc_awaiting_message, metrics.grpc_awaiting_cancelled
        )

    def __len__(self) -> int:
        return len(self._waiting)

    def receive_then(self, args: tuple, run: Callable[[tuple], None]) -> None:
        """Receive the message of the call a grpcio job (awaiting_message) is for, then
        `run` the job with an argument thunk that returns the message at once.

        Called on grpcio's serving thread, as the pool's submit is; so is `run`.
        """
        in_pool, rpc_event, state, behavior = args[:4]
        ready = (in_pool, rpc_event, state, behavior, lambda: _take(state, rpc_event))
        if not self.receive(rpc_event, state, args[5], lambda: run(ready + args[5:])):
            run(args)  # grpcio's own thunk returns at once for a call that is over

    def receive(self, rpc_event, state, deserializer, then: Callable[[], None]) -> bool:
        """nonblocking.receive(), the call counted among the waiting ones until its
        message arrives."""
        with state.condition:
            if not _server._is_rpc_state_active(state):
                return False  # an inactive call evicts nobody
        token = object()
        self.hold(token, rpc_event.call)  # before the message can arrive

        def arrived() -> None:
            self.release(token)
            then()

        started = nonblocking.receive(rpc_event, state, deserializer, arrived)
        if not started:
            self.release(token)
        return started

    def hold(self, token: object, call: cygrpc.Call) -> None:
        """Count `call` (known by `token`) as waiting for its message; past the limit,
        another waiting call is cancelled (IdlestFirst)."""
        self._waiting.add(token, call)

    def release(self, token: object) -> None:
        """The call known by `token` waits no more (a no-op if it was cancelled)."""
        self._waiting.remove(token)


def _take(state, rpc_event):
    """The message received for the call, as grpcio's thunk would return it: None when
    there is none (the call was cancelled, or grpcio already answered it), after
    answering a call that ended without one."""
    with state.condition:
        request, state.request = state.request, None
        if request is None and state.client is _server._CLOSED and not state.statused:
            _server._abort(
                state,
                rpc_event.call,
                cygrpc.StatusCode.unimplemented,
                decoding.no_message(nonblocking.method(rpc_event)).encode(),
            )
        return request
