"""`regraft bench`: throughput and latency of a running cluster, from outside.

Callers are spread over several processes (one Python process drives only a few
thousand gRPC calls a second) and over every endpoint, as co-located front-ends
would. Each caller loops for the duration: a write is a PutTag of a fresh tag (one
Raft entry, fsynced on a majority); a read is a GetManifest by tag, STALE or
LINEARIZABLE. Reported: operations per second, p50 and p99 latency, errors.
"""

import hashlib
import json
import multiprocessing
import statistics
import threading
import time
import uuid

import grpc

from cluster.client import Client, Credentials, dial
from regraft.v1 import registry_pb2, registry_pb2_grpc

REPOSITORY = "bench/app"
_CONFIG = b'{"architecture":"amd64","os":"linux"}'


def _manifest(config_digest: str) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(_CONFIG),
            },
            "layers": [],
        }
    ).encode()


def prepare(endpoints: list[str], credentials: Credentials | None = None) -> str:
    """Push the manifest that writes tag and reads fetch; returns its digest."""
    config_digest = "sha256:" + hashlib.sha256(_CONFIG).hexdigest()
    with Client(endpoints, credentials=credentials) as client:
        client.link_blob(REPOSITORY, config_digest, len(_CONFIG))
        return client.put_manifest(REPOSITORY, "latest", _manifest(config_digest)).digest


def _worker(endpoints, op, threads, duration, digest, first, queue, credentials) -> None:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def caller(number: int) -> None:
        endpoint = endpoints[number % len(endpoints)]
        channel = dial(endpoint, credentials)
        stub = registry_pb2_grpc.RegistryStub(channel)
        mine: list[float] = []
        failed = 0
        prefix = uuid.uuid4().hex[:8]
        i = 0
        consistency = registry_pb2.STALE if op == "read-stale" else registry_pb2.LINEARIZABLE
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                if op == "write":
                    stub.PutTag(
                        registry_pb2.PutTagRequest(
                            repository=REPOSITORY, tag=f"t{prefix}-{i}", digest=digest
                        ),
                        timeout=10,
                    )
                else:
                    stub.GetManifest(
                        registry_pb2.GetManifestRequest(
                            repository=REPOSITORY,
                            reference="latest",
                            read=registry_pb2.ReadOptions(consistency=consistency),
                        ),
                        timeout=10,
                    )
                mine.append(time.perf_counter() - started)
            except grpc.RpcError:
                failed += 1
            i += 1
        channel.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    pool = [threading.Thread(target=caller, args=(first + n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    queue.put((latencies, errors[0]))


def run(
    endpoints: list[str],
    op: str,
    concurrency: int,
    duration: float,
    processes: int,
    credentials: Credentials | None = None,
) -> dict:
    if op not in ("write", "read-stale", "read-linearizable"):
        raise ValueError(f"unknown op {op!r}: use write, read-stale or read-linearizable")
    digest = prepare(endpoints, credentials)
    processes = max(1, min(processes, concurrency))
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    workers = []
    first = 0
    for share in shares:
        workers.append(
            context.Process(
                target=_worker,
                args=(endpoints, op, share, duration, digest, first, queue, credentials),
            )
        )
        first += share
    started = time.monotonic()
    for w in workers:
        w.start()
    latencies: list[float] = []
    errors = 0
    for _ in workers:
        found, failed = queue.get()
        latencies.extend(found)
        errors += failed
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "op": op,
        "concurrency": concurrency,
        "ops": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "ops_per_second": round(len(latencies) / duration, 1),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else 0.0,
    }


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]


def format_result(r: dict) -> str:
    return (
        f"{r['op']:<18} concurrency {r['concurrency']:>4}: {r['ops_per_second']:>9.1f} ops/s  "
        f"p50 {r['p50_ms']:>7.2f} ms  p99 {r['p99_ms']:>8.2f} ms  errors {r['errors']}"
    )
