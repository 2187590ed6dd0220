"""A replica's open-files budget (cluster/openfiles.py)."""

import resource
import subprocess
import sys

import pytest

from cluster import openfiles
from cluster.config import ConfigError
from tests.cluster.harness import ROOT


def test_the_grpc_port_gets_what_the_rest_of_the_replica_leaves():
    assert openfiles.connection_cap(1024) == 1024 - openfiles.RESERVED
    assert openfiles.connection_cap(1 << 20) == openfiles.MAX_CONNECTIONS
    assert openfiles.connection_cap(resource.RLIM_INFINITY) == openfiles.MAX_CONNECTIONS
    least = openfiles.RESERVED + openfiles.MIN_CONNECTIONS
    assert openfiles.connection_cap(least) == openfiles.MIN_CONNECTIONS


def test_too_low_a_limit_is_refused_with_what_to_do():
    least = openfiles.RESERVED + openfiles.MIN_CONNECTIONS
    with pytest.raises(ConfigError) as refused:
        openfiles.connection_cap(least - 1)
    assert f"the open-files limit is {least - 1}: a replica needs at least {least}" in str(
        refused.value
    )
    assert "ulimit -n" in str(refused.value)


def test_the_soft_limit_is_raised_to_the_hard_one():
    """In a child process whose soft limit is half its hard one (2048 at most)."""
    code = (
        "import resource; from cluster import openfiles; "
        "print(openfiles.raise_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = 2048 if hard == resource.RLIM_INFINITY else min(2048, hard)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling // 2, ceiling))

    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        preexec_fn=lower,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == [str(ceiling), str(ceiling)]
