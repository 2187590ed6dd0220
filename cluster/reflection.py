"""Server reflection whose streams hold no thread while they wait.

grpc_reflection's servicer reads its requests from an iterator, so grpcio's synchronous
server gives each reflection stream a thread for as long as the stream is open, waiting
for the next request. Clients keep the stream open while they work: grpcurl for the
whole of the call it looked up (a Watch: for as long as it runs). With a thread per
stream and a cap of 4, four idle clients, or anyone (reflection needs no credentials),
took reflection away from everybody else.

Here grpcio's callbacks drive each stream instead: a request is received without a
thread (cluster/nonblocking.py), answered by grpc_reflection's servicer on the unary pool,
and the answer sent without waiting for the client to read it; the next request is
received once the answer is out. A stream takes a thread only while an answer is
computed. At most MAX_OPEN streams are open on a replica: one more cancels, of the
connection holding the most, the stream whose last request is oldest, so that a new
caller always gets in. Requests are names, and one over MAX_REQUEST_BYTES is refused.

Like nonblocking.py this relies on grpcio's private server module (1.85);
tests/unit/test_reflection.py fails when it changes.
"""

import logging
from concurrent.futures import Executor

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc import _server
from grpc._cython import cygrpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from cluster import arrivals, decoding, metrics, nonblocking

log = logging.getLogger(__name__)

SERVICE = reflection.SERVICE_NAME
METHOD = f"/{SERVICE}/ServerReflectionInfo"
# grpc.reflection.v1: the same messages, field for field, under the name that newer
# clients (grpcurl, Postman) ask first; grpcio-reflection 1.85 ships only v1alpha.
SERVICE_V1 = "grpc.reflection.v1.ServerReflection"
# Real clients open one or two at a time. An idle stream costs an HTTP/2 stream and
# the part of a request that has arrived: grpcio buffers up to the server's limit
# (cluster/replica.py: MAX_REQUEST_BYTES) before this module can refuse it.
MAX_OPEN = 64
# A request names a symbol or a file: tens of bytes. Larger ones are refused, which
# also bounds the answers (they repeat the request) that wait for a client to read.
MAX_REQUEST_BYTES = 4096


def _describe_v1() -> None:
    """Put grpc.reflection.v1's file (v1alpha's under the new package) in the default
    descriptor pool, so that reflection lists and describes v1 too: clients that fetch
    every listed service's file (grpcui, Postman) would fail on a name it cannot give."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(SERVICE_V1)
        return  # a grpcio-reflection that ships v1
    except KeyError:
        pass
    v1 = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(v1)
    v1.name, v1.package = "grpc/reflection/v1/reflection.proto", "grpc.reflection.v1"
    v1.options.Clear()

    def renamed(type_name: str) -> str:
        return type_name.replace(".grpc.reflection.v1alpha.", ".grpc.reflection.v1.")

    for message in v1.message_type:
        for field in message.field:
            if field.type_name:  # setting "" would mark it set
                field.type_name = renamed(field.type_name)
    for method in v1.service[0].method:
        method.input_type, method.output_type = (
            renamed(method.input_type),
            renamed(method.output_type),
        )
    pool.Add(v1)


_describe_v1()


class Reflection:
    """Serves grpc.reflection.v1alpha.ServerReflection, and v1, on a grpc.server."""

    def __init__(self, service_names: list[str], pool: Executor, limit: int = MAX_OPEN) -> None:
        if limit < 1:
            raise ValueError(f"the limit of open reflection streams must be 1 or more, not {limit}")
        self._servicer = reflection.ReflectionServicer([*service_names, SERVICE, SERVICE_V1])
        self._pool = pool
        # Open streams; one idle longest is cancelled for a new one past the limit.
        self._open = arrivals.IdlestFirst(
            limit, metrics.reflection_streams, metrics.reflection_cancelled
        )

    def add_to(self, server: grpc.Server) -> None:
        def open_stream(requests, context, send_response_callback):
            # `requests` stays unread: reading it would hold this thread until the next
            # request comes. grpcio runs this without waiting (non-blocking below).
            _Stream(self, context).receive()

        open_stream.experimental_non_blocking = True
        handlers = {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                open_stream,
                request_deserializer=_parse,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        }
        for service in (SERVICE, SERVICE_V1):
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, handlers),)
            )
            server.add_registered_method_handlers(service, handlers)

    def __len__(self) -> int:
        return len(self._open)


def _parse(data: bytes) -> reflection_pb2.ServerReflectionRequest:
    if len(data) > MAX_REQUEST_BYTES:
        raise ValueError(
            f"a reflection request is at most {MAX_REQUEST_BYTES} bytes, not {len(data)}"
        )
    return reflection_pb2.ServerReflectionRequest.FromString(data)


class _Stream:
    """One reflection stream: receive a request, answer it, send the answer, again."""

    def __init__(self, reflection: Reflection, context: grpc.ServicerContext) -> None:
        self._reflection = reflection
        self._context = context
        self._rpc_event = context._rpc_event
        self._state = context._state
        self.call = self._rpc_event.call
        # The method's parser, which the interceptors made tolerant (cluster/decoding.py).
        self._deserializer = context._request_deserializer
        reflection._open.add(self, self.call)
        if not context.add_callback(lambda: reflection._open.remove(self)):
            reflection._open.remove(self)  # the call is already over

    def receive(self) -> None:
        """Receive the next request; it is answered on the pool once it has come."""
        nonblocking.receive(self._rpc_event, self._state, self._deserializer, self._arrived)

    def _arrived(self) -> None:  # on grpcio's serving thread
        # A request is a sign of life; an answer going out is not: a client that stopped
        # reading still sends requests.
        if self._state.request is not None:
            self._reflection._open.active(self)
        self._reflection._pool.submit(self._answer)

    def _answer(self) -> None:
        state = self._state
        with state.condition:
            request, state.request = state.request, None
            if request is None:  # the client is done (half-closed) or gone
                if state.client is _server._CLOSED and not state.statused:
                    _server._status(self._rpc_event, state, None)
                return
        try:
            decoding.check(request, self._context, METHOD)
            (response,) = self._reflection._servicer.ServerReflectionInfo(
                iter((request,)), self._context
            )
        except Exception as e:  # what grpcio does when a behavior raises
            if not state.aborted:
                log.exception("cannot answer a reflection request: %s", e)
            with state.condition:
                _server._abort(state, self.call, cygrpc.StatusCode.unknown, b"RPC Aborted")
            return
        self._send(response.SerializeToString())

    def _send(self, data: bytes) -> None:
        """Start sending; the next request is received once the answer is out."""
        nonblocking.send(self._rpc_event, self._state, data, self.receive)
