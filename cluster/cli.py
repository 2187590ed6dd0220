"""`regraft`: run a replica, a local cluster, and look at a running one.

regraft serve --config r1.toml          one replica (or all settings as flags)
regraft up                              a local 3-replica cluster on loopback
regraft status --endpoints A,B,C        the cluster as a table (--json too)
regraft bench --endpoints A,B,C         throughput and latency of a running cluster
regraft backup | restore | emergency-repair   see cluster/cli_recovery.py
regraft member | leader                 membership: see cluster/cli_members.py
regraft call METHOD JSON                any API method, e.g. CreateUser: cluster/cli_call.py
regraft certs init | issue              certificates for mutual TLS: cluster/cli_certs.py
"""

import argparse
import glob
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from cluster import grpc_core  # noqa: F401  # isort: skip  (before grpcio is imported)
import grpc

from cluster import allocator, cli_auth, cli_call, cli_certs, cli_members, cli_recovery
from cluster import config as config_module
from cluster.client import CredentialError, Credentials
from cluster.config import DEFAULT_ENDPOINTS, ConfigError, Peer, ReplicaConfig
from cluster.service_cluster import VERSION
from cluster.tables import text_table
from storage import db, snapshot, versions
from storage.db import FormatError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="regraft", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--version",
        action="version",
        version=f"regraft {VERSION} (machine versions up to {versions.LATEST}, data format "
        f"{db.FORMAT_VERSION}, backup and snapshot files {snapshot.FORMAT_VERSION})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _serve_parser(commands)
    _up_parser(commands)
    _status_parser(commands)
    _bench_parser(commands)
    cli_recovery.add_parsers(commands)
    cli_members.add_parsers(commands)
    cli_auth.add_parsers(commands)
    cli_certs.add_parsers(commands)
    cli_call.add_parsers(commands)
    args = parser.parse_args(argv)
    name = " ".join(filter(None, ["regraft", args.command, getattr(args, "action", None)]))
    try:
        return args.run(args)
    except (ConfigError, FormatError, CredentialError) as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    except grpc.RpcError as e:  # the cluster refused or could not be reached
        # The code first: the README and the API document errors by it.
        print(f"{name}: {e.code().name}: {e.details() or 'no details'}", file=sys.stderr)
        if cli_auth.not_reached(e):
            print(f"{name}: {cli_auth.NOT_REACHED_HINT}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `regraft audit log | head`: the reader is gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130


# -- serve ----------------------------------------------------------------------------


def _serve_parser(commands) -> None:
    p = commands.add_parser("serve", help="run one replica")
    p.add_argument("--config", help="TOML configuration file; flags override it")
    p.add_argument("--id")
    p.add_argument("--data-dir")
    p.add_argument("--raft-address", help="host:port of the Raft peer port")
    p.add_argument("--grpc-address", help="host:port of the gRPC API")
    p.add_argument(
        "--advertise-grpc-address",
        help="host:port the others reach the API at, if not --grpc-address (0.0.0.0:7401)",
    )
    p.add_argument("--metrics-address", help="host:port for /metrics, /livez, /readyz")
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="ID=RAFT,GRPC",
        help="another replica: id=raft_host:port,grpc_host:port (repeat per peer)",
    )
    p.add_argument("--secret-file", help="file holding the cluster secret")
    p.add_argument("--tls-cert-file", help="the gRPC API's certificate (PEM): TLS on")
    p.add_argument("--tls-key-file", help="its private key (PEM)")
    p.add_argument(
        "--tls-client-ca-file", help="CA of client certificates: every caller needs one (mTLS)"
    )
    p.add_argument("--tls-ca-file", help="CA that verifies the other replicas' certificates")
    p.add_argument("--callers-file", help="identities and roles: authorization on (TOML)")
    p.add_argument("--insecure", action="store_true", help="no secret: loopback-only test clusters")
    p.add_argument("--snapshot-entries", type=int, help="snapshot after this many entries")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument(
        "--join",
        action="store_true",
        help="a new member added with `regraft member add`: start as a learner",
    )
    p.set_defaults(run=_serve)


