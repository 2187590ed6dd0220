"""gRPC health and the HTTP probes of real replicas: SERVING / ready only with a leader,
a quorum and the log applied; NOT_SERVING when cut off from the quorum, and when
shutting down. Bounds are generous: a partitioned leader keeps believing it leads for
leader_fallback (3 s), and the machine is shared."""

import contextlib
import threading
import time
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
BOUND = 60.0  # seconds: a liveness bound only, far above the expected few seconds


def health(replica, service: str = "") -> int:
    with grpc.insecure_channel(replica.endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def probe(replica, path: str) -> tuple[int, str]:
    url = f"http://{replica.config.metrics_address}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(replica, status: int, timeout: float = BOUND) -> str:
    """Until gRPC health says `status` for the server and both services and /readyz
    agrees (200 or 503); returns /readyz's text. The gRPC status is refreshed every
    half second, /readyz on each request, so both are polled together."""
    deadline = time.monotonic() + timeout
    ready_code = 200 if status == SERVING else 503
    seen = None
    while time.monotonic() < deadline:
        seen = {s: health(replica, s) for s in ("", "regraft.v1.Registry", "regraft.v1.Cluster")}
        code, text = probe(replica, "/readyz")
        if set(seen.values()) == {status} and code == ready_code:
            return text
        time.sleep(0.2)
    name = health_pb2.HealthCheckResponse.ServingStatus.Name
    raise AssertionError(
        f"{replica.id} did not report {name(status)} in {timeout}s: "
        f"{ {s: name(v) for s, v in seen.items()} }, /readyz {code} {text!r}"
    )


def test_a_replica_cut_off_from_the_quorum_stops_serving_and_comes_back(cluster):
    for replica in cluster.replicas:
        assert wait_for(replica, SERVING) == "ok\n"
    # Cut off the leader: the hardest case, since it believes it leads for a while.
    isolated = cluster.wait_for_leader()
    others = [r for r in cluster.replicas if r is not isolated]
    for replica in others:
        replica.pause()
    try:
        reason = wait_for(isolated, NOT_SERVING)
        assert reason.strip() in {"no leader known", "no quorum reachable"}, reason
        assert probe(isolated, "/livez") == (200, "ok\n")  # alive, just not ready
    finally:
        for replica in others:
            replica.resume()
    for replica in cluster.replicas:
        assert wait_for(replica, SERVING) == "ok\n"


def _watched(channel: grpc.Channel, seen: list[int]):
    """A Health.Watch stream whose messages a thread appends to `seen`, once it has
    seen the first."""
    stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())

    def watch() -> None:
        with contextlib.suppress(grpc.RpcError):  # the server went away, or we did
            for response in stream:
                seen.append(response.status)

    watcher = threading.Thread(target=watch)
    watcher.start()
    deadline = time.monotonic() + BOUND
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    return stream, watcher


def test_shutdown_reports_not_serving_before_the_server_goes(cluster):
    replica = cluster.replicas[0]
    wait_for(replica, SERVING)
    seen: list[int] = []
    with grpc.insecure_channel(replica.endpoint) as channel:
        _, watcher = _watched(channel, seen)
        assert seen == [SERVING]
        replica.stop()
        watcher.join(BOUND)
        assert not watcher.is_alive(), "the Watch stream outlived the replica"
    assert seen[-1] == NOT_SERVING, seen


def test_health_watch_speaks_only_when_the_status_changes(cluster):
    """The protocol sends watchers a message when the status changes. A replica checks
    its readiness twice a second, and grpcio's servicer sends every status it is given:
    each check used to reach every watcher."""
    replica = cluster.replicas[1]
    wait_for(replica, SERVING)
    seen: list[int] = []
    with grpc.insecure_channel(replica.endpoint) as channel:
        stream, watcher = _watched(channel, seen)
        time.sleep(3.0)  # six checks, each of which would have sent SERVING again
        stream.cancel()
        watcher.join(BOUND)
    assert seen == [SERVING]


def test_health_checks_are_counted_like_api_calls(cluster):
    replica = cluster.replicas[0]

    def counted(code: str) -> float:
        return cluster.metric(
            replica, "regraft_grpc_requests_total", method="HealthCheck", code=code
        )

    ok_before, unknown_before = counted("OK"), counted("NOT_FOUND")
    for _ in range(3):
        health(replica)
    with pytest.raises(grpc.RpcError) as unknown:
        health(replica, "no.such.Service")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert counted("OK") >= ok_before + 3
    assert counted("NOT_FOUND") == unknown_before + 1
