"""grpcio's core runs the TCP path regraft was measured on (cluster/grpc_core.py): the
setting is in place before grpcio is imported, and the core knows its names."""

import os
import subprocess
import sys

from cluster import grpc_core

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Notes GRPC_EXPERIMENTS as grpcio is first imported, then serves a call's worth.
_FIRST_IMPORT = """
import builtins, os, sys
seen = []
real = builtins.__import__
def noting(name, *args, **kwargs):
    if name == "grpc" and "grpc" not in sys.modules and not seen:
        seen.append(os.environ.get("GRPC_EXPERIMENTS"))
    return real(name, *args, **kwargs)
builtins.__import__ = noting
import cluster.cli
builtins.__import__ = real
import concurrent.futures, grpc
server = grpc.server(concurrent.futures.ThreadPoolExecutor(1))
server.add_insecure_port("127.0.0.1:0")
server.start()
server.stop(None).wait()
print("at import:", seen)
"""


def _run(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _FIRST_IMPORT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_sets_the_experiments_before_grpcio_loads_and_the_core_knows_them():
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    done = _run(env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"at import: [{grpc_core.EXPERIMENTS!r}]" in done.stdout
    assert "Unknown experiment" not in done.stderr  # grpcio renamed or dropped one


def test_servers_and_clients_stay_on_the_event_engine():
    """On the epoll path one flooding connection kept a server from accepting others,
    and `regraft up`'s own client stalled (cluster/grpc_core.py, cluster/DESIGN.md,
    Session 19)."""
    switched_off = {name[1:] for name in grpc_core.EXPERIMENTS.split(",") if name[0] == "-"}
    assert not switched_off & {"event_engine_listener", "event_engine_client"}


def test_the_operators_own_setting_is_kept():
    done = _run({**os.environ, "GRPC_EXPERIMENTS": "-event_engine_client"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "at import: ['-event_engine_client']" in done.stdout