def _serve(args) -> int:
    config = config_module.load(args.config) if args.config else ReplicaConfig()
    overrides = {
        "id": args.id,
        "data_dir": args.data_dir,
        "raft_address": args.raft_address,
        "grpc_address": args.grpc_address,
        "advertise_grpc_address": args.advertise_grpc_address,
        "metrics_address": args.metrics_address,
        "secret_file": args.secret_file,
        "tls_cert_file": args.tls_cert_file,
        "tls_key_file": args.tls_key_file,
        "tls_client_ca_file": args.tls_client_ca_file,
        "tls_ca_file": args.tls_ca_file,
        "callers_file": args.callers_file,
        "snapshot_entries": args.snapshot_entries,
        "log_level": args.log_level,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    if args.insecure:
        config.insecure = True
    if args.join:
        config.join = True
    if args.peer:
        config.peers = [config_module.parse_peer(p) for p in args.peer]
    config.validate()
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s {config.id or '-'} %(levelname)s %(name)s: %(message)s",
    )
    allocator.one_arena()  # before any thread of the replica's starts
    for warning in config.warnings():
        logging.getLogger("regraft").warning("%s", warning)
    from cluster.replica import Replica  # heavy imports only when serving

    terminated = threading.Event()
    running: list[Replica] = []

    def terminate(*_) -> None:
        terminated.set()
        for replica in running:
            replica.request_stop()

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    # A learner that was promoted restarts here, as a voter, in the same process.
    while not terminated.is_set():
        running[:] = [Replica(config)]
        replica = running[0]
        replica.start()
        if terminated.is_set():
            replica.request_stop()
        ending = replica.wait()
        replica.stop()
        if ending is None:
            break
        print(f"regraft: replica {config.id}: {ending.message}", file=sys.stderr)
        if not ending.restart:
            return ending.exit_code
    return 0


# -- up -------------------------------------------------------------------------------


def _up_parser(commands) -> None:
    p = commands.add_parser("up", help="run a local 3-replica cluster until Ctrl-C")
    p.add_argument(
        "--data-dir", default="regraft-data", help="where replicas keep data (default: %(default)s)"
    )
    p.add_argument(
        "--base-port",
        type=int,
        default=7400,
        help="gRPC on base+1.., Raft on base+11.., metrics on base+21.. (default: %(default)s)",
    )
    p.add_argument(
        "--replicas",
        type=int,
        default=3,
        help=f"how many voters, 1 to {UP_MAX_REPLICAS} (default: %(default)s)",
    )
    p.set_defaults(run=_up)


def local_cluster_configs(data_dir: str, base_port: int, replicas: int) -> list[ReplicaConfig]:
    """Configurations of a loopback cluster, with a fresh secret on first use."""
    data_dir = os.path.abspath(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    secret_file = os.path.join(data_dir, "cluster.secret")
    if not os.path.exists(secret_file):
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(16) + "\n")
    peers = [
        Peer(
            f"r{i}",
            f"127.0.0.1:{base_port + 10 + i}",
            f"127.0.0.1:{base_port + i}",
        )
        for i in range(1, replicas + 1)
    ]
    return [
        ReplicaConfig(
            id=me.id,
            data_dir=os.path.join(data_dir, me.id),
            raft_address=me.raft_address,
            grpc_address=me.grpc_address,
            metrics_address=f"127.0.0.1:{base_port + 20 + i}",
            secret_file=secret_file,
            peers=[p for p in peers if p is not me],
        )
        for i, me in enumerate(peers, start=1)
    ]


# `up` gives replica N the ports base+N, base+10+N and base+20+N.
UP_MAX_REPLICAS = 9


