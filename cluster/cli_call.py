"""`regraft call METHOD [JSON]`: any method of the API from the shell.

The request is JSON (protobuf's JSON mapping, field names as in the .proto files),
the answer is printed as JSON, a stream as one JSON object per line. Like grpcurl,
but with regraft's endpoints, credentials and leader-following: the way to manage
accounts and permissions (`CreateUser`, `SetGrant`, `CheckAccess`, ...) without
writing a client.

    regraft call CreateUser '{"name": "alice", "admin": true}'
    regraft call SetGrant '{"grant": {"scope": {"repository": "alice/app"},
                             "subject": {"user": "bob"}, "level": "READ_WRITE"}}'
    regraft call ListTags '{"repository": "alice/app"}'
"""

import json
import sys

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor

from cluster import cli_auth
from cluster.cli_members import follow_leader
from cluster.client import dial, with_request_id
from cluster.config import DEFAULT_ENDPOINTS, ConfigError
from regraft.v1 import access_pb2, cluster_pb2, registry_pb2

_SERVICES = [
    registry_pb2.DESCRIPTOR.services_by_name["Registry"],
    access_pb2.DESCRIPTOR.services_by_name["Access"],
    cluster_pb2.DESCRIPTOR.services_by_name["Cluster"],
]
# Streams of bytes, not of JSON: `regraft backup` does it right.
_NOT_HERE = {"Backup": "use `regraft backup`, which writes and checks the file"}


def methods() -> dict[str, MethodDescriptor]:
    """Every method of the API, by its name, by Service/Method, and by its full name as
    grpcurl spells it (regraft.v1.Service/Method, or .Method after the service)."""
    found = {}
    for service in _SERVICES:
        for method in service.methods:
            found[method.name] = method
            found[f"{service.name}/{method.name}"] = method
            found[f"{service.full_name}/{method.name}"] = method
            found[f"{service.full_name}.{method.name}"] = method
    return found


def add_parsers(commands) -> None:
    p = commands.add_parser(
        "call",
        help="call any API method with a JSON request (e.g. CreateUser, SetGrant, CheckAccess)",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument(
        "method",
        help="e.g. CreateUser, Access/CreateUser, regraft.v1.Access/CreateUser; `list` lists them",
    )
    p.add_argument("request", nargs="?", default="{}", help="JSON request, or - for stdin")
    p.add_argument("--endpoints", default=DEFAULT_ENDPOINTS, help="comma-separated gRPC")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds (unary calls)")
    cli_auth.add_client_flags(p)
    p.set_defaults(run=_call)


def _call(args) -> int:
    known = methods()
    if args.method == "list":
        for name, method in sorted(known.items()):
            if name == f"{method.containing_service.name}/{method.name}":
                print(f"{name}({method.input_type.name}) -> {method.output_type.name}")
        return 0
    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be more than 0 seconds, got {args.timeout}")
    method = known.get(args.method)
    if method is None:
        raise ConfigError(f"no method {args.method!r}: `regraft call list` lists them")
    if method.name in _NOT_HERE:
        raise ConfigError(f"{method.name}: {_NOT_HERE[method.name]}")
    request = _request(method, sys.stdin.read() if args.request == "-" else args.request)
    path = f"/{method.containing_service.full_name}/{method.name}"
    answer = message_factory.GetMessageClass(method.output_type)
    credentials = cli_auth.client_credentials(args)
    if method.server_streaming:
        endpoint = cli_auth.endpoint_list(args.endpoints)[0]
        with dial(endpoint, credentials) as channel:
            stream = channel.unary_stream(
                path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=answer.FromString,
            )(request)
            for message in stream:
                print(message_json(message), flush=True)
        return 0

    def invoke(channel: grpc.Channel, seconds: float):
        call = channel.unary_unary(
            path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=answer.FromString,
        )
        return call(request, timeout=seconds)

    print(message_json(follow_leader(args.endpoints, invoke, args.timeout, credentials), 2))
    return 0


def _request(method: MethodDescriptor, text: str):
    """The request message from JSON; a mistake is named with the method and the field."""
    message = message_factory.GetMessageClass(method.input_type)()
    try:
        problem = _not_an_object(method.input_type, json.loads(text), "")
    except ValueError:
        problem = ""  # not JSON: protobuf's parser says where
    if problem:
        raise ConfigError(f"{method.name} request: {problem}")
    try:
        json_format.Parse(text, message)
    except json_format.ParseError as e:
        raise ConfigError(f"{method.name} request: {e}") from None
    return with_request_id(message)  # a write retried on another replica applies once


def _not_an_object(descriptor: Descriptor, value: object, path: str) -> str:
    """Where `value` gives a message field something other than a JSON object, what is
    wrong; protobuf's parser says `has no field named "S"` for `"read": "STALE"`."""
    if not isinstance(value, dict):
        return ""
    for key, item in value.items():
        field = descriptor.fields_by_camelcase_name.get(key) or descriptor.fields_by_name.get(key)
        kind = field.message_type if field is not None else None
        if kind is None or kind.full_name.startswith("google.protobuf."):
            continue  # not a message, or one with a JSON form of its own
        if kind.GetOptions().map_entry:
            continue  # a map: protobuf's parser names its mistakes
        repeated = field.is_repeated and isinstance(item, list)
        for element in item if repeated else [item]:
            where = f"{path}.{key}" if path else key
            if element is not None and not isinstance(element, dict):
                fields = ", ".join(f.name for f in kind.fields)
                return (
                    f"field {where!r} is a {kind.full_name} message: give an object with "
                    f"its fields ({fields}), not {json.dumps(element)}"
                )
            found = _not_an_object(kind, element, where)
            if found:
                return found
    return ""


def message_json(message, indent: int | None = None) -> str:
    """A message as JSON: proto field names, every field, revisions as numbers."""
    as_dict = json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=True,  # "allowed": false, not nothing
        preserving_proto_field_name=True,
        unquote_int64_if_possible=True,  # revisions as numbers, for jq
    )
    return json.dumps(as_dict, indent=indent, sort_keys=True)
