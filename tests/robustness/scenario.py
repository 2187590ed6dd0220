"""One robustness run: a workload, a schedule of faults, and the invariants checked after.

Invariants (any violation fails the run, with the evidence in the message):
- the history is linearizable per tag, listings included (linearizability.py);
- every STALE read with min_revision answered at that revision or later;
- no error code outside the expected ones (INTERNAL, INVALID_ARGUMENT, ...);
- the member table lists exactly the current members (the harness's `replicas`:
  removed ones are stopped and left out), all of them voters;
- every current member's event history holds every acknowledged write at its
  revision, their histories are identical, and they end with one state hash;
- the Watch stream, followed across reconnects to other replicas, delivered exactly
  that history: every change once, in revision order, without gaps;
- after each fault heals, a write is accepted within `recover_bound` seconds (the
  figure is reported).
"""

import hashlib
import itertools
import os
import random
import time
from dataclasses import dataclass, field
from math import inf

from regraft.v1 import registry_pb2
from regraft.v1.record_pb2 import MemberRecord
from tests.cluster.harness import LocalCluster, push
from tests.cluster.test_membership import members_of
from tests.robustness import history, linearizability
from tests.robustness.faults import FAULTS, wait_writable
from tests.robustness.proxy import Network
from tests.robustness.workload import REPOSITORY, Claims, Watcher, Writer, events_on, prepare

TAGS = ["t0", "t1", "t2"]


@dataclass
class Report:
    seed: int
    operations: int = 0
    outcomes: dict = field(default_factory=dict)
    # (name, detail, seconds from heal to an accepted write, seconds from injection to
    # the workload's first answered write called after it, the longest stretch without
    # an answered write from the start of the injection to the end of the settling)
    faults: list = field(default_factory=list)
    watched_events: int = 0
    watch_reconnects: int = 0
    min_revision_reads: int = 0
    check_seconds: float = 0.0
    violations: list = field(default_factory=list)
    history_file: str = ""

    def summary(self) -> str:
        recoveries = ", ".join(
            f"{n}({d}): writable {s:.2f}s after heal, first write {w:.2f}s after injection, "
            f"longest write pause {p:.2f}s"
            for n, d, s, w, p in self.faults
        )
        verdict = "OK" if not self.violations else "VIOLATED: " + "; ".join(self.violations)
        return (
            f"seed {self.seed}: {self.operations} operations {self.outcomes}, "
            f"{len(self.faults)} faults, recovery [{recoveries}], "
            f"watch {self.watched_events} events over {self.watch_reconnects} connections, "
            f"{self.min_revision_reads} min_revision reads, checked in "
            f"{self.check_seconds:.2f}s; verdict {verdict}"
        )


def run(
    cluster: LocalCluster,
    network: Network | None,
    faults: list[str],
    seed: int,
    directory: str,
    writers: int = 5,
    warmup: float = 2.0,
    hold: float = 3.0,
    settle: float = 2.0,
    recover_bound: float = 30.0,
) -> Report:
    """Run the workload through `faults` (injected one after another), then check."""
    rng = random.Random(seed)
    report = Report(seed)
    with cluster.client(timeout=30.0) as client:
        start = prepare(client)
    recorder = history.Recorder()
    claims = Claims()

    def members() -> list[str]:
        return cluster.endpoints

    threads = [
        Writer(i, members, TAGS, recorder, seed=rng.randrange(1 << 30), claims=claims)
        for i in range(writers)
    ]
    watcher = Watcher(members, start + 1, seed=rng.randrange(1 << 30))
    for thread in [*threads, watcher]:
        thread.start()
    try:
        time.sleep(warmup)
        for number, name in enumerate(faults):
            fault = FAULTS[name](cluster, network, rng)
            began = recorder.now()  # a membership change takes a while to inject
            fault.inject()
            injected = recorder.now()
            time.sleep(hold)
            fault.heal()
            probe = "sha256:" + hashlib.sha256(f"{seed}-{number}".encode()).hexdigest()
            recovered = wait_writable(cluster, probe, recover_bound)
            time.sleep(settle)
            answered = sorted(
                (op.call, op.ret)
                for op in list(recorder.operations)
                if op.kind not in (history.GET, history.LIST)
                and op.outcome != history.UNKNOWN
                and op.call >= began
            )
            resumed = min((ret for call, ret in answered if call >= injected), default=inf)
            ends = sorted([began, *(ret for _, ret in answered), recorder.now()])
            pause = max(b - a for a, b in itertools.pairwise(ends))
            report.faults.append((name, fault.detail, recovered, resumed - injected, pause))
    finally:
        for thread in threads:
            thread.stop()
        for thread in threads:
            thread.join(60)
        watcher.stop()
    _check(cluster, recorder, threads, watcher, start, report, directory)
    return report


