import pytest

from tests.cluster.harness import LocalCluster


@pytest.fixture
def cluster(tmp_path):
    """Three running replicas; stopped (by PID) whatever the test does."""
    local = LocalCluster(str(tmp_path))
    try:
        local.start()
        local.wait_for_leader()
        local.wait_seeded()
        yield local
    finally:
        local.stop()


@pytest.fixture
def make_cluster(tmp_path):
    """A factory for clusters with other settings; every one is stopped afterwards."""
    made = []

    def make(size: int = 3, env: dict | None = None, start: bool = True, **settings):
        local = LocalCluster(str(tmp_path / f"c{len(made)}"), size, env, **settings)
        made.append(local)
        if start:
            local.start()
            local.wait_for_leader()
            local.wait_seeded()
        return local

    try:
        yield make
    finally:
        for local in made:
            local.stop()
