"""The CLI's side of who may call the cluster and what it records (README, Security):
the credential flags of every command that calls a replica, `regraft token create`
(a bearer token for the callers file), `regraft audit log` (the change history:
who changed what, when) and `regraft audit retention` (how long it is kept).
"""

import argparse
import datetime
import json
import re
import secrets
import sys

import grpc

from cluster.auth import ROLES, token_hash
from cluster.client import Client, Credentials, read_token, token_from_env
from cluster.config import DEFAULT_ENDPOINTS, ConfigError
from regraft.v1 import cluster_pb2, registry_pb2
from storage import commands
from storage.errors import InvalidArgument
from storage.registry import EVENT_RETENTION, MIN_EVENT_REVISIONS

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_client_flags(p: argparse.ArgumentParser) -> None:
    """--ca-file, --cert-file, --key-file, --token-file: how to reach a secured cluster."""
    group = p.add_argument_group("TLS and identity (when the cluster requires them)")
    group.add_argument("--ca-file", default="", help="CA certificates that verify the replicas")
    group.add_argument("--cert-file", default="", help="client certificate, for mutual TLS")
    group.add_argument("--key-file", default="", help="the client certificate's private key")
    group.add_argument(
        "--tls", action="store_true", help="TLS verified with the system's roots (no --ca-file)"
    )
    group.add_argument(
        "--token-file",
        default="",
        help="file holding a bearer token (default: the REGRAFT_TOKEN environment variable)",
    )


def endpoint_list(text: str) -> list[str]:
    """The addresses of an --endpoints flag (comma-separated); at least one."""
    endpoints = [e.strip() for e in text.split(",") if e.strip()]
    if not endpoints:
        raise ConfigError(f"--endpoints {text!r} names no host:port")
    return endpoints


_NOT_REACHED = (
    "failed to connect",
    "socket closed",
    "connection refused",
    "handshake",
    "errors resolving",  # a host name that does not resolve
    "dns resolution failed",
)
NOT_REACHED_HINT = (
    "no replica answered: check the endpoints; a replica that serves TLS needs --ca-file "
    "(or --tls), and one that requires client certificates --cert-file and --key-file"
)


def not_reached(error: grpc.RpcError) -> bool:
    """Whether a call failed before any replica answered it (nothing listening there, or
    a TLS mismatch), rather than a replica answering UNAVAILABLE."""
    details = (error.details() or "").lower()
    return error.code() == grpc.StatusCode.UNAVAILABLE and any(s in details for s in _NOT_REACHED)


def client_credentials(args: argparse.Namespace) -> Credentials:
    token = read_token(args.token_file) if args.token_file else token_from_env()
    return Credentials(
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        token=token,
        tls=args.tls,
    )


def add_parsers(commands) -> None:
    token = commands.add_parser("token", help="bearer tokens for the callers file")
    actions = token.add_subparsers(dest="action", required=True)
    p = actions.add_parser(
        "create",
        help="print a new random token (stdout) and its [[token]] entry for the callers "
        "file (stderr)",
    )
    p.add_argument("name", help="the caller's name, recorded as the actor of its writes")
    p.add_argument("--role", required=True, choices=ROLES)
    p.set_defaults(run=_create)

    audit = commands.add_parser("audit", help="the change history: Watch events and their actors")
    actions = audit.add_subparsers(dest="action", required=True)
    p = actions.add_parser(
        "log",
        help="print the retained change history (every write: revision, time, actor, change)",
    )
    p.add_argument(
        "--from-revision", type=int, default=0, help="first revision (default: the oldest kept)"
    )
    p.add_argument("--repository-prefix", default="", help="only changes of these repositories")
    p.add_argument("--follow", action="store_true", help="keep printing new changes until Ctrl-C")
    p.add_argument("--json", action="store_true", help="one JSON object per event")
    p.add_argument("--endpoints", default=DEFAULT_ENDPOINTS, help="comma-separated gRPC")
    add_client_flags(p)
    p.set_defaults(run=_log)
    p = actions.add_parser(
        "retention", help="show, or set cluster-wide, how much change history is kept"
    )
    p.add_argument("--revisions", type=int, help="keep the events of this many last revisions")
    p.add_argument(
        "--max-age", type=duration, help="and only those younger than this: 3600, 90m, 12h, 30d"
    )
    p.add_argument("--endpoints", default=DEFAULT_ENDPOINTS, help="comma-separated gRPC")
    add_client_flags(p)
    p.set_defaults(run=_retention)


