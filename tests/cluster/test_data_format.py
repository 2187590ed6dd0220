"""A replica refuses data written by a newer regraft, as a real `regraft serve` process."""

import os
import subprocess
import sys

from storage import keys
from storage.db import FORMAT_VERSION, Store
from tests.cluster.harness import ROOT, free_port


def test_serve_refuses_a_data_dir_of_a_newer_format(tmp_path):
    data_dir = tmp_path / "r1"
    store = Store(str(data_dir / "state"))
    with store.env.begin(write=True) as txn:
        txn.put(b"format_version", keys.u64(FORMAT_VERSION + 1))
    store.close()
    serve = [
        *("serve", "--id", "r1", "--data-dir", str(data_dir), "--insecure"),
        *("--raft-address", f"127.0.0.1:{free_port()}"),
        *("--grpc-address", f"127.0.0.1:{free_port()}"),
    ]
    finished = subprocess.run(
        [sys.executable, "-m", "cluster.cli", *serve],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 2, finished.stderr
    assert (
        f"regraft serve: data directory {data_dir / 'state'} has format version "
        f"{FORMAT_VERSION + 1}, newer than this regraft understands ({FORMAT_VERSION})"
    ) in finished.stderr
    assert "Traceback" not in finished.stderr
    # Nothing was started on it: no Raft journal was created.
    assert sorted(os.listdir(data_dir)) == ["LOCK", "state"]
