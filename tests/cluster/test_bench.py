"""`regraft bench`, the benchmark of the README's figures: against a running cluster,
and against etcd with the same load (the comparison the project is measured by)."""

import json
import subprocess

import grpc
import pytest

from cluster import bench
from cluster.client import STALE
from tests.cluster.harness import free_port_block, regraft

SHORT = ["--duration", "1", "--concurrency", "2", "--processes", "1", "--json"]


def measured(*arguments: str) -> list[dict]:
    result = regraft("bench", *arguments, *SHORT, timeout=180)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["op"] for row in rows] == list(bench.OPS)
    for row in rows:
        assert row["ops"] > 0 and row["errors"] == 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"], row
        assert row["client_cpu_us_per_op"] > 0, row  # the worker processes' CPU
    return rows


def test_bench_measures_every_operation_of_a_running_cluster(cluster):
    rows = measured("--endpoints", ",".join(cluster.endpoints))
    # Every acknowledged write is a tag, besides 'latest', which reads fetch.
    tags, last = [], ""
    with cluster.client() as client:
        while True:
            page = client.list_tags(bench.REPOSITORY, n=1000, last=last, consistency=STALE)
            tags += page.tags
            if not page.more:
                break
            last = page.tags[-1]
    assert len(tags) == rows[0]["ops"] + 1 and "latest" in tags


@pytest.fixture
def etcd(tmp_path):
    """A one-member etcd (Debian's etcd-server), stopped by the test."""
    base = free_port_block(2)
    client_url, peer_url = f"http://127.0.0.1:{base + 1}", f"http://127.0.0.1:{base + 2}"
    with open(tmp_path / "etcd.log", "wb") as log:
        process = subprocess.Popen(
            ["etcd", "--name", "e1", "--data-dir", str(tmp_path / "etcd"),
             "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", f"e1={peer_url}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    endpoint = f"127.0.0.1:{base + 1}"
    try:
        with grpc.insecure_channel(endpoint) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_bench_drives_etcd_with_the_same_load(etcd):
    measured("--target", "etcd", "--endpoints", etcd)
    # What reads fetched is the manifest regraft's reads fetch.
    with grpc.insecure_channel(etcd) as channel:
        get = channel.unary_unary(
            "/etcdserverpb.KV/Range", request_serializer=bench.EtcdRange.SerializeToString
        )
        answer = get(bench.EtcdRange(key=b"bench/app/latest"), timeout=10)
    assert bench.MANIFEST in answer
