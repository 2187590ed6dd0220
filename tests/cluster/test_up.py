"""`regraft up` as a newcomer meets it: a local cluster that rides out a killed leader
(started again, as systemd would) and stops, every replica with it, on Ctrl-C."""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

from cluster.client import Client
from tests.cluster.harness import ROOT, free_port_block, push, regraft
from tests.polling import wait_for

REPLICA_LINE = re.compile(r"^  (r\d)  pid (\d+)  gRPC (\S+)")
RESTARTED = re.compile(
    r"replica (r\d) \(pid (\d+)\) was killed by SIGKILL; started it again: pid (\d+)"
)


class Output:
    """The lines `regraft up` prints, read beside the test."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def until(self, pattern: str, timeout: float = 60.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(
            f"regraft up never printed {pattern!r}; it printed:\n" + "\n".join(self.seen)
        )


def healthy(endpoints: str) -> str:
    """What `regraft status` prints once it finds the cluster healthy (exit status 0)."""

    def answer():
        status = regraft("status", "--endpoints", endpoints, timeout=30)
        return status.stdout if status.returncode == 0 else None

    return wait_for(answer, "regraft status to find the cluster healthy")


def test_up_survives_a_killed_leader_and_stops_on_ctrl_c(tmp_path):
    base = free_port_block(23)  # gRPC base+1.., Raft base+11.., metrics base+21..
    command = ["up", "--data-dir", str(tmp_path / "data"), "--base-port", str(base)]
    up = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", *command],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pids: dict[str, int] = {}
    strays = []
    try:
        output = Output(up)
        for _ in range(3):
            match = output.until(REPLICA_LINE.pattern)
            pids[match[1]] = int(match[2])
        leader = output.until(r"^leader: (r\d) \(")[1]
        output.until("Ctrl-C stops the cluster.")
        endpoints = ",".join(f"127.0.0.1:{base + i}" for i in (1, 2, 3))
        assert "healthy: one leader" in healthy(endpoints)
        with Client(endpoints.split(",")) as client:
            before = push(client, "up/app", "before", seed="before")

        os.kill(pids[leader], signal.SIGKILL)
        restarted = output.until(RESTARTED.pattern)
        assert (restarted[1], int(restarted[2])) == (leader, pids[leader])
        pids[leader] = int(restarted[3])
        assert "healthy: one leader" in healthy(endpoints)
        with Client(endpoints.split(",")) as client:
            push(client, "up/app", "after", seed="after")
            assert client.get_manifest("up/app", "before").digest == before.digest
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=30)
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
            for pid in pids.values():  # stopped by `up`; if not, by the test
                try:
                    os.kill(pid, signal.SIGKILL)
                    strays.append(pid)
                except ProcessLookupError:
                    pass
    assert not strays, f"replicas {strays} outlived regraft up"
    assert up.returncode == 0
