"""What the gRPC servicers share: deadlines, proposing, and errors as status codes.

Every handler is wrapped by `handler`: it counts and times the call, and turns the
exceptions of the layers below into gRPC statuses, each with a message for humans
and, where the registry has one, the OCI error code in trailing metadata `oci-code`.

    InvalidArgument      -> INVALID_ARGUMENT   (names the field)
    NotFound             -> NOT_FOUND
    FailedPrecondition   -> FAILED_PRECONDITION
    ProposalError        -> UNAVAILABLE        (leader's gRPC address in `leader`)
    ReadTimeout          -> UNAVAILABLE
    Cancelled            -> CANCELLED          (the caller went away while its read waited:
                                                counted so; the caller sees its own cancel)
    Exhausted            -> RESOURCE_EXHAUSTED
    TooLate              -> DEADLINE_EXCEEDED  (a write with no time left: not proposed)
"""

import concurrent.futures
import contextlib
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator

import grpc
from google.protobuf.message import Message

from cluster import metrics, unary, workers
from cluster.raft import ProposalError, Raft, settle
from cluster.reads import Cancelled, ReadTimeout
from regraft.v1 import command_pb2
from storage.errors import FailedPrecondition, InvalidArgument, NotFound, RegistryError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
# Writes and reads waiting without a thread (rpc.write, rpc.read), per replica.
MAX_PENDING = 1024
# Answer this long before the caller's deadline, so that it gets our reason.
_MARGIN = 0.05

_RESULT_ERRORS = {
    command_pb2.Result.NOT_FOUND: NotFound,
    command_pb2.Result.FAILED_PRECONDITION: FailedPrecondition,
}


class OutOfRange(Exception):
    """A Watch asked for history that was compacted away."""

    def __init__(self, asked: int, oldest: int) -> None:
        super().__init__(
            f"revision {asked} is no longer retained; the oldest available is {oldest}"
        )
        self.oldest = oldest


class Unavailable(Exception):
    """This replica cannot serve the call now; the caller should try again or elsewhere."""


class Exhausted(Exception):
    """A per-replica limit is reached (e.g. password checks); try later or elsewhere."""


class TooLate(Exception):
    """A write arrived with no time left before its deadline: it was not proposed, so
    its caller knows it was not written (proposed, it might have been, unanswered)."""


def timeout(context: grpc.ServicerContext) -> float:
    """Seconds left to answer within the caller's deadline (a default when it set none)."""
    remaining = context.time_remaining()
    if remaining is None:
        return DEFAULT_TIMEOUT
    return max(0.0, min(remaining - _MARGIN, 3600.0))


def propose(raft: Raft, command: command_pb2.Command, context) -> command_pb2.Result:
    """Replicate a command and wait for its result; refusals become exceptions."""
    return propose_within(raft, command, timeout(context))


def propose_within(raft: Raft, command: command_pb2.Command, wait: float) -> command_pb2.Result:
    """propose() with a timeout in seconds rather than a gRPC deadline."""
    future = _propose(raft, command, wait)
    try:
        with workers.blocking():
            result = future.result(wait + 1.0)
    except concurrent.futures.TimeoutError:
        # Raft's own deadline (at `wait`) should have failed the future first.
        raise ProposalError("no answer within the deadline: outcome unknown", False) from None
    return _applied(result)


def _propose(raft: Raft, command: command_pb2.Command, wait: float) -> concurrent.futures.Future:
    """Start replicating `command`, stamped with this replica's clock (its events' time,
    and "now" for age-based event retention); counted pending until answered."""
    if wait <= 0:
        raise TooLate(
            f"the call's deadline leaves no time to replicate the write (at least {_MARGIN}"
            " s are needed): nothing was written"
        )
    problem = raft.status().get("storage_error")
    if problem:
        # Better a clear refusal now than a timeout: nothing is written until there is room.
        raise Exhausted(f"this replica cannot write to its disk ({problem}); retry later")
    command.time_ms = command.time_ms or int(time.time() * 1000)
    future = raft.propose(command.SerializeToString(), wait)
    metrics.proposals_pending.inc()
    future.add_done_callback(_answered)
    return future