def _up(args) -> int:
    if not 1 <= args.replicas <= UP_MAX_REPLICAS:
        raise ConfigError(
            f"--replicas must be between 1 and {UP_MAX_REPLICAS}, got {args.replicas} (replica "
            "N listens on --base-port + N, + 10 + N and + 20 + N)"
        )
    highest = args.base_port + 20 + args.replicas
    if args.base_port < 1 or highest > 65535:
        raise ConfigError(
            f"--base-port {args.base_port} with {args.replicas} replicas would use ports "
            f"{args.base_port + 1} to {highest}: ports go from 1 to 65535"
        )
    configs = local_cluster_configs(args.data_dir, args.base_port, args.replicas)
    _check_same_layout(os.path.abspath(args.data_dir), configs)
    # Stop the replicas on SIGTERM and SIGHUP too, and on SIGINT even when the shell
    # that started us in the background ignores it.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    for config in configs:
        for address in (config.grpc_address, config.raft_address, config.metrics_address):
            _check_free(address)
    processes = []
    try:
        for config in configs:
            processes.append(_start_local(config))
        endpoints = ",".join(c.grpc_address for c in configs)
        print(f"regraft: {len(configs)} replicas under {os.path.abspath(args.data_dir)}")
        for config, process in zip(configs, processes, strict=True):
            print(
                f"  {config.id}  pid {process.pid}  gRPC {config.grpc_address}  "
                f"Raft {config.raft_address}  metrics http://{config.metrics_address}/metrics"
            )
        print(f"  logs: {os.path.abspath(args.data_dir)}/r*.log")
        leader = _wait_for_leader(endpoints.split(","), processes, timeout=30.0)
        print(f"leader: {leader}. Try: regraft status --endpoints {endpoints}")
        print("Ctrl-C stops the cluster.", flush=True)
        return _supervise(configs, processes)
    except KeyboardInterrupt:
        print("\nregraft: stopping replicas...")
        return 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# A replica killed by a signal is started again, at most this often in a minute.
UP_RESTARTS_PER_MINUTE = 5


def _start_local(config: ReplicaConfig) -> subprocess.Popen:
    """Start one replica of `regraft up`, its config and log beside its data directory."""
    directory = os.path.dirname(config.data_dir)
    path = os.path.join(directory, f"{config.id}.toml")
    with open(path, "w") as f:
        f.write(config_module.dump(config))
    # The replicas run this very code: `python -m` would put the current directory
    # first on their path, and a checkout of another release there would run instead.
    code = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [code, os.environ.get("PYTHONPATH")])),
    }
    with open(os.path.join(directory, f"{config.id}.log"), "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-P", "-m", "cluster.cli", "serve", "--config", path],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _supervise(configs: list[ReplicaConfig], processes: list[subprocess.Popen]) -> int:
    """Watch the replicas until all have exited; `processes` is kept current.

    One removed with `regraft member remove`, or stopped with SIGTERM, exits with 0 and
    the rest go on. One killed by a signal (kill -9, the OOM killer) is started again,
    as systemd's Restart=on-failure would: the way to rehearse a failover. One that
    gave up by itself (a non-zero status; its log says why) stays down.
    """
    restarts: dict[str, list[float]] = {config.id: [] for config in configs}
    ended: set[str] = set()
    while len(ended) < len(configs):
        for i, config in enumerate(configs):
            code = processes[i].poll()
            if code is None or config.id in ended:
                continue
            now = time.monotonic()
            recent = [t for t in restarts[config.id] if now - t < 60.0]
            if code < 0 and len(recent) < UP_RESTARTS_PER_MINUTE:
                restarts[config.id] = [*recent, now]
                killed_pid = processes[i].pid
                processes[i] = _start_local(config)
                print(
                    f"regraft: replica {config.id} (pid {killed_pid}) was killed by "
                    f"{signal.Signals(-code).name}; started it again: pid {processes[i].pid}",
                    flush=True,
                )
                continue
            ended.add(config.id)
            if code == 0:
                print(f"regraft: replica {config.id} stopped (removed, or told to).", flush=True)
            else:
                print(
                    f"regraft: replica {config.id} exited with status {code} and stays "
                    f"down; its log says why ({os.path.dirname(config.data_dir)}/"
                    f"{config.id}.log). The others go on.",
                    flush=True,
                )
        time.sleep(0.5)
    return 0 if all(p.returncode == 0 for p in processes) else 1


