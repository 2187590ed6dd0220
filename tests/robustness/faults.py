"""Fault injectors: each breaks something in `inject` and repairs it in `heal`.

They act on harness replicas (tests/cluster/harness.py) by PID and on the proxies of
tests/robustness/proxy.py; none touches product code.
"""

import contextlib
import os
import random
import time

import grpc

from tests.cluster.harness import LocalCluster
from tests.cluster.test_durability import drop_unsynced
from tests.robustness.proxy import Network


class Fault:
    name = "fault"

    def __init__(self, cluster: LocalCluster, network: Network | None, rng: random.Random):
        self.cluster = cluster
        self.network = network
        self.rng = rng
        self.detail = ""

    def inject(self) -> None:
        raise NotImplementedError

    def heal(self) -> None:
        raise NotImplementedError

    def _target(self, role: str):
        if role == "leader":
            return self.cluster.wait_for_leader()
        return self.rng.choice(self.cluster.replicas)


class Kill(Fault):
    """kill -9 a replica (the leader or any), restart it at heal."""

    def __init__(self, *args, role: str = "leader") -> None:
        super().__init__(*args)
        self.role = role
        self.name = f"kill-{role}"

    def inject(self) -> None:
        self.victim = self._target(self.role)
        self.detail = self.victim.id
        self.victim.kill()

    def heal(self) -> None:
        self.victim.start()


class Pause(Fault):
    """SIGSTOP the leader; SIGCONT at heal. It resumes believing it leads: its
    linearizable reads must not answer from its stale state."""

    name = "pause-leader"

    def inject(self) -> None:
        self.victim = self._target("leader")
        self.detail = self.victim.id
        self.victim.pause()

    def heal(self) -> None:
        self.victim.resume()


class Partition(Fault):
    """Cut the leader's Raft links (both directions) to the other replicas."""

    name = "partition-leader"

    def inject(self) -> None:
        leader = self._target("leader")
        self.detail = leader.id
        others = {r.id for r in self.cluster.replicas} - {leader.id}
        self.network.partition({leader.id}, others)

    def heal(self) -> None:
        self.network.heal()


class Degrade(Fault):
    """Every Raft link delays traffic (tens of ms, jittered) and drops its connection
    now and then."""

    name = "slow-flaky-network"

    def inject(self) -> None:
        self.network.degrade(self.rng, delay=0.08, jitter=0.04, resets=0.002)
        self.detail = "delay<=120ms, resets 0.2%/chunk"

    def heal(self) -> None:
        self.network.heal()


class RestartAll(Fault):
    """kill -9 every replica at once; restart them all at heal."""

    name = "restart-all"

    def inject(self) -> None:
        for replica in self.cluster.replicas:
            replica.kill()

    def heal(self) -> None:
        for replica in self.cluster.replicas:
            replica.start()


class PowerLoss(RestartAll):
    """Every replica loses what it wrote but did not fsync (the cluster must run with
    REGRAFT_TRACE_SYNCED=1), as when the power goes off everywhere at once."""

    name = "power-loss"

    def inject(self) -> None:
        super().inject()
        dropped = [drop_unsynced(replica) for replica in self.cluster.replicas]
        self.detail = f"dropped unsynced journal bytes {dropped}"


class DiskFull(Fault):
    """Fill every replica's data directory (each its own small tmpfs) to the last byte;
    heal deletes the ballast."""

    name = "disk-full"
    LIMIT = 1 << 30  # refuse to fill anything larger: it is not a test filesystem

    def inject(self) -> None:
        self.ballast = []
        for replica in self.cluster.replicas:
            stats = os.statvfs(replica.config.data_dir)
            if stats.f_blocks * stats.f_frsize > self.LIMIT:
                raise RuntimeError(f"{replica.config.data_dir} is not a small test filesystem")
            path = os.path.join(replica.config.data_dir, "ballast")
            self.ballast.append(path)
            with contextlib.suppress(OSError), open(path, "wb") as f:
                while True:
                    f.write(bytes(1 << 16))
                    f.flush()
        self.detail = "all replicas"

    def heal(self) -> None:
        for path in self.ballast:
            os.remove(path)


FAULTS = {
    "kill-leader": lambda *a: Kill(*a, role="leader"),
    "kill-any": lambda *a: Kill(*a, role="any"),
    "pause-leader": Pause,
    "partition-leader": Partition,
    "slow-flaky-network": Degrade,
    "restart-all": RestartAll,
    "power-loss": PowerLoss,
    "disk-full": DiskFull,
}


def wait_writable(cluster: LocalCluster, probe: str, bound: float) -> float:
    """Seconds until a write through any replica is acknowledged; fails after `bound`."""
    started = time.monotonic()
    with cluster.client(timeout=2.0, attempt_timeout=1.0) as client:
        while True:
            try:
                client.link_blob("rb/probe", probe, 1)
                return time.monotonic() - started
            except grpc.RpcError as error:
                if time.monotonic() - started > bound:
                    raise AssertionError(f"no write accepted {bound}s after healing") from error
                time.sleep(0.05)