def _answered(future: concurrent.futures.Future) -> None:
    metrics.proposals_pending.dec()
    metrics.proposals.labels("failed" if future.exception() else "committed").inc()


def _applied(result: command_pb2.Result) -> command_pb2.Result:
    """An applied command's result; a refusal as the exception that tells the caller."""
    if result.code == command_pb2.Result.OK:
        return result
    error = _RESULT_ERRORS.get(result.code)
    if error is not None:
        raise error(result.oci_code, result.message)
    if result.code == command_pb2.Result.OUTCOME_UNKNOWN:
        raise ProposalError(result.message, definite=False)
    if result.code == command_pb2.Result.INVALID_ARGUMENT:
        raise InvalidArgument("command", result.message)
    raise RuntimeError(result.message)


class _Answer:
    """A call answered once, later, from whichever thread learns the answer: counted
    from its start until then. An error building the answer is the answer.

    Such calls hold no thread, so neither the pool nor grpcio's maximum_concurrent_rpcs
    (which counts a call while its pool job runs) bounds how many wait: at most
    MAX_PENDING do per replica (a leader without a quorum, say, holds every write),
    and one more is refused with RESOURCE_EXHAUSTED (`admitted` is False)."""

    _pending = 0
    _lock = threading.Lock()

    def __init__(self, call: "unary.Call", name: str, leader_hint) -> None:
        self._call = call
        self._counted = Counted(name).start()
        self._leader_hint = leader_hint
        with _Answer._lock:
            self.admitted = _Answer._pending < MAX_PENDING
            _Answer._pending += 1
        if not self.admitted:
            self.fail(
                Exhausted(
                    f"{MAX_PENDING} writes and reads already wait on this replica: retry, "
                    "or use another replica"
                )
            )

    def respond(self, response: Callable[[], Message]) -> None:
        """Answer with `response()`; an exception it raises is the answer instead."""
        try:
            data = response().SerializeToString()
        except Exception as error:
            self.fail(error)
            return
        try:
            self._counted.code = self._call.respond(data)
        finally:
            self._end()

    def fail(self, error: Exception) -> None:
        try:
            self._counted.code, message, trailers = failure(error, self._leader_hint)
            self._call.finish(self._counted.code, message, trailers)
        finally:
            self._end()

    def _end(self) -> None:
        self._counted.end()
        with _Answer._lock:
            _Answer._pending -= 1


def write(response: Callable[[command_pb2.Result], Message]) -> Callable:
    """Decorate a servicer method that returns the command a call makes: the command
    is replicated and the call answered with `response(result)` once it is applied,
    from the thread that learns it (Raft's), with no thread waiting meanwhile.

    A thread per write waiting for its commit cost more than the write: two wake-ups
    per call, and the GIL handed between dozens of threads (cluster/DESIGN.md, Where
    the time goes). Such methods are served by cluster/unary.py, their `context` a
    unary.Call; the servicer provides `_raft` and `leader_hint()`.
    """

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def unary(self, request, context) -> None:
            answer = _Answer(context, method.__name__, self.leader_hint)
            if not answer.admitted:
                return
            try:
                command = method(self, request, context)
                future = _propose(self._raft, command, timeout(context))
            except Exception as error:
                answer.fail(error)
                return
            future.add_done_callback(
                lambda done: answer.respond(lambda: response(_applied(done.result())))
            )

        unary.experimental_non_blocking = True
        return unary

    return decorate


def pooled(method: Callable) -> Callable:
    """Mark a method served by cluster/unary.py whose work would hold the serving
    thread, which receives every call (hashing a password: 170-300 ms): it runs on the
    call pool, whatever its request's size."""
    method.served_on_pool = True
    return method


