"""Real replica processes on loopback, for tests that are about the cluster.

Ports are chosen free at run time; every process is started by the harness and
stopped by it, by PID, even when a test fails.
"""

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import grpc

from cluster import config as config_module
from cluster.client import STALE, Client, Credentials
from cluster.config import Peer, ReplicaConfig
from regraft.v1 import cluster_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = map(int, f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def regraft(*args: str, stdin: str = "", timeout: float = 300.0) -> subprocess.CompletedProcess:
    """The CLI as an operator runs it, to its exit."""
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def with_open_files(command: list[str], soft: int, hard: int) -> list[str]:
    """`command` run under these open-files limits: the shell sets them and becomes the
    command (same PID), since setting them in a forked pytest (preexec_fn) may deadlock."""
    limits = f"ulimit -S -n {soft} && ulimit -H -n {hard}"
    return ["sh", "-c", f'{limits} && exec "$0" "$@"', *command]


def closed_by_peer(connection: socket.socket, within: float) -> bool:
    """Whether the other end closes (or resets) the connection within `within` seconds."""
    connection.settimeout(within)
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def free_port(above: int = 0) -> int:
    """A loopback port that is free now and was not handed out before in this run.

    Chosen outside the kernel's ephemeral range: a port from bind(0) can be handed
    out twice in a row, or taken as the source port of some outgoing connection
    (even a self-connection to the very port) before the replica binds it.
    With `above`: one of the lowest free ports greater than it (for an address that
    must compare greater than others; the lowest, so that many such fit in the range).
    """
    low, high = _ephemeral_range()
    outside = [*range(10000, low), *range(high + 1, 65536)] or list(range(1024, 65536))
    candidates = range(10000, low) if low > 11000 else outside
    if above:
        candidates = [p for p in outside if p > above][:200]
        if not candidates:
            raise RuntimeError(f"no loopback port above {above} outside the ephemeral range")
    rng = random.Random()
    for _ in range(1000):
        port = rng.choice(candidates)
        if port in _handed_out or not _bindable(port):
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {candidates}")


def free_port_block(size: int) -> int:
    """A base port whose next `size` ports are free now and were not handed out before
    (`regraft up --base-port` uses ports above its base), below the ephemeral range."""
    low, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(1000):
        base = rng.randrange(10000, max(10001, low - size - 1))
        block = range(base + 1, base + size + 1)
        if any(p in _handed_out for p in block) or not all(_bindable(p) for p in block):
            continue
        _handed_out.update(block)
        return base
    raise RuntimeError(f"no {size} free loopback ports in a row below {low}")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class ReplicaProcess:
    def __init__(self, config: ReplicaConfig, directory: str, env: dict[str, str]) -> None:
        self.config = config
        self.id = config.id
        self.endpoint = config.grpc_address
        self._config_path = os.path.join(directory, f"{config.id}.toml")
        self._log_path = os.path.join(directory, f"{config.id}.log")
        self.env = env  # of the next start
        self.open_files: int | None = None  # its RLIMIT_NOFILE (soft and hard), if set
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self._config_path, "w") as f:
            f.write(config_module.dump(self.config))
        with open(self._log_path, "ab") as log:
            command = [sys.executable, "-m", "cluster.cli", "serve", "--config", self._config_path]
            self.process = subprocess.Popen(
                with_open_files(command, self.open_files, self.open_files)
                if self.open_files
                else command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=self.env,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.running:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        self.ask_to_stop()
        self.wait_stopped(timeout)

    def ask_to_stop(self) -> None:
        """SIGTERM (resumed first, if it was paused)."""
        if self.running:
            os.kill(self.process.pid, signal.SIGCONT)
            os.kill(self.process.pid, signal.SIGTERM)

    def wait_stopped(self, timeout: float = 15.0) -> None:
        """Wait for it to exit after ask_to_stop; SIGKILL past `timeout` seconds."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def wipe(self) -> None:
        """Lose the disk: the data directory is gone."""
        assert not self.running
        shutil.rmtree(self.config.data_dir)

    def log(self) -> str:
        with open(self._log_path, errors="replace") as f:
            return f.read()

    def describe(self, lines: int = 15) -> str:
        """Whether it runs and the end of its log: what a failing test should print."""
        if self.process is None:
            return f"--- {self.id} (not started)"
        state = "running" if self.running else f"exited with {self.process.returncode}"
        tail = "\n    ".join(self.log().splitlines()[-lines:])
        return f"--- {self.id} ({state}), log ends:\n    {tail}"


class LocalCluster:
    def __init__(self, directory: str, size: int = 3, env: dict | None = None, **settings):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        secret_file = os.path.join(directory, "cluster.secret")
        with open(secret_file, "w") as f:
            f.write("test-secret-" + os.urandom(12).hex())
        peers = [
            Peer(f"r{i}", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
            for i in range(1, size + 1)
        ]
        environment = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
        self._env = environment
        self.replicas = []
        for me in peers:
            config = ReplicaConfig(
                id=me.id,
                data_dir=os.path.join(directory, me.id),
                raft_address=me.raft_address,
                grpc_address=me.grpc_address,
                metrics_address=f"127.0.0.1:{free_port()}",
                secret_file=secret_file,
                peers=[p for p in peers if p is not me],
                log_level="INFO",
            )
            config = replace(config, **settings)
            self.replicas.append(ReplicaProcess(config, directory, environment))
        # Replicas removed from the membership (retire()): stopped with the rest.
        self.retired: list[ReplicaProcess] = []
        # Called by new_member() with each replica it makes, before anyone learns its
        # addresses: e.g. to route its Raft links through proxies, or mount its disk.
        self.on_new_member: Callable[[ReplicaProcess], None] | None = None
        # How the harness's own calls reach a cluster that requires TLS or a caller.
        self.credentials: Credentials | None = None

    @property
    def endpoints(self) -> list[str]:
        """The gRPC endpoints of the members (replicas, retired ones excluded)."""
        return [r.endpoint for r in self.replicas]

    def start(self) -> None:
        for replica in self.replicas:
            replica.start()

    def stop(self) -> None:
        """Stop every replica, all at once (each drains its calls for up to 2 s)."""
        everyone = [*self.replicas, *self.retired]
        for replica in everyone:
            replica.ask_to_stop()
        for replica in everyone:
            replica.wait_stopped()

    def retire(self, replica: ReplicaProcess) -> None:
        """A replica removed from the membership: no longer among `replicas`."""
        self.replicas.remove(replica)
        self.retired.append(replica)

    def new_member(self, member_id: str, **settings) -> ReplicaProcess:
        """A replica that is not started and not yet a member: for `member add` then `--join`.

        Its peers are the members configured so far; stop() stops it with the rest.
        """
        config = replace(
            self.replicas[0].config,
            id=member_id,
            data_dir=os.path.join(self.directory, member_id),
            raft_address=f"127.0.0.1:{free_port()}",
            grpc_address=f"127.0.0.1:{free_port()}",
            metrics_address=f"127.0.0.1:{free_port()}",
            peers=[Peer(r.id, r.config.raft_address, r.endpoint) for r in self.replicas],
            join=True,
        )
        replica = ReplicaProcess(replace(config, **settings), self.directory, self._env)
        if self.on_new_member is not None:
            self.on_new_member(replica)
        self.replicas.append(replica)
        return replica

    def client(self, replicas: list[ReplicaProcess] | None = None, **options) -> Client:
        endpoints = [r.endpoint for r in replicas] if replicas else self.endpoints
        return Client(endpoints, **{"credentials": self.credentials, **options})

    def status(self, replica: ReplicaProcess, timeout: float = 2.0):
        with Client([replica.endpoint], credentials=self.credentials) as client:
            return client.status(replica.endpoint, timeout=timeout)

    def wait_for_leader(self, among=None, timeout: float = 30.0) -> ReplicaProcess:
        """The replica all live members agree leads; fails after `timeout`."""
        among = among or [r for r in self.replicas if r.running]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = set()
            for replica in among:
                try:
                    leaders.add(self.status(replica, timeout=1.0).leader_id)
                except grpc.RpcError:
                    leaders.add(None)
            if len(leaders) == 1 and leaders <= {r.id for r in among}:
                (leader_id,) = leaders
                return next(r for r in among if r.id == leader_id)
            time.sleep(0.1)
        raise AssertionError(
            f"no agreed leader among {[r.id for r in among]} in {timeout}s\n"
            + "\n".join(r.describe() for r in among)
        )

    def wait_seeded(self, timeout: float = 30.0) -> None:
        """Until the first leader has recorded the members (the first entry that changes
        state) and every running replica applied it: later state hashes then agree. And
        until the leader's status (a copy up to 0.2 s old) shows every member reachable:
        a membership change is refused as unhealthy before (seen once in a full run)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                running = [self.status(r) for r in self.replicas if r.running]
                leaders = [s for s in running if s.role == cluster_pb2.LEADER]
                if (
                    all(s.revision > 0 for s in running)
                    and leaders
                    and all(m.reachable for m in leaders[0].members)
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the member table was not recorded within {timeout}s")

    def wait_converged(self, replicas=None, timeout: float = 60.0) -> str:
        """Wait until the replicas report one revision and one state hash; returns it."""
        replicas = replicas or [r for r in self.replicas if r.running]
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            try:
                seen = {(s.revision, s.state_hash) for s in map(self.status, replicas)}
            except grpc.RpcError:
                seen = None
            if seen and len(seen) == 1:
                return seen.pop()[1]
            time.sleep(0.2)
        raise AssertionError(f"replicas did not converge in {timeout}s: {seen}")

    def tag_on(self, replica: ReplicaProcess, repository: str, tag: str, min_revision: int):
        """The digest a tag has on one replica once it applied min_revision (STALE read)."""
        with Client([replica.endpoint], timeout=30.0, credentials=self.credentials) as client:
            return client.get_manifest(
                repository, tag, consistency=STALE, min_revision=min_revision
            ).digest

    def metric(self, replica: ReplicaProcess, name: str, **labels: str) -> float:
        """The sum of a metric's samples on one replica's /metrics, of those that carry
        `labels` (among others)."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://{replica.config.metrics_address}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )


def image(seed: str) -> tuple[list[tuple[str, int]], bytes]:
    """Blobs (digest, size) and the OCI manifest that references them, unique per seed."""
    import hashlib
    import json

    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = f"layer of {seed}".encode()
    blobs = [("sha256:" + hashlib.sha256(b).hexdigest(), len(b)) for b in (config, layer)]
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": blobs[0][0],
            "size": blobs[0][1],
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": blobs[1][0],
                "size": blobs[1][1],
            }
        ],
    }
    return blobs, json.dumps(manifest).encode()


def push(client: Client, repository: str, tag: str, seed: str):
    """Link an image's blobs and put its manifest under `tag`; the PutManifest answer."""
    blobs, manifest = image(seed)
    for digest, size in blobs:
        client.link_blob(repository, digest, size)
    return client.put_manifest(repository, tag, manifest)
