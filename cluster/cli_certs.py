"""`regraft certs`: a CA and certificates for the gRPC API's mutual TLS
(cluster/certificates.py; README, Security).

    regraft certs init tls                                   tls/ca.pem, tls/ca.key
    regraft certs issue tls replica --host r1 --host 10.0.0.1  tls/replica.pem, .key
    regraft certs issue tls ops-alice --role admin --callers callers.toml   and its role
"""

import json
import os
import sys

from cluster.auth import ROLES, parse_callers
from cluster.certificates import Authority
from cluster.config import ConfigError


def add_parsers(commands) -> None:
    certs = commands.add_parser(
        "certs", help="a CA and certificates for mutual TLS, when you have no PKI"
    )
    actions = certs.add_subparsers(dest="action", required=True)
    p = actions.add_parser("init", help="make a CA in DIR (ca.pem; its key ca.key, owner only)")
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--name", default="regraft CA", help="the CA's common name")
    p.add_argument("--days", type=int, default=3650, help="how long it is valid (default 3650)")
    p.set_defaults(run=_init)
    p = actions.add_parser(
        "issue",
        help="issue NAME.pem and NAME.key with the CA in DIR, replacing any before (renewal)",
    )
    p.add_argument("directory", metavar="DIR")
    p.add_argument("name", help="the common name: a caller's identity in the callers file")
    p.add_argument(
        "--host",
        action="append",
        default=[],
        help="a host name or IP address it serves at (a replica's: repeat for each; "
        "*.regraft.ns.svc for a wildcard)",
    )
    p.add_argument("--days", type=int, default=365, help="how long it is valid (default 365)")
    p.add_argument(
        "--role", choices=ROLES, help="the caller's role: print its [[certificate]] entry"
    )
    p.add_argument(
        "--callers",
        metavar="FILE",
        help="with --role: add the entry to this callers file instead (made if missing)",
    )
    p.set_defaults(run=_issue)


def _init(args) -> int:
    authority = Authority.create(args.directory, args.name, args.days)
    print(authority.ca_file)
    return 0


def _issue(args) -> int:
    if args.callers and not args.role:
        raise ConfigError("--callers needs --role: the role the caller gets")
    authority = Authority.load(args.directory)
    # Everything is checked before anything is written; the callers file is renamed
    # into place first: an entry without its certificate admits nobody, a certificate
    # without its entry would be refused every call.
    callers = _with_entry(args.callers, args.name, args.role) if args.callers else None
    first = []
    if callers is not None:
        mode = os.stat(args.callers).st_mode & 0o777 if os.path.exists(args.callers) else 0o644
        first.append((args.callers, callers.encode(), mode))
    issued = authority.issue(args.name, args.host, args.days, first=first)
    print(issued.cert_file)
    print(issued.key_file)
    if args.callers:
        print(args.callers)
    elif args.role:
        print(_entry(args.name, args.role), file=sys.stderr, end="")
    return 0


def _entry(name: str, role: str) -> str:
    return f"[[certificate]]\nname = {json.dumps(name)}\nrole = {json.dumps(role)}\n"


def _with_entry(path: str, name: str, role: str) -> str | None:
    """The callers file with NAME's entry added; None if it is there with this role
    (a renewal). Refused if it gives NAME another role, or does not parse."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    except OSError as e:
        raise ConfigError(f"cannot read callers file {path}: {e.strerror}") from None
    existing = parse_callers(text, path).certificates.get(name)
    if existing is not None:
        if existing.role == role:
            return None
        raise ConfigError(
            f"{path} already gives {name!r} role {existing.role}, not {role}: "
            "edit the file to change it"
        )
    separator = "\n" if text and not text.endswith("\n") else ""
    updated = text + separator + _entry(name, role)
    parse_callers(updated, path)
    return updated
