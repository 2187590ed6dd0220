"""`regraft bench`: throughput and latency of a running cluster, from outside.

Callers are spread over several processes (one Python process drives only a few
thousand gRPC calls a second) and over every endpoint, as co-located front-ends
would. Each caller loops for the duration: a write is a PutTag of a fresh tag (one
Raft entry, fsynced on a majority); a read is a GetManifest by tag, STALE or
LINEARIZABLE. Reported: operations per second, p50 and p99 latency, errors, and the
CPU the callers' processes spent per operation: the load generator shares the
machine with what it measures, and what a call costs the client depends on the
server too (grpc's C core sends each answer in a write of its own, where etcd's Go
server gathers answers: docs/performance.md, Session 16).

`--target etcd` drives an etcd cluster with the same callers, processes and gRPC
library: a write is a Put of a fresh key (the tag's digest as its value), a read a
Range of one key holding the same manifest, serializable for STALE. Comparisons
with etcd are then of the servers, not of two load generators.
"""

import collections
import json
import multiprocessing
import resource
import statistics
import threading
import time
import uuid
from collections.abc import Callable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from cluster.client import Client, Credentials, dial
from regraft.v1 import registry_pb2, registry_pb2_grpc
from storage import names

REPOSITORY = "bench/app"
OPS = ("write", "read-stale", "read-linearizable")
TARGETS = ("regraft", "etcd")
_CONFIG = b'{"architecture":"amd64","os":"linux"}'
_CONFIG_DIGEST = names.compute_digest(_CONFIG)
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _CONFIG_DIGEST,
            "size": len(_CONFIG),
        },
        "layers": [],
    }
).encode()
_ETCD_LATEST = f"{REPOSITORY}/latest".encode()


def _etcd_messages() -> tuple[type, type]:
    """etcd's PutRequest and RangeRequest, with only the fields the bench sets
    (etcdserverpb's numbers: key 1, value 2; serializable 7)."""
    bytes_, bool_ = (
        descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
        descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    )
    file = descriptor_pb2.FileDescriptorProto(
        name="regraft_bench_etcd.proto", package="etcdserverpb", syntax="proto3"
    )
    put = file.message_type.add(name="PutRequest")
    put.field.add(name="key", number=1, type=bytes_)
    put.field.add(name="value", number=2, type=bytes_)
    ranged = file.message_type.add(name="RangeRequest")
    ranged.field.add(name="key", number=1, type=bytes_)
    ranged.field.add(name="serializable", number=7, type=bool_)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"etcdserverpb.{name}"))
        for name in ("PutRequest", "RangeRequest")
    )


EtcdPut, EtcdRange = _etcd_messages()


def prepare(target: str, endpoints: list[str], credentials: Credentials | None = None) -> str:
    """Store what writes point at and reads fetch; returns the manifest's digest."""
    if target == "etcd":
        with dial(endpoints[0], credentials) as channel:
            _etcd_put(channel)(EtcdPut(key=_ETCD_LATEST, value=MANIFEST), timeout=10)
        return names.compute_digest(MANIFEST)
    with Client(endpoints, credentials=credentials) as client:
        client.link_blob(REPOSITORY, _CONFIG_DIGEST, len(_CONFIG))
        return client.put_manifest(REPOSITORY, "latest", MANIFEST).digest