def read(method: Callable) -> Callable:
    """Decorate a servicer method that checks a read request and returns its
    ReadOptions and `answer(view) -> response`: the call is answered once this
    replica's state is as fresh as the options ask, with no thread waiting meanwhile.
    A STALE read is answered at once on the thread that received it; one that waits
    (for a read index, a barrier, an entry to be applied) on the same thread once it
    is over (Reads.when_ready, unary.Call.soon). Served by cluster/unary.py; the
    servicer provides `_reads` and `leader_hint()`.
    """

    @functools.wraps(method)
    def unary(self, request, context) -> None:
        reply = _Answer(context, method.__name__, self.leader_hint)
        if not reply.admitted:
            return

        def run(ready: concurrent.futures.Future) -> None:
            def response() -> Message:
                ready.result()  # raises why the read cannot be served
                with self._reads.current() as view:
                    return answer(view)

            reply.respond(response)

        try:
            options, answer = method(self, request, context)
            ready = self._reads.when_ready(options, timeout(context))
        except Exception as error:
            reply.fail(error)
            return
        if ready.done():
            run(ready)
            return
        ready.add_done_callback(lambda done: context.soon(lambda: run(done)))
        # A caller gone stops the wait (and is counted CANCELLED), as in Reads.view.
        context.add_callback(lambda: settle(ready, error=Cancelled()))

    unary.experimental_non_blocking = True
    return unary


def handler(method: Callable) -> Callable:
    """Decorate a servicer method (unary or streaming): metrics, errors to statuses.

    The servicer provides `leader_hint()`: the leader's gRPC address, "" if none is
    known, or None if it is this replica.
    """
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(self, request, context):
            with _guard(self, context, method.__name__):
                yield from method(self, request, context)

        return stream

    @functools.wraps(method)
    def unary(self, request, context):
        with _guard(self, context, method.__name__):
            return method(self, request, context)

    return unary


class Counted:
    """One call, counted and timed in regraft_grpc_*: its code is OK unless set."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.code = grpc.StatusCode.OK

    def start(self) -> "Counted":
        self._started = time.monotonic()
        metrics.grpc_in_flight.inc()
        return self

    def end(self) -> None:
        metrics.grpc_in_flight.dec()
        metrics.grpc_requests.labels(self.name, self.code.name).inc()
        metrics.grpc_seconds.labels(self.name).observe(time.monotonic() - self._started)

    def __enter__(self) -> "Counted":
        return self.start()

    def __exit__(self, *_exception) -> None:
        self.end()


@contextlib.contextmanager
def _guard(servicer, context: grpc.ServicerContext, name: str) -> Iterator[None]:
    with Counted(name) as call:
        try:
            yield
        except Exception as error:
            call.code, message, trailers = failure(error, servicer.leader_hint)
            if trailers:
                context.set_trailing_metadata(trailers)
            context.abort(call.code, message)


def failure(
    error: Exception, leader_hint: Callable[[], str]
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """The status code, message and trailing metadata that tell a caller of `error`."""
    if isinstance(error, InvalidArgument):
        trailers = (("oci-code", error.oci_code),) if error.oci_code else ()
        return grpc.StatusCode.INVALID_ARGUMENT, str(error), trailers
    if isinstance(error, RegistryError):
        code = (
            grpc.StatusCode.NOT_FOUND
            if isinstance(error, NotFound)
            else grpc.StatusCode.FAILED_PRECONDITION
        )
        return code, f"{error.oci_code}: {error.message}", (("oci-code", error.oci_code),)
    if isinstance(error, Exhausted):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(error), ()
    if isinstance(error, TooLate):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(error), ()
    if isinstance(error, Cancelled):
        return grpc.StatusCode.CANCELLED, "the caller cancelled the call", ()
    if isinstance(error, OutOfRange):
        oldest = str(error.oldest)
        return grpc.StatusCode.OUT_OF_RANGE, str(error), (("oldest-revision", oldest),)
    if isinstance(error, ProposalError | ReadTimeout | Unavailable):
        leader = leader_hint()
        if leader is None:
            known = "this replica is the leader"
        elif leader:
            known = f"leader is {leader}"
        else:
            known = "no leader known"
        where = "" if known in str(error) else f"; {known}"  # not said twice
        outcome = "" if getattr(error, "definite", True) else " (may or may not have applied)"
        trailers = (("leader", leader),) if leader else ()
        return grpc.StatusCode.UNAVAILABLE, f"{error}{outcome}{where}", trailers
    log.exception("unexpected error in a gRPC handler")
    return grpc.StatusCode.INTERNAL, f"internal error: {error}", ()
