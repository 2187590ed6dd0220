"""A replica that cannot start says why and exits, as a real `regraft serve` process."""

import os
import socket
import subprocess

import pytest

from storage import keys
from storage.db import FORMAT_VERSION, Store
from tests.cluster.harness import free_port, regraft


def serve(data_dir, **addresses) -> subprocess.CompletedProcess:
    """`regraft serve` of a single insecure replica, run to its exit."""
    ports = {name: f"127.0.0.1:{free_port()}" for name in ("raft", "grpc", "metrics")}
    ports.update(addresses)
    command = ["serve", "--id", "r1", "--data-dir", str(data_dir), "--insecure"]
    for name, address in ports.items():
        command += [f"--{name}-address", address]
    return regraft(*command, timeout=120)


def test_serve_refuses_a_data_dir_of_a_newer_format(tmp_path):
    data_dir = tmp_path / "r1"
    store = Store(str(data_dir / "state"))
    with store.env.begin(write=True) as txn:
        txn.put(b"format_version", keys.u64(FORMAT_VERSION + 1))
    store.close()
    finished = serve(data_dir)
    assert finished.returncode == 2, finished.stderr
    assert (
        f"regraft serve: data directory {data_dir / 'state'} has format version "
        f"{FORMAT_VERSION + 1}, newer than this regraft understands ({FORMAT_VERSION})"
    ) in finished.stderr
    assert "Traceback" not in finished.stderr
    # Nothing was started on it: no Raft journal was created.
    assert sorted(os.listdir(data_dir)) == ["LOCK", "state"]


@pytest.mark.parametrize("port", ["raft", "grpc", "metrics"])
def test_serve_exits_when_a_port_is_taken(tmp_path, port):
    """A replica whose port is in use must not run half-bound (unreachable but alive)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen(1)
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        finished = serve(tmp_path / "r1", **{port: address})
    assert finished.returncode == 2, finished.stderr
    assert f"regraft serve: cannot listen on {port}_address {address!r}" in finished.stderr
    assert "Traceback" not in finished.stderr
