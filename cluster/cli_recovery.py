"""`regraft backup | backup verify | restore | emergency-repair`: keeping the data when
replicas or the whole cluster are lost. The work is done in cluster/backup.py and
cluster/repair.py; this module parses, asks, and prints.
"""

import os
import sys
import time

from cluster import cli_auth
from cluster.config import ConfigError


def add_parsers(commands) -> None:
    """Register the subcommands on `regraft`'s argument parser."""
    _backup_parser(commands)
    _restore_parser(commands)
    _repair_parser(commands)


def _errors() -> tuple[type[Exception], ...]:
    """What the recovery commands report as a message rather than a traceback."""
    from cluster.backup import BackupError
    from cluster.repair import RepairError
    from storage.db import FormatError
    from storage.snapshot import SnapshotError

    return BackupError, RepairError, FormatError, SnapshotError


def _reporting(run):
    def wrapped(args) -> int:
        try:
            return run(args)
        except _errors() as e:
            print(f"regraft {args.command}: {e}", file=sys.stderr)
            return 1

    return wrapped


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


# -- backup -----------------------------------------------------------------------------


def _backup_parser(commands) -> None:
    p = commands.add_parser(
        "backup",
        help="write an online backup of a running cluster to a file (or: backup verify FILE)",
        description="Write an online backup of a running cluster to a file. "
        "`regraft backup verify FILE` checks one instead.",
    )
    verify = p.add_subparsers(dest="action", metavar="[verify FILE]").add_parser(
        "verify",
        help="check a backup file: its checksum, and the state hash from every record",
        description="Check a backup file offline: its checksum, and its state hash "
        "recomputed from every record.",
    )
    verify.add_argument("file", help="the backup file to check")
    verify.set_defaults(run=_reporting(lambda args: _verify(args.file)))
    p.add_argument(
        "--endpoint",
        "--endpoints",
        dest="endpoint",
        help="gRPC address of the replica to back up (one: the backup streams from it)",
    )
    p.add_argument("--out", help="the backup file to write (never left half-written)")
    p.add_argument(
        "--stale",
        action="store_true",
        help="back up the replica's state as it is, without asking the leader "
        "(works without a quorum; default: reflect every acknowledged write)",
    )
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds for the whole transfer")
    cli_auth.add_client_flags(p)
    p.set_defaults(run=_reporting(_backup))


class _Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    WIDTH = 30

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._drawn = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and (not self._tty or now - self._drawn < 0.1):
            return
        self._drawn = now
        filled = self.WIDTH * done // max(total, 1)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        start, end = ("\r" if self._tty else ""), ("\n" if done >= total else "")
        percent = 100 * done // max(total, 1)
        print(
            f"{start}backup [{bar}] {percent:3d}%  {_mib(done)} of {_mib(total)}",
            end=end,
            file=sys.stderr,
            flush=True,
        )


def _backup(args) -> int:
    from cluster import backup
    from regraft.v1 import registry_pb2

    if not args.endpoint or not args.out:
        raise ConfigError("backup needs --endpoint (a replica's gRPC address) and --out FILE")
    if "," in args.endpoint:
        raise ConfigError(
            f"--endpoint {args.endpoint}: name one replica; the backup streams from it"
        )
    consistency = registry_pb2.STALE if args.stale else registry_pb2.LINEARIZABLE
    header, sha256 = backup.fetch(
        args.endpoint,
        args.out,
        consistency,
        args.timeout,
        _Progress(),
        cli_auth.client_credentials(args),
    )
    print(f"regraft backup: wrote {os.path.abspath(args.out)}")
    print(f"  revision    {header.revision}")
    print(f"  state hash  {header.state_hash}")
    print(f"  size        {_mib(header.size)} ({header.size} bytes)")
    print(f"  cluster     {header.cluster_id or '(not named yet: no leader so far)'}")
    print(f"  taken on    {header.replica_id} ({args.endpoint})")
    print(f"  sha256      {sha256}")
    return 0


def _verify(path: str) -> int:
    from cluster import backup
    from storage import snapshot

    found = backup.inspect(path)
    print(f"{path}: OK (checksum, and the state hash recomputed from every record)")
    print(f"  revision    {found.revision}")
    print(f"  state hash  {found.state_hash}")
    print(f"  size        {_mib(found.size)} ({found.size} bytes)")
    print(f"  sha256      {found.sha256}")
    print(f"  cluster     {found.cluster_id or '(not named yet: no leader so far)'}")
    if found.header.get("kind") == "backup":
        print(f"  taken       {found.header['created']} on {found.header['replica_id']}")
    else:
        print(f"  taken       as the Raft snapshot at index {found.header.get('raft_index')}")
    print(f"  formats     file v{snapshot.FORMAT_VERSION}, data v{found.data_format}")
    print("  entries     " + ", ".join(f"{db} {n}" for db, n in found.entries.items()))
    return 0


# -- restore ----------------------------------------------------------------------------


