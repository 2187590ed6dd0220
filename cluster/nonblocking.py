"""Serving a call of grpcio's synchronous server without a thread that waits.

grpcio's sync server gives a call a pool thread, which then blocks: waiting for the
request message, and for each response to be sent (until the client reads it). The
functions here start those operations on the call and return at once; what comes
next runs in a callback on grpcio's serving thread when the operation completes, as
grpcio's asyncio server does. Callers waiting for their message (arrivals.py),
reflection streams (reflection.py), Watch streams (watches.py) and Health watches
(health.py) are served this way, so that idle or slow clients, and calls that wait,
cost no thread. (Writes and reads that wait are served apart: cluster/unary.py.)

A callback runs on grpcio's one serving thread: it must be short and must not raise
(an exception there ends the thread, and with it the server). At most one receive
and one send are outstanding on a call at a time, as grpcio requires.

This relies on grpcio's private server module (1.85); tests/unit/test_arrivals.py,
test_reflection.py and test_watches.py fail when it changes.
"""

import logging
from collections.abc import Callable

import grpc
from grpc import _server
from grpc._cython import cygrpc

log = logging.getLogger(__name__)


def receive(rpc_event, state, deserializer, then: Callable[[], None]) -> bool:
    """Start receiving the call's next message; `then()` on grpcio's serving thread once
    it (or the call's end) has arrived, the message in `state.request`. False if the
    call is over and nothing was started.
    """
    call = rpc_event.call
    take_message = _server._receive_message(state, call, deserializer)

    def arrived(event: cygrpc.BaseEvent):
        outcome = take_message(event)
        _callback(then, rpc_event, "whose message arrived")
        return outcome

    with state.condition:
        if not _server._is_rpc_state_active(state):
            return False
        error = call.start_server_batch(
            (cygrpc.ReceiveMessageOperation(_server._EMPTY_FLAGS),), arrived
        )
        if error == cygrpc.CallError.ok:
            state.due.add(_server._RECEIVE_MESSAGE_TOKEN)
            return True
    # Never seen: the call is cancelled, and grpcio ends it.
    log.warning("cannot receive a message of %s (%s)", method(rpc_event), error)
    call.cancel()
    return False


def send(rpc_event, state, data: bytes, then: Callable[[], None]) -> bool:
    """Start sending one serialized response (with the initial metadata, the first
    time); `then()` on grpcio's serving thread once it is out, or the call is over.
    False if the call is over and nothing was started."""
    call = rpc_event.call
    with state.condition:
        if not _server._is_rpc_state_active(state):
            return False
        message = cygrpc.SendMessageOperation(data, _server._EMPTY_FLAGS)
        if state.initial_metadata_allowed:
            operations = (_server._get_initial_metadata_operation(state, None), message)
            token = _server._SEND_INITIAL_METADATA_AND_SEND_MESSAGE_TOKEN
            state.initial_metadata_allowed = False
        else:
            operations, token = (message,), _server._SEND_MESSAGE_TOKEN
        sent = _server._send_message(state, token)

        def done(event: cygrpc.BaseEvent):
            outcome = sent(event)
            _callback(then, rpc_event, "whose response went out")
            return outcome

        if call.start_server_batch(operations, done) == cygrpc.CallError.ok:
            state.due.add(token)
            return True
    call.cancel()  # never seen: the call is over; cancelling makes sure it ends
    return False


def finish(
    rpc_event,
    state,
    code: grpc.StatusCode = grpc.StatusCode.OK,
    details: str = "",
    trailers: tuple[tuple[str, str], ...] = (),
) -> None:
    """End the call with this status and trailing metadata, unless it is over. Not
    while a send is outstanding: the status would overtake it."""
    with state.condition:
        if not _server._is_rpc_state_active(state):
            return
        if trailers:
            state.trailing_metadata = trailers
        if code is not grpc.StatusCode.OK:
            state.code = code
            state.details = details.encode()
        _server._status(rpc_event, state, None)


def _callback(then: Callable[[], None], rpc_event, what: str) -> None:
    try:
        then()
    except Exception as e:  # raising here would end grpcio's serving thread
        log.warning(
            "cannot go on with a call of %s %s (%s): cancelling it", method(rpc_event), what, e
        )
        rpc_event.call.cancel()


def method(rpc_event) -> str:
    """The call's method: grpcio leaves call_details empty for registered methods and
    tags their calls with the method's name instead."""
    name = rpc_event.call_details.method
    if name:
        return name.decode(errors="replace")
    tag = rpc_event.tag
    return tag if isinstance(tag, str) and tag.startswith("/") else "the method"


class Call:
    """The call of a servicer context, sent on and ended without waiting."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._rpc_event = context._rpc_event
        self._state = context._state

    def send(self, data: bytes, then: Callable[[], None]) -> bool:
        return send(self._rpc_event, self._state, data, then)

    def finish(
        self,
        code: grpc.StatusCode = grpc.StatusCode.OK,
        details: str = "",
        trailers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        finish(self._rpc_event, self._state, code, details, trailers)

    def cancel(self) -> None:
        self._rpc_event.call.cancel()

    @property
    def statused(self) -> bool:
        """Whether this side ended the call with a status (else its caller left: it
        cancelled, or its deadline passed)."""
        return self._state.statused
