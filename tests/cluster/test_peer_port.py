"""The Raft peer port, attacked: a crafted pickle from someone without the secret."""

import os
import pickle
import socket
import struct
import time
import zlib

from tests.cluster.harness import push


class RunsCommand:
    """Unpickling this runs a shell command: what PySyncObj does without a password."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def frame(payload) -> bytes:
    data = zlib.compress(pickle.dumps(payload), 3)
    return struct.pack("i", len(data)) + data


def test_a_crafted_payload_runs_nothing_and_changes_nothing(cluster, tmp_path):
    marker = tmp_path / "pwned"
    with cluster.client() as client:
        before = push(client, "safe/app", "v1", seed="before")
    state_hash = cluster.wait_converged()
    leader = cluster.wait_for_leader()
    host, port = leader.config.raft_address.rsplit(":", 1)
    payloads = [
        frame(RunsCommand(f"touch {marker}")),
        frame(["add", "127.0.0.1:1"]),  # a PySyncObj utility message
        frame({"type": "append_entries", "term": 10**9, "commit_index": 10**9}),
        struct.pack("i", 10) + b"not a pickle",
    ]
    for payload in payloads:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(payload)
            s.settimeout(2)
            try:
                while s.recv(4096):
                    pass
            except (TimeoutError, ConnectionResetError):
                pass
    assert not marker.exists(), "the peer port ran code sent by a stranger"
    # The cluster neither changed nor lost its leader, and still accepts writes.
    assert cluster.wait_converged() == state_hash
    assert cluster.wait_for_leader() is leader
    with cluster.client() as client:
        after = push(client, "safe/app", "v2", seed="after")
        assert client.get_manifest("safe/app", "v1").digest == before.digest
    assert after.revision > before.revision


def test_a_huge_frame_from_a_stranger_is_refused_early(cluster):
    leader = cluster.wait_for_leader()
    host, port = leader.config.raft_address.rsplit(":", 1)
    sent = 0
    chunk = b"\0" * (1 << 20)
    give_up = time.monotonic() + 20
    closed_by_replica = False
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(struct.pack("i", 2**31 - 1))
        try:
            while time.monotonic() < give_up:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            closed_by_replica = True
    assert closed_by_replica, f"the peer port kept reading one frame ({sent >> 20} MiB sent)"
    assert sent < (64 << 20), f"the peer port read {sent >> 20} MiB of one frame"
    with cluster.client() as client:
        push(client, "safe/app", "after", seed="after-huge-frame")
