"""Requests that do not parse get INVALID_ARGUMENT, not INTERNAL and a traceback.

grpcio answers a request body that is not the method's protobuf message with
INTERNAL ("Exception deserializing request!") and logs the exception, traceback and
all, at ERROR: anyone who reaches the port (reflection and health need no
credentials) could fill the log, and a client's bug would read as the server's.
Here every method reads its requests through a parser that cannot raise, and its
behavior refuses a request that did not parse, counted like the other refusals; a
behavior that receives its requests itself (cluster/reflection.py) calls check().
"""

from collections.abc import Callable, Iterator

import grpc

from cluster import streams


class _Undecodable:
    """What a request that did not parse becomes, instead of an exception."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserialize: Callable[[bytes], object]) -> Callable[[bytes], object]:
    def parse(data: bytes) -> object:
        try:
            return deserialize(data)
        except Exception as error:  # protobuf's DecodeError, or whatever a parser raises
            return _Undecodable(error)

    return parse


def check(request: object, context: grpc.ServicerContext, method: str) -> None:
    """Refuse the call (INVALID_ARGUMENT) if its request did not parse."""
    if isinstance(request, _Undecodable):
        streams.refuse(
            context, method, grpc.StatusCode.INVALID_ARGUMENT, malformed(method, request.error)
        )


def malformed(method: str, error: Exception) -> str:
    """What a caller whose request did not parse is told."""
    return f"the request is not a valid {method} message: {error}"


def no_message(method: str) -> str:
    """What a caller that ended a call without its one request message is told."""
    return f"the call ended without its request message: {method} takes exactly one"


class MalformedRequests(grpc.ServerInterceptor):
    def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = details.method

        def checked(requests: Iterator, context: grpc.ServicerContext) -> Iterator:
            for request in requests:
                check(request, context, method)
                yield request

        def admit(behavior: Callable) -> Callable:
            def admitted(request, context, *args, **kwargs):
                if handler.request_streaming:
                    request = checked(request, context)
                else:
                    check(request, context, method)
                return behavior(request, context, *args, **kwargs)

            return admitted

        return streams.wrap(handler, admit, _tolerant(handler.request_deserializer))