def _check_same_layout(data_dir: str, configs: list[ReplicaConfig]) -> None:
    """A data directory `up` ran before takes the same ports and number of replicas:
    its replicas know each other by those addresses (their member table)."""
    before = {}
    for path in glob.glob(os.path.join(data_dir, "r*.toml")):
        config = config_module.load(path)
        before[config.id] = config
    now = {c.id: (c.grpc_address, c.raft_address) for c in configs}
    if not before or {i: (c.grpc_address, c.raft_address) for i, c in before.items()} == now:
        return
    first = before[min(before, key=lambda i: (len(i), i))]
    _, port = config_module.split_address(first.grpc_address)
    number = first.id[1:]
    base = f" --base-port {port - int(number)}" if number.isdigit() else ""
    raise ConfigError(
        f"{data_dir} holds a cluster that regraft up started with {len(before)} replicas, "
        f"{first.id} on gRPC {first.grpc_address} ({base.strip()} --replicas {len(before)}): "
        "its replicas know each other by those addresses. Run it that way, or give another "
        "--data-dir"
    )


def _check_free(address: str) -> None:
    host, port = config_module.split_address(address)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            s.bind((host, port))
        except OSError:
            raise ConfigError(
                f"port {port} on {host} is in use (another regraft up?); "
                "choose other ports with --base-port"
            ) from None


def _wait_for_leader(endpoints: list[str], processes, timeout: float) -> str:
    from cluster.client import Client

    deadline = time.monotonic() + timeout
    with Client(endpoints) as client:
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in processes):
                return "none (a replica exited)"
            for endpoint in endpoints:
                try:
                    status = client.status(endpoint, timeout=1.0)
                except grpc.RpcError:
                    continue
                if status.leader_id:
                    return f"{status.leader_id} ({status.leader_grpc_address})"
            time.sleep(0.2)
    return "none yet"


# -- status ---------------------------------------------------------------------------


def _status_parser(commands) -> None:
    p = commands.add_parser("status", help="print the cluster as a table")
    p.add_argument("--endpoints", default=DEFAULT_ENDPOINTS, help="comma-separated gRPC")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=float, default=3.0)
    cli_auth.add_client_flags(p)
    p.set_defaults(run=_status)


def _status(args) -> int:
    endpoints = cli_auth.endpoint_list(args.endpoints)
    rows = query_members(endpoints, args.timeout, cli_auth.client_credentials(args))
    if args.json:
        print(
            json.dumps(
                [
                    {"endpoint": endpoint, "error": error}
                    if status is None
                    else {
                        "endpoint": endpoint,
                        **json.loads(cli_call.message_json(status)),
                    }
                    for endpoint, status, error in rows
                ],
                indent=2,
            )
        )
    else:
        print(status_table(rows))
    problems = status_problems(rows)
    if not args.json:
        for problem in problems:
            print(f"! {problem}")
        if not problems:
            print("healthy: one leader, every replica reachable and caught up")
    return 1 if problems else 0


# Entries a replica may be behind before it counts as lagging: the same bound as
# replica.READY_MAX_LAG and the RegraftReplicaLagging alert (deploy/prometheus).
LAG_LIMIT = 1000
# Share of the data directory's filesystem in use at which the disk is almost full,
# as for the RegraftDatabaseNearSizeLimit alert (tests/deploy checks they agree).
DISK_FULL_FRACTION = 0.9
_LEADER = 3  # cluster_pb2.LEADER


