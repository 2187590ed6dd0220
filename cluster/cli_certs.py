"""`regraft certs`: a CA and certificates for the gRPC API's mutual TLS
(cluster/certificates.py; README, Security).

    regraft certs init tls                                   tls/ca.pem, tls/ca.key
    regraft certs issue tls replica --host r1 --host 10.0.0.1  tls/replica.pem, .key
    regraft certs issue tls ops-alice --role admin           and its callers-file entry
"""

import json
import sys

from cluster.auth import ROLES
from cluster.certificates import Authority


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
        "--role", choices=ROLES, help="also print its [[certificate]] entry for the callers file"
    )
    p.set_defaults(run=_issue)


def _init(args) -> int:
    authority = Authority.create(args.directory, args.name, args.days)
    print(authority.ca_file)
    return 0


def _issue(args) -> int:
    issued = Authority.load(args.directory).issue(args.name, args.host, args.days)
    print(issued.cert_file)
    print(issued.key_file)
    if args.role:
        print(
            f"[[certificate]]\nname = {json.dumps(args.name)}\nrole = {json.dumps(args.role)}",
            file=sys.stderr,
        )
    return 0
