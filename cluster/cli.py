"""`regraft`: run a replica, a local cluster, and look at a running one.

regraft serve --config r1.toml          one replica (or all settings as flags)
regraft up                              a local 3-replica cluster on loopback
regraft status --endpoints A,B,C        the cluster as a table (--json too)
regraft bench --endpoints A,B,C         throughput and latency of a running cluster
"""

import argparse
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import grpc

from cluster import config as config_module
from cluster.config import ConfigError, Peer, ReplicaConfig

DEFAULT_ENDPOINTS = "127.0.0.1:7401,127.0.0.1:7402,127.0.0.1:7403"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="regraft", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _serve_parser(commands)
    _up_parser(commands)
    _status_parser(commands)
    _bench_parser(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as e:
        print(f"regraft {args.command}: {e}", file=sys.stderr)
        return 2
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
    p.add_argument("--metrics-address", help="host:port for /metrics, /livez, /readyz")
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="ID=RAFT,GRPC",
        help="another replica: id=raft_host:port,grpc_host:port (repeat per peer)",
    )
    p.add_argument("--secret-file", help="file holding the cluster secret")
    p.add_argument("--insecure", action="store_true", help="no secret: loopback-only test clusters")
    p.add_argument("--snapshot-entries", type=int, help="snapshot after this many entries")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    p.set_defaults(run=_serve)


def _serve(args) -> int:
    config = config_module.load(args.config) if args.config else ReplicaConfig()
    overrides = {
        "id": args.id,
        "data_dir": args.data_dir,
        "raft_address": args.raft_address,
        "grpc_address": args.grpc_address,
        "metrics_address": args.metrics_address,
        "secret_file": args.secret_file,
        "snapshot_entries": args.snapshot_entries,
        "log_level": args.log_level,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    if args.insecure:
        config.insecure = True
    if args.peer:
        config.peers = [config_module.parse_peer(p) for p in args.peer]
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s {config.id or '-'} %(levelname)s %(name)s: %(message)s",
    )
    from cluster.replica import Replica  # heavy imports only when serving

    replica = Replica(config)
    signal.signal(signal.SIGTERM, lambda *_: replica.stop())
    signal.signal(signal.SIGINT, lambda *_: replica.stop())
    replica.start()
    failure = replica.wait()
    replica.stop()
    if failure:
        print(f"regraft: replica {config.id} stopped: {failure}", file=sys.stderr)
        return 1
    return 0


# -- up -------------------------------------------------------------------------------


def _up_parser(commands) -> None:
    p = commands.add_parser("up", help="run a local 3-replica cluster until Ctrl-C")
    p.add_argument("--data-dir", default="regraft-data", help="where replicas keep data")
    p.add_argument(
        "--base-port",
        type=int,
        default=7400,
        help="gRPC on base+1.., Raft on base+11.., metrics on base+21..",
    )
    p.add_argument("--replicas", type=int, default=3)
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


def _up(args) -> int:
    if args.replicas < 1:
        raise ConfigError(f"--replicas must be at least 1, got {args.replicas}")
    configs = local_cluster_configs(args.data_dir, args.base_port, args.replicas)
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
            path = os.path.join(os.path.dirname(config.data_dir), f"{config.id}.toml")
            with open(path, "w") as f:
                f.write(config_module.dump(config))
            log = open(os.path.join(os.path.dirname(config.data_dir), f"{config.id}.log"), "ab")  # noqa: SIM115
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "cluster.cli", "serve", "--config", path],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
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
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        dead = [c.id for c, p in zip(configs, processes, strict=True) if p.poll() is not None]
        print(f"regraft: replica {', '.join(dead)} exited; see its log. Stopping.")
        return 1
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
    p.set_defaults(run=_status)


def _status(args) -> int:
    from google.protobuf.json_format import MessageToDict

    from cluster.client import Client

    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    rows = []
    with Client(endpoints) as client:
        for endpoint in endpoints:
            try:
                rows.append((endpoint, client.status(endpoint, timeout=args.timeout), None))
            except grpc.RpcError as e:
                rows.append((endpoint, None, e.details() or e.code().name))
    if args.json:
        print(
            json.dumps(
                [
                    {"endpoint": endpoint, "error": error}
                    if status is None
                    else {
                        "endpoint": endpoint,
                        **MessageToDict(status, always_print_fields_with_no_presence=True),
                    }
                    for endpoint, status, error in rows
                ],
                indent=2,
            )
        )
    else:
        print(_status_table(rows))
    problems = status_problems(rows)
    if not args.json:
        for problem in problems:
            print(f"! {problem}")
        if not problems:
            print("healthy: one leader, every replica reachable and caught up")
    return 1 if problems else 0


def _status_table(rows) -> str:
    header = ["ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "REVISION", "HASH"]
    lines = [header]
    for endpoint, status, error in rows:
        if status is None:
            lines.append([endpoint, "-", f"unreachable: {error}", "", "", "", "", "", ""])
            continue
        lines.append(
            [
                endpoint,
                status.id,
                _role_name(status.role),
                str(status.term),
                status.leader_id or "-",
                str(status.commit_index),
                str(status.applied_index),
                str(status.revision),
                status.state_hash[:12],
            ]
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines
    )


def _role_name(role: int) -> str:
    from regraft.v1 import cluster_pb2

    return cluster_pb2.Role.Name(role).lower()


def status_problems(rows) -> list[str]:
    """What an operator should know, in words."""
    problems = []
    live = [(e, s) for e, s, _ in rows if s is not None]
    for endpoint, status, error in rows:
        if status is None:
            problems.append(f"{endpoint} is unreachable ({error})")
    leaders = {s.leader_id for _, s in live if s.leader_id}
    if not leaders:
        problems.append("no leader: writes and linearizable reads are unavailable")
    elif len(leaders) > 1:
        problems.append(f"replicas disagree on the leader: {sorted(leaders)}")
    for _, status in live:
        if status.role == 3:
            for member in status.members:
                if not member.reachable:
                    problems.append(f"leader cannot reach {member.id} ({member.raft_address})")
                elif member.lag > 1000:
                    problems.append(f"{member.id} is {member.lag} entries behind the leader")
    return problems


# -- bench ----------------------------------------------------------------------------


def _bench_parser(commands) -> None:
    p = commands.add_parser("bench", help="measure a running cluster")
    p.add_argument("--endpoints", default=DEFAULT_ENDPOINTS)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--concurrency", default="1,64", help="comma-separated caller counts")
    p.add_argument(
        "--ops",
        default="write,read-stale,read-linearizable",
        help="comma-separated: write, read-stale, read-linearizable",
    )
    p.add_argument("--processes", type=int, default=2, help="load generator processes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_bench)


def _bench(args) -> int:
    from cluster import bench

    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    results = []
    for op in args.ops.split(","):
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            result = bench.run(endpoints, op.strip(), concurrency, args.duration, args.processes)
            results.append(result)
            if not args.json:
                print(bench.format_result(result), flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