def _check(cluster, recorder, writers, watcher, start, report: Report, directory: str) -> None:
    operations = list(recorder.operations)
    report.operations = len(operations)
    report.outcomes = recorder.counts()
    report.min_revision_reads = sum(w.min_revision_reads for w in writers)
    report.watched_events = len(watcher.events)
    report.watch_reconnects = watcher.reconnects
    violations = report.violations
    report.history_file = os.path.join(directory, f"history-{report.seed}.json")
    history.save(operations, report.history_file)

    started = time.monotonic()
    verdict = linearizability.check(operations)
    report.check_seconds = time.monotonic() - started
    if not verdict.linearizable:
        where = f"not linearizable (history in {report.history_file}):\n"
        violations.append(where + verdict.explain())
    for writer in writers:
        violations += writer.min_revision_violations
    if recorder.unexpected:
        violations.append(f"unexpected errors: {recorder.unexpected[:5]}")

    # A last write fences the history: every member must show exactly the same events
    # up to it, including every acknowledged write.
    with cluster.client(timeout=30.0) as client:
        fence = push(client, REPOSITORY, "fence", f"fence-{report.seed}").revision
    cluster.wait_converged(cluster.replicas, timeout=60.0)
    roles = {i: m.membership for i, m in members_of(cluster).items()}
    if roles != {r.id: MemberRecord.VOTER for r in cluster.replicas}:
        named = {i: MemberRecord.Role.Name(role) for i, role in roles.items()}
        current = sorted(r.id for r in cluster.replicas)
        violations.append(f"the member table {named} is not the members {current}, all voters")
    per_replica = {r.id: events_on(r.endpoint, start + 1, fence) for r in cluster.replicas}
    expected = _acknowledged(operations, writers)
    for replica_id, events in per_replica.items():
        found = {(e.revision, e.kind, e.tag, e.digest) for e in events}
        missing = sorted(expected - found)
        if missing:
            violations.append(f"{replica_id} lacks acknowledged writes {missing[:5]}")
    reference = [_event_tuple(e) for e in next(iter(per_replica.values()))]
    for replica_id, events in per_replica.items():
        if [_event_tuple(e) for e in events] != reference:
            violations.append(f"{replica_id}'s event history differs from the others'")
    if [r for r, *_ in reference] != sorted(r for r, *_ in reference):
        violations.append("the event history is not in revision order")
    watched = [_event_tuple(e) for e in watcher.events]
    if watched != reference[: len(watched)]:
        first = next(
            (i for i, (a, b) in enumerate(zip(watched, reference, strict=False)) if a != b),
            min(len(watched), len(reference)),
        )
        violations.append(
            f"Watch across reconnects diverges at event {first}: watched "
            f"{watched[first : first + 3]}, history {reference[first : first + 3]}"
        )


def _event_tuple(event) -> tuple:
    return (event.revision, event.kind, event.tag, event.digest)


def _acknowledged(operations: list, writers: list) -> set[tuple]:
    """The event each acknowledged change must have left, keyed like _event_tuple."""
    expected = set()
    for op in operations:
        if op.outcome != history.OK or op.kind in (history.GET, history.LIST):
            continue
        tag = op.key.split(":", 1)[1]
        if op.kind in history.WRITES:
            expected.add((op.revision, registry_pb2.TAG_SET, tag, op.value))
        if op.kind == history.PUT_MANIFEST:
            expected.add((op.revision, registry_pb2.MANIFEST_PUT, "", op.value))
        elif op.kind == history.DELETE:
            expected.add((op.revision, registry_pb2.TAG_DELETE, tag, op.result))
        elif op.kind == history.DELETE_MANIFEST:
            if op.result is not None:
                expected.add((op.revision, registry_pb2.TAG_DELETE, tag, op.value))
            expected.add((op.revision, registry_pb2.MANIFEST_DELETE, "", op.value))
    for writer in writers:
        for digest, revision in writer.stored_manifests:
            expected.add((revision, registry_pb2.MANIFEST_PUT, "", digest))
    return expected