def _etcd_put(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary("/etcdserverpb.KV/Put", request_serializer=EtcdPut.SerializeToString)


def _operation(target: str, op: str, channel: grpc.Channel, digest: str) -> Callable[[str], None]:
    """One call of `op` on `target`; its argument makes a written key or tag unique."""
    stale = op == "read-stale"
    if target == "etcd":
        if op == "write":
            put, value = _etcd_put(channel), digest.encode()
            return lambda name: put(
                EtcdPut(key=f"{REPOSITORY}/{name}".encode(), value=value), timeout=10
            )
        get = channel.unary_unary(
            "/etcdserverpb.KV/Range", request_serializer=EtcdRange.SerializeToString
        )
        request = EtcdRange(key=_ETCD_LATEST, serializable=stale)
        return lambda _name: get(request, timeout=10)
    stub = registry_pb2_grpc.RegistryStub(channel)
    if op == "write":
        return lambda name: stub.PutTag(
            registry_pb2.PutTagRequest(repository=REPOSITORY, tag=name, digest=digest), timeout=10
        )
    consistency = registry_pb2.STALE if stale else registry_pb2.LINEARIZABLE
    request = registry_pb2.GetManifestRequest(
        repository=REPOSITORY,
        reference="latest",
        read=registry_pb2.ReadOptions(consistency=consistency),
    )
    return lambda _name: stub.GetManifest(request, timeout=10)


# A caller whose call failed waits this long before its next: during a failover a
# replica answers UNAVAILABLE at once, and callers that did not wait counted thousands.
ERROR_PAUSE = 0.05


def _worker(target, endpoints, op, threads, duration, digest, first, queue, credentials) -> None:
    latencies: list[float] = []
    errors: collections.Counter = collections.Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def caller(number: int) -> None:
        channel = dial(endpoints[number % len(endpoints)], credentials)
        call = _operation(target, op, channel, digest)
        mine: list[float] = []
        failed: collections.Counter = collections.Counter()
        prefix = uuid.uuid4().hex[:8]
        i = 0
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                call(f"t{prefix}-{i}")
                mine.append(time.perf_counter() - started)
            except grpc.RpcError as e:
                failed[e.code().name] += 1
                time.sleep(ERROR_PAUSE)
            i += 1
        channel.close()
        with lock:
            latencies.extend(mine)
            errors.update(failed)

    pool = [threading.Thread(target=caller, args=(first + n,)) for n in range(threads)]
    before = _cpu_seconds()  # the callers' CPU, not the process's start-up
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    queue.put((latencies, dict(errors), _cpu_seconds() - before))


def _cpu_seconds() -> float:
    """User and system CPU of this process, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(
    endpoints: list[str],
    op: str,
    concurrency: int,
    duration: float,
    processes: int,
    credentials: Credentials | None = None,
    target: str = "regraft",
) -> dict:
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}: use {', '.join(OPS)}")
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}: use {' or '.join(TARGETS)}")
    digest = prepare(target, endpoints, credentials)
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
                args=(target, endpoints, op, share, duration, digest, first, queue, credentials),
            )
        )
        first += share
    started = time.monotonic()
    for w in workers:
        w.start()
    latencies: list[float] = []
    errors: collections.Counter = collections.Counter()
    client_cpu = 0.0
    for _ in workers:
        found, failed, cpu = queue.get()
        latencies.extend(found)
        errors.update(failed)
        client_cpu += cpu
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "target": target,
        "op": op,
        "concurrency": concurrency,
        "ops": len(latencies),
        "errors": sum(errors.values()),
        "errors_by_code": dict(errors.most_common()),
        "seconds": round(elapsed, 2),
        "ops_per_second": round(len(latencies) / duration, 1),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else 0.0,
        "client_cpu_us_per_op": round(client_cpu * 1e6 / len(latencies)) if latencies else 0,
    }


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]


def format_result(r: dict) -> str:
    target = "" if r.get("target", "regraft") == "regraft" else f"{r['target']} "
    return (
        f"{target}{r['op']:<18} concurrency {r['concurrency']:>4}: "
        f"{r['ops_per_second']:>9.1f} ops/s  "
        f"p50 {r['p50_ms']:>7.2f} ms  p99 {r['p99_ms']:>8.2f} ms  errors {r['errors']}"
        f"{_by_code(r.get('errors_by_code') or {})}  "
        f"client CPU {r['client_cpu_us_per_op']} us/op"
    )


def _by_code(counts: dict[str, int]) -> str:
    """(UNAVAILABLE 12, DEADLINE_EXCEEDED 3), or nothing without errors."""
    if not counts:
        return ""
    return " (" + ", ".join(f"{code} {n}" for code, n in counts.items()) + ")"