def _create(args) -> int:
    token = secrets.token_urlsafe(32)
    print(token)
    print(
        f"[[token]]\nname = {json.dumps(args.name)}\nrole = {json.dumps(args.role)}\n"
        f"sha256 = {json.dumps(token_hash(token))}",
        file=sys.stderr,
    )
    return 0


def duration(text: str) -> int:
    """Seconds from `90`, `90s`, `15m`, `12h` or `30d`."""
    found = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 3600, 90m, 12h, 30d")
    return int(found[1]) * _UNITS[found[2] or "s"]


def _log(args) -> int:
    """Stream events from the oldest retained (or --from-revision) to the revision
    current at the start, or on with --follow."""
    if args.from_revision < 0:
        raise ConfigError(f"--from-revision must be 0 or more, got {args.from_revision}")
    with Client(endpoint_list(args.endpoints), credentials=client_credentials(args)) as client:
        endpoint, status = _answering(client)
        last = 0 if args.follow else status.revision
        first = max(args.from_revision, 1)
        if last and first > last:
            return 0
        printed = False
        while True:
            stream = client.watch(first, args.repository_prefix, endpoint, to_revision=last)
            try:
                for event in stream:
                    print(_event_line(event, args.json), flush=True)
                    printed = True
                return 0
            except grpc.RpcError as e:
                oldest = dict(e.trailing_metadata() or ()).get("oldest-revision")
                # Only before anything was printed: a gap in the middle must be an error.
                if (
                    e.code() != grpc.StatusCode.OUT_OF_RANGE
                    or args.from_revision
                    or printed
                    or not oldest
                ):
                    raise
                first = int(oldest)  # the older history was pruned: start where it is kept
            finally:
                stream.cancel()


def _answering(client: Client) -> tuple[str, cluster_pb2.StatusResponse]:
    """The first endpoint that answers Status, and its answer."""
    failure: grpc.RpcError | None = None
    for endpoint in client.endpoints:
        try:
            return endpoint, client.status(endpoint)
        except grpc.RpcError as e:
            failure = e
    assert failure is not None
    raise failure


def _event_line(event: registry_pb2.Event, as_json: bool) -> str:
    if as_json:
        from cluster.cli_call import message_json  # cli_call imports this module

        return message_json(event)
    when = datetime.datetime.fromtimestamp(event.time_ms / 1000, datetime.UTC)
    time = when.isoformat(timespec="milliseconds")[:-6] + "Z" if event.time_ms else "-"
    kind = registry_pb2.EventKind.Name(event.kind)
    if event.operation:
        change = f"{event.operation} {event.target}"
    elif event.tag:
        change = f"{kind} {event.repository}:{event.tag} {event.digest}"
    else:
        change = f"{kind} {event.repository} {event.digest}"
    return f"{event.revision:>8}  {time:<24}  {event.actor or '-':<24}  {change}"


def _retention(args) -> int:
    from cluster.cli_members import call_leader  # cli_members imports this module

    credentials = client_credentials(args)
    with Client(endpoint_list(args.endpoints), credentials=credentials) as client:
        current = _answering(client)[1].event_retention
    if args.revisions is None and args.max_age is None:
        print(_describe(current))
        return 0
    if (args.revisions or 0) < 0:
        raise ConfigError(
            f"--revisions must be 0 (the default) or at least {MIN_EVENT_REVISIONS}, "
            f"got {args.revisions}"
        )
    # What is not given stays as it is (read just before; the last writer wins).
    request = cluster_pb2.EventRetention(
        revisions=current.revisions if args.revisions is None else args.revisions,
        max_age_seconds=current.max_age_seconds if args.max_age is None else args.max_age,
    )
    try:  # the replicas' own check, said in terms of the flags
        commands.set_event_retention(request.revisions, request.max_age_seconds)
    except InvalidArgument as e:
        flag = {"revisions": "--revisions", "max_age_seconds": "--max-age"}[e.field]
        raise ConfigError(f"{flag}: {e.message}") from None
    done = call_leader(args.endpoints, "SetEventRetention", request, 30.0, credentials)
    print(f"{_describe(request)} (from revision {done.revision})")
    return 0


def _describe(retention: cluster_pb2.EventRetention) -> str:
    revisions = retention.revisions or f"{EVENT_RETENTION} (the default)"
    age = f"{retention.max_age_seconds} s" if retention.max_age_seconds else "no limit"
    return f"events kept: those of the last {revisions} revisions; age limit: {age}"
