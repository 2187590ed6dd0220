"""A history of client operations on tag registers, as the linearizability checker reads it.

Every operation has a call and a return time on one monotonic clock (this process's
`time.monotonic`), its input and its outcome:

- OK: it happened, with `result` (the digest read, or the previous digest the write
  replaced, or the digest a delete removed; None when absent).
- FAIL: it definitely did not change anything. Only answers that come out of the
  state machine are definite: FAILED_PRECONDITION (compare-and-set mismatch) and
  NOT_FOUND. `error` names the code, because the two mean different states.
- UNKNOWN: it may or may not have taken effect (DEADLINE_EXCEEDED, UNAVAILABLE, a lost
  connection, the replica's "outcome unknown"). cluster/client.py retries UNAVAILABLE
  and DEADLINE_EXCEEDED under one request id, which the state machine dedupes, so a
  retried write applies at most once; once the client gives up, nobody knows. Its
  return time is +infinity: it may take effect at any point after its call, or never.
"""

import json
import math
import threading
import time
from dataclasses import asdict, dataclass

import grpc

OK = "ok"
FAIL = "fail"
UNKNOWN = "unknown"

# Operation kinds on a tag register.
GET = "get"  # GetManifest by tag, LINEARIZABLE
PUT = "put"  # PutTag; `expected` set: compare-and-set; `must_not_exist`: create
DELETE = "delete"  # DeleteTag; `expected` set: compare-and-delete
# PutManifest with a tag reference: stores the manifest `value` and sets the tag to it,
# unconditionally. Its answer does not say what the tag pointed at: `result` stays None.
PUT_MANIFEST = "put-manifest"
# DeleteManifest of `value`, a digest written to this tag: deletes the manifest and the
# tags that point at it. `result`: the digest the tag lost (`value`), or None when the
# answer listed no deleted tag.
DELETE_MANIFEST = "delete-manifest"
# ListTags of a repository, LINEARIZABLE: `key` is the repository, `tags` the listing.
# The checker reads it as one observation per tag register (linearizability.py).
LIST = "list"
WRITES = (PUT, PUT_MANIFEST)  # the kinds that write `value` to the tag

DEFINITE_CODES = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND}
# Codes after which a write may have applied: the client gave up waiting.
UNKNOWN_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@dataclass
class Operation:
    client: int
    key: str
    kind: str
    call: float
    ret: float
    outcome: str
    value: str | None = None  # the digest a PUT writes
    expected: str | None = None
    must_not_exist: bool = False
    result: str | None = None
    error: str = ""
    revision: int = 0
    tags: list[str] | None = None  # what a LIST answered

    def describe(self) -> str:
        """One line for a failure message."""
        arguments = [a for a in (self.value, self.expected and f"expect={self.expected}") if a]
        if self.must_not_exist:
            arguments.append("must_not_exist")
        shown = ",".join(_short(a) for a in arguments)
        answer = self.error or _short(self.result)
        if self.kind == LIST and not self.error:
            answer = "[" + ",".join(self.tags or []) + "]"
        ret = "inf" if math.isinf(self.ret) else f"{self.ret:.4f}"
        return (
            f"c{self.client} {self.key} {self.kind}({shown}) -> {self.outcome} {answer} "
            f"rev={self.revision} [{self.call:.4f}, {ret}]"
        )


def _short(digest: str | None) -> str:
    if digest is None:
        return "absent"
    return digest.split(":")[-1][:8] if ":" in digest else digest


class Recorder:
    """Collects operations from many client threads; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.operations: list[Operation] = []
        # Codes seen that the workload does not expect at all (INTERNAL, INVALID_ARGUMENT).
        self.unexpected: list[str] = []

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def add(self, operation: Operation) -> None:
        with self._lock:
            self.operations.append(operation)

    def note_unexpected(self, description: str) -> None:
        with self._lock:
            self.unexpected.append(description)

    def counts(self) -> dict[str, int]:
        with self._lock:
            found = {OK: 0, FAIL: 0, UNKNOWN: 0}
            for operation in self.operations:
                found[operation.outcome] += 1
            return found


def save(operations: list[Operation], path: str) -> None:
    """Write a history as JSON (infinite return times as null)."""
    rows = []
    for operation in operations:
        row = asdict(operation)
        if math.isinf(row["ret"]):
            row["ret"] = None
        rows.append(row)
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)


def load(path: str) -> list[Operation]:
    with open(path) as f:
        rows = json.load(f)
    return [
        Operation(**{**row, "ret": math.inf if row["ret"] is None else row["ret"]}) for row in rows
    ]
