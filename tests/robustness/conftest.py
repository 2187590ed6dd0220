import os
import subprocess

import pytest

from tests.cluster.conftest import make_cluster  # noqa: F401 (a fixture for test_faults)
from tests.cluster.harness import LocalCluster
from tests.robustness.proxy import Network


def unmount(path: str) -> None:
    """Unmount a test filesystem; lazily if something still holds it open."""
    if subprocess.run(["umount", path], check=False).returncode:
        subprocess.run(["umount", "-l", path], check=True)


@pytest.fixture
def proxied_cluster(tmp_path):
    """A factory: three replicas whose Raft links all go through test-controlled proxies.

    Every replica and every proxy is stopped afterwards, whatever the test does.
    """
    made = []
    mounts = []

    def make(env: dict | None = None, disk: str = "", **settings) -> tuple[LocalCluster, Network]:
        """`disk` (e.g. "32m"): each data directory on its own tmpfs of that size.

        Replicas added later (membership changes) are proxied and mounted alike.
        """
        # No snapshots, however long the run (README, limits): a replica installing one
        # would take its node list, which holds another replica's proxy addresses.
        settings = {"snapshot_entries": 10**9, "snapshot_seconds": 10.0**9, **settings}
        network = Network()
        local = LocalCluster(str(tmp_path / f"c{len(made)}"), 3, env, **settings)
        made.append((local, network))

        def mount(replica) -> None:
            os.makedirs(replica.config.data_dir)
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={disk}", "tmpfs", replica.config.data_dir],
                check=True,
            )
            mounts.append(replica.config.data_dir)

        def joining(replica) -> None:
            network.interpose_joining(replica)
            if disk:
                mount(replica)

        network.interpose(local.replicas)
        for replica in local.replicas if disk else []:
            mount(replica)
        local.on_new_member = joining
        local.start()
        local.wait_for_leader()
        return local, network

    try:
        yield make
    finally:
        for local, network in made:
            local.stop()
            network.close()
        for path in mounts:
            unmount(path)