def query_members(
    endpoints: list[str], timeout: float, credentials: Credentials | None = None
) -> list[tuple]:
    """(endpoint, StatusResponse or None, error or None) of the endpoints and every
    member they name; a member reached under two addresses is listed once. Another
    replica with an id already seen (another cluster's: `regraft up` names every
    cluster's r1..rN) is listed too, and status_problems says so."""
    from cluster.client import Client

    rows, seen, tried, queued = [], {}, set(), list(endpoints)
    with Client(endpoints, credentials=credentials) as client:
        while queued:
            endpoint = queued.pop(0)
            if endpoint in tried:
                continue
            tried.add(endpoint)
            try:
                status = client.status(endpoint, timeout=timeout)
            except grpc.RpcError as e:
                rows.append((endpoint, None, e.details() or e.code().name))
                continue
            rows.append((endpoint, status, None))
            if status.id in seen:
                if seen[status.id] == own_raft_address(status):
                    rows.pop()  # the same replica under another address
                continue  # another replica: its members are not this cluster's
            seen[status.id] = own_raft_address(status)
            queued += [m.grpc_address for m in status.members if m.id not in seen]
    return rows


def own_raft_address(status) -> str:
    """A replica's Raft address as its Status says ("" when its table lacks it)."""
    return next((m.raft_address for m in status.members if m.is_self), "")


def _leader_view(rows):
    """The leader's StatusResponse, when a reachable replica is the leader."""
    return next((s for _, s, _ in rows if s is not None and s.role == _LEADER), None)


def status_table(rows) -> str:
    """One line per member; LAG and RAFT (link up or down) are the leader's view."""
    header = ["ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAG", "RAFT"]
    header += ["DISK", "HASH"]
    leader = _leader_view(rows)
    seen_by_leader = {m.id: m for m in leader.members} if leader else {}
    lines = [header]
    for endpoint, status, _error in rows:
        if status is None:
            # Why is said once, below the table (status_problems).
            lines.append([endpoint, "-", "unreachable", *[""] * (len(header) - 3)])
            continue
        member = seen_by_leader.get(status.id)
        if member is not None and own_raft_address(status) not in ("", member.raft_address):
            member = None  # another cluster's replica of that id
        if member is not None and cli_members.is_learner(member):
            lag, link = str(max(0, leader.commit_index - status.applied_index)), "-"
        elif member is not None:
            lag, link = str(member.lag), "up" if member.reachable else "down"
        else:
            lag, link = "-", "-"
        lines.append(
            [
                endpoint,
                status.id,
                _role_name(status.role, member),
                str(status.term),
                status.leader_id or "-",
                str(status.commit_index),
                str(status.applied_index),
                lag,
                link,
                f"{_disk_used(status):.0%}" if status.disk_total_bytes else "-",
                status.state_hash[:12],
            ]
        )
    return text_table(header, lines[1:])


def _role_name(role: int, member=None) -> str:
    """Raft's role, or the membership step of a member that is not a plain voter."""
    from regraft.v1 import cluster_pb2, record_pb2

    voter = record_pb2.MemberRecord.VOTER
    if member is not None and member.membership not in (voter, 0):
        return record_pb2.MemberRecord.Role.Name(member.membership).lower()
    return cluster_pb2.Role.Name(role).lower()


def _disk_used(status) -> float:
    return 1 - status.disk_free_bytes / status.disk_total_bytes


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB"