def _restore_parser(commands) -> None:
    p = commands.add_parser(
        "restore", help="create a new single-replica cluster from a backup file"
    )
    p.add_argument("file", help="the backup file (from regraft backup)")
    p.add_argument("--data-dir", required=True, help="new or empty data directory to create")
    p.add_argument("--id", help="the new replica's id: its only member (with both addresses)")
    p.add_argument("--raft-address", help="the new replica's Raft host:port")
    p.add_argument("--grpc-address", help="the new replica's gRPC host:port")
    p.add_argument(
        "--bump-revision",
        type=int,
        default=0,
        metavar="N",
        help="start the new log N revisions above the backup's, beyond any revision "
        "clients saw after the backup was taken",
    )
    p.set_defaults(run=_reporting(_restore))


def _restore(args) -> int:
    from cluster import backup
    from cluster.config import dialable
    from storage.members import Member

    identity = (args.id, args.raft_address, args.grpc_address)
    member = None
    if any(identity):
        if not all(identity):
            raise ConfigError("give all of --id, --raft-address and --grpc-address, or none")
        dialable(args.raft_address, "--raft-address")
        dialable(args.grpc_address, "--grpc-address")
        member = Member(id=args.id, raft_address=args.raft_address, grpc_address=args.grpc_address)
    done = backup.restore(args.file, args.data_dir, member, args.bump_revision)
    data_dir = os.path.abspath(args.data_dir)
    print(f"regraft restore: restored revision {done.revision} into {data_dir}")
    print(f"  cluster     {done.cluster_id} (new)")
    print(f"  member      {args.id or '(the configuration of its first start)'} (alone)")
    print(f"  revisions   continue above {done.raft_index}")
    print("Start it with no peers, then add replicas with regraft member add:")
    print(
        f"  regraft serve --id {args.id or 'ID'} --data-dir {data_dir} "
        f"--raft-address {args.raft_address or 'HOST:PORT'} "
        f"--grpc-address {args.grpc_address or 'HOST:PORT'} --secret-file SECRET "
        "[--metrics-address HOST:PORT]"
    )
    return 0


# -- emergency-repair -------------------------------------------------------------------


def _repair_parser(commands) -> None:
    p = commands.add_parser(
        "emergency-repair",
        help="after quorum is lost for good: make a surviving replica a single-replica cluster",
    )
    p.add_argument("--data-dir", required=True, help="data directory of the stopped survivor")
    p.add_argument("--id", required=True, help="the survivor's replica id")
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="DIR",
        help="data directory of another stopped survivor, to find the most recent (repeat)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--force", action="store_true", help="repair even if another survivor has more recent data"
    )
    p.set_defaults(run=_reporting(_repair))


def _repair(args) -> int:
    from cluster.repair import DataDir, RepairError

    target = DataDir(args.data_dir)
    try:
        me = target.survivor()
        survivors = [me]
        for path in args.compare:
            other = DataDir(path)
            try:
                survivors.append(other.survivor())
            finally:
                other.close()
        best = max(survivors, key=lambda s: s.recency())
        print(f"regraft emergency-repair: {me.source}")
        width = max(len(s.source) for s in survivors)
        print(f"  {'DATA DIRECTORY'.ljust(width)}  APPLIED  LAST LOG  LAST TERM  TERM")
        for s in survivors:
            mark = "  <- most recent" if s is best else ""
            print(
                f"  {s.source.ljust(width)}  {s.applied:<7}  {s.last_index:<8}  "
                f"{s.last_term:<9}  {s.term}{mark}"
            )
        if best is not me and best.recency() > me.recency():
            message = f"{best.source} has more recent data than {me.source}: repair that one"
            if not args.force:
                raise RepairError(message + " (or pass --force to repair this one anyway)")
            print(f"! {message}; going on because of --force")
        table = target.members()
        if table:
            recorded = ", ".join(f"{m.id} ({m.raft_address})" for m in table)
            print(f"  member table: {recorded}; afterwards {args.id} alone")
        commit = target.commit_index()
        print("What may be lost:")
        print(
            f"  - writes the old cluster committed beyond index {me.last_index}, this "
            "replica's last log entry (another survivor may hold them: see --compare)"
        )
        if me.last_index > me.applied:
            print(
                f"  - nothing logged here is dropped: entries {me.applied + 1}..{me.last_index}"
                f", logged but not applied (commit index last recorded: {commit}), will be "
                "committed by the new cluster even if the old one never committed them"
            )
        else:
            print("  - nothing logged here is dropped: every entry in its log is applied")
        print(
            "Afterwards the replica starts as a cluster of one, ignoring its configured "
            "peers; the other old replicas must never start again with their old data."
        )
        if not args.yes and not _confirmed(me.source):
            print("aborted: nothing changed")
            return 1
        header = target.make_single(args.id)
    finally:
        target.close()
    print(
        f"done: {me.source} is a single-replica cluster at revision {header['revision']} "
        f"(Raft index {header['raft_index']}). Start it, then add new replicas with "
        "regraft member add."
    )
    return 0


def _confirmed(path: str) -> bool:
    try:
        answer = input(f'Type "yes" to make {path} a single-replica cluster: ')
    except EOFError:
        print()
        return False
    return answer.strip() == "yes"
