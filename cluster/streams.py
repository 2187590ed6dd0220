"""Caps on the streams that hold a thread, and their threads.

grpcio's synchronous server runs each call on a thread, and a stream keeps its
thread until it ends. Such streams run on a pool of their own, apart from the unary
calls (cluster/workers.py), so that idle streams from a client bug or an attacker
never take a thread that front-ends' unary calls need. Each streaming method gets a
cap, the stream pool has a thread for every stream the cap allows, and a call over
its cap is refused at once with RESOURCE_EXHAUSTED rather than left waiting. A
Backup gets its thread only once its request message has arrived
(cluster/arrivals.py), so callers that send headers and hold the message back take
no thread. Streams that grpcio runs without a thread (experimental_non_blocking) are
not capped here, and bound themselves: Registry.Watch (cluster/watches.py),
Health.Watch (cluster/health.py), which clients and proxies open one per channel,
and reflection (cluster/reflection.py).

Also what the server's interceptors share (cluster/auth.py is the other one): wrapping
a method's handler, and refusing a call so that the refusal is counted.
"""

import collections
import concurrent.futures
import threading
from collections.abc import Callable

import grpc

from cluster import metrics

WORKERS = 64  # unary calls at once, most of them waiting (cluster/workers.py)
# Streams at once, per method. Cluster.Backup is the one streaming method that holds
# a thread (and it runs one backup at a time); another would need threads of its own.
CAP = 2
STREAM_THREADS = CAP + 1  # one to refuse a call over the cap on, at once
# Long-lived streams of one kind (Registry.Watch, Health.Watch) one caller may hold:
# this share of the replica's. One client opening streams in a loop took all 1,024
# Watch slots, and everyone else was refused.
CALLER_SHARE = 4
# What grpcio reads on a behavior to run it elsewhere than on the server's pool, or
# on no thread at all; kept by every wrapper.
_THREADING = ("experimental_non_blocking", "experimental_thread_pool")


def wrap(
    handler: grpc.RpcMethodHandler, admit: Callable, request_deserializer: Callable | None = None
) -> grpc.RpcMethodHandler:
    """The same handler with each behavior passed through `admit` (interceptors), and
    its requests read by `request_deserializer` if one is given."""
    for kind, make in (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    ):
        behavior = getattr(handler, kind)
        if behavior is not None:
            admitted = admit(behavior)
            for name in _THREADING:
                if hasattr(behavior, name):
                    setattr(admitted, name, getattr(behavior, name))
            return make(
                admitted,
                request_deserializer=request_deserializer or handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


def label(method: str) -> str:
    """A method's `method` label: its name, or Service/Name outside regraft.v1 (so that
    grpc.health.v1.Health/Watch is not counted as Registry's Watch)."""
    service, _, name = method.lstrip("/").rpartition("/")
    return name if service.startswith("regraft.v1.") else f"{service.rsplit('.', 1)[-1]}/{name}"


def refuse(context: grpc.ServicerContext, method: str, code: grpc.StatusCode, message: str):
    """Abort an intercepted call, counted (count_refusal)."""
    count_refusal(method, code)
    context.abort(code, message)


def count_refusal(method: str, code: grpc.StatusCode) -> None:
    """Count a call refused before its handler, like the calls that reach one: refusals
    show on dashboards (an attack, a misconfigured front-end)."""
    metrics.grpc_requests.labels(label(method), code.name).inc()


class StreamCaps(grpc.ServerInterceptor):
    """Refuses a streaming call once its method has CAP streams open here, and runs
    the streams it admits on `threads` (STREAM_THREADS of them)."""

    def __init__(self, threads: concurrent.futures.ThreadPoolExecutor) -> None:
        # grpcio runs a stream on the pool its handler names only if it is one of these:
        # on any other it would take a thread of the unary pool, silently.
        if not isinstance(threads, concurrent.futures.ThreadPoolExecutor):
            raise TypeError(f"threads must be a ThreadPoolExecutor, not {type(threads).__name__}")
        self._threads = threads
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def _semaphore(self, method: str) -> threading.BoundedSemaphore:
        with self._lock:
            if method not in self._slots:
                self._slots[method] = threading.BoundedSemaphore(CAP)
            return self._slots[method]

    def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = continuation(details)
        if handler is None or not handler.response_streaming:
            return handler
        behavior = handler.unary_stream or handler.stream_stream
        if getattr(behavior, "experimental_non_blocking", False):
            return handler  # holds no thread; wrapping would make it block one
        method = details.method
        slots = self._semaphore(method)

        def admit(behavior: Callable) -> Callable:
            def capped(request, context):
                if not slots.acquire(blocking=False):
                    refuse(
                        context,
                        method,
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"this replica already serves {CAP} {method} streams: "
                        "end one, or use another replica",
                    )
                try:
                    yield from behavior(request, context)
                finally:
                    slots.release()

            capped.experimental_thread_pool = self._threads
            return capped

        return wrap(handler, admit)


class Shares:
    """Streams of one kind held by each caller (auth.caller_key), at most 1/`share`
    of `limit` each. Not thread-safe: its owner's lock guards it."""

    def __init__(self, limit: int, kind: str, share: int = CALLER_SHARE) -> None:
        self.each = max(1, limit // share)
        self._kind = kind
        self._held: collections.Counter[str] = collections.Counter()

    def refusal(self, caller: str) -> str | None:
        """Why `caller` may not open one more, or None."""
        if self._held[caller] < self.each:
            return None
        return (
            f"{caller} already holds {self.each} {self._kind} streams on this replica, its "
            "share: end some, or use another replica"
        )

    def take(self, caller: str) -> None:
        self._held[caller] += 1

    def give_back(self, caller: str) -> None:
        self._held[caller] -= 1
        if not self._held[caller]:
            del self._held[caller]