def status_problems(rows) -> list[str]:
    """What an operator should know, in words."""
    problems = []
    live = [s for _, s, _ in rows if s is not None]
    first: dict = {}  # id -> (endpoint, Raft address) of the first replica answering so
    for endpoint, status, error in rows:
        if status is None:
            problems.append(f"{endpoint} is unreachable ({error})")
        elif status.id in first:
            problems.append(
                f"two replicas answer as {status.id}: {first[status.id][0]} (Raft "
                f"{first[status.id][1] or '?'}) and {endpoint} (Raft "
                f"{own_raft_address(status) or '?'}); are the endpoints of one cluster?"
            )
        else:
            first[status.id] = (endpoint, own_raft_address(status))
    leaders = {s.leader_id for s in live if s.leader_id}
    if not leaders:
        problems.append("no leader: writes and linearizable reads are unavailable")
    elif len(leaders) > 1:
        problems.append(f"replicas disagree on the leader: {sorted(leaders)}")
    for status in live:
        if leaders and not status.leader_id:
            problems.append(
                f"{status.id} knows no leader while the others name {min(leaders)}: it "
                "does not hear it (a network problem?), and cannot serve writes or "
                "linearizable reads"
            )
    leader = _leader_view(rows)
    if len(leaders) == 1 and leader is None:
        problems.append(
            f"no reachable leader: the replicas name {min(leaders)}, which does not answer as "
            "leader; writes and linearizable reads fail until it does or another is elected"
        )
    if leader is not None:
        members = {m.id for m in leader.members}
        strangers = sorted({s.id for s in live} - members)
        if strangers:
            problems.append(
                f"not members of leader {leader.id}'s cluster: {', '.join(strangers)} "
                "(removed, or endpoints of another cluster)"
            )
        if not leader.has_quorum:
            problems.append(f"leader {leader.id} cannot reach a majority of the members")
        for member in leader.members:
            if member.is_self or cli_members.is_learner(member):  # its own row tells
                continue
            if not member.reachable:
                problems.append(
                    f"unreachable member: leader {leader.id} cannot reach "
                    f"{member.id} ({member.raft_address})"
                )
            elif member.lag > LAG_LIMIT:
                problems.append(f"lagging replica: {member.id} is {member.lag} entries behind")
    for status in live:
        unapplied = status.commit_index - status.applied_index
        if unapplied > LAG_LIMIT:
            problems.append(
                f"lagging replica: {status.id} has {unapplied} committed entries not applied"
            )
        if status.disk_total_bytes and _disk_used(status) >= DISK_FULL_FRACTION:
            problems.append(
                f"disk almost full on {status.id}: {_disk_used(status):.0%} of the "
                f"filesystem used, {_gib(status.disk_free_bytes)} left for the database "
                f"({_gib(status.db_used_bytes)} in use)"
            )
    return problems


# -- bench ----------------------------------------------------------------------------


def _bench_parser(commands) -> None:
    p = commands.add_parser("bench", help="measure a running cluster")
    p.add_argument("--endpoints", default=DEFAULT_ENDPOINTS)
    p.add_argument(
        "--duration", type=_positive(float), default=10.0, help="seconds per measurement"
    )
    p.add_argument(
        "--concurrency",
        type=_listed(_positive(int)),
        default="1,64",
        help="comma-separated caller counts",
    )
    p.add_argument(
        "--ops",
        type=_listed(str),
        default="write,read-stale,read-linearizable",
        help="comma-separated: write, read-stale, read-linearizable. Writes are PutTag "
        "calls of fresh tags in repository bench/app, which stay in the cluster",
    )
    p.add_argument("--processes", type=_positive(int), default=2, help="load generator processes")
    p.add_argument(
        "--target",
        choices=("regraft", "etcd"),
        default="regraft",
        help="etcd: the same load on an etcd cluster's gRPC endpoints, for comparison",
    )
    cli_auth.add_client_flags(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_bench)


def _positive(kind: type) -> Callable[[str], object]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} is not above 0")
        return value

    return parse


def _listed(item: Callable[[str], object]) -> Callable[[str], list]:
    """A comma-separated list, each item parsed by `item`."""

    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{text!r} names nothing")
        return [item(t) for t in items]

    return parse


def _bench(args) -> int:
    from cluster import bench

    endpoints = cli_auth.endpoint_list(args.endpoints)
    unknown = [op for op in args.ops if op not in bench.OPS]
    if unknown:
        raise ConfigError(f"--ops {', '.join(unknown)}: use {', '.join(bench.OPS)}")
    results = []
    for op in args.ops:
        for concurrency in args.concurrency:
            result = bench.run(
                endpoints,
                op,
                concurrency,
                args.duration,
                args.processes,
                cli_auth.client_credentials(args),
                args.target,
            )
            results.append(result)
            if not args.json:
                print(bench.format_result(result), flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
