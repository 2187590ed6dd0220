"""What clients do while faults happen: tag registers under compare-and-set, manifests
pushed with a tag and deleted, tag listings, and a watcher.

Each writer thread has its own Client, first talking to a random replica (the client
then follows leader hints; it is made again when the membership changes). Every write
writes a digest nobody wrote before (a fresh manifest, stored first outside the
history, or pushed with its tag in one PutManifest): unique values keep the
linearizability search small and make every acknowledged write identifiable in the
event history. A manifest is deleted only after it was seen on a tag, and at most once
in a run (Claims): linearizability.py explains why its model needs both.
"""

import hashlib
import json
import random
import threading
from collections.abc import Callable

import grpc

from cluster.client import LINEARIZABLE, STALE, Client
from regraft.v1 import registry_pb2
from tests.robustness.history import (
    DEFINITE_CODES,
    DELETE,
    DELETE_MANIFEST,
    FAIL,
    GET,
    LIST,
    OK,
    PUT,
    PUT_MANIFEST,
    UNKNOWN,
    UNKNOWN_CODES,
    Operation,
    Recorder,
)

REPOSITORY = "rb/app"
_CONFIG = b'{"architecture":"amd64","os":"linux"}'
_LAYER = b"robustness layer"
_BLOBS = [("sha256:" + hashlib.sha256(b).hexdigest(), len(b)) for b in (_CONFIG, _LAYER)]


def manifest(label: str) -> bytes:
    """An OCI manifest over the shared blobs, unique per label."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _BLOBS[0][0],
                "size": _BLOBS[0][1],
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _BLOBS[1][0],
                    "size": _BLOBS[1][1],
                }
            ],
            "annotations": {"robustness": label},
        },
        sort_keys=True,
    ).encode()


def prepare(client: Client) -> int:
    """Link the shared blobs; the revision after which the workload's history starts."""
    return max(client.link_blob(REPOSITORY, digest, size).revision for digest, size in _BLOBS)


def key_of(tag: str) -> str:
    return f"{REPOSITORY}:{tag}"


class Claims:
    """The digests some writer chose to delete, shared by the writers of one run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claimed: set[str] = set()

    def claim(self, digest: str) -> bool:
        """True the first time a digest is claimed, False ever after."""
        with self._lock:
            first = digest not in self._claimed
            self._claimed.add(digest)
            return first


class Writer(threading.Thread):
    """One client doing register operations on a few tags until stopped."""

    def __init__(
        self,
        number: int,
        endpoints: Callable[[], list[str]],
        tags: list[str],
        recorder: Recorder,
        seed: int,
        claims: Claims,
        timeout: float = 4.0,
    ) -> None:
        super().__init__(name=f"writer-{number}", daemon=True)
        self.number = number
        self.rng = random.Random(seed)
        self.endpoints = endpoints  # the members' endpoints now (they change)
        self.timeout = timeout
        self.client = self._connect()
        self.tags = tags
        self.recorder = recorder
        self.claims = claims
        self.stopping = threading.Event()
        self.seen: dict[str, str | None] = {}  # last digest this client saw per tag
        self.revision = 0  # highest revision this client saw: for min_revision reads
        self.stored_manifests: list[tuple[str, int]] = []  # acknowledged (digest, revision)
        self.min_revision_reads = 0
        self.min_revision_violations: list[str] = []
        self._count = 0

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                if sorted(self.client.endpoints) != sorted(self.endpoints()):
                    self.client.close()
                    self.client = self._connect()
                self.step()
        finally:
            self.client.close()

    def stop(self) -> None:
        self.stopping.set()

    def _connect(self) -> Client:
        shuffled = list(self.endpoints())
        self.rng.shuffle(shuffled)
        return Client(shuffled, timeout=self.timeout, attempt_timeout=self.timeout / 2)

    def step(self) -> None:
        tag = self.rng.choice(self.tags)
        roll = self.rng.random()
        if roll < 0.30:
            self.read(tag)
        elif roll < 0.38:
            self.read_own_writes(tag)
        elif roll < 0.46:
            self.list_tags()
        elif roll < 0.76:
            self.write(tag, conditional=roll >= 0.61)
        elif roll < 0.84:
            self.push_tagged(tag)
        elif roll < 0.93:
            self.delete(tag, conditional=self.rng.random() < 0.5)
        else:
            self.delete_manifest(tag)

    # -- operations ---------------------------------------------------------------------

    def read(self, tag: str) -> None:
        op = Operation(self.number, key_of(tag), GET, self.recorder.now(), 0.0, OK)
        try:
            answer = self.client.get_manifest(REPOSITORY, tag, consistency=LINEARIZABLE)
            op.result, op.revision = answer.digest, answer.revision
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                op.result = None
            else:
                self._failed(op, error)
        op.ret = self.recorder.now()
        self._finish(op, tag)

    def read_own_writes(self, tag: str) -> None:
        """A STALE read with min_revision: it must reflect at least that revision."""
        wanted = self.revision
        try:
            answer = self.client.get_manifest(
                REPOSITORY, tag, consistency=STALE, min_revision=wanted
            )
            revision = answer.revision
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                return  # a timeout: nothing to check
            revision = None  # NOT_FOUND carries no revision
        self.min_revision_reads += 1
        if revision is not None and revision < wanted:
            self.min_revision_violations.append(
                f"c{self.number} read {tag} with min_revision={wanted}, answer at {revision}"
            )

    def write(self, tag: str, conditional: bool) -> None:
        digest = self._new_manifest()
        if digest is None:
            return
        op = Operation(self.number, key_of(tag), PUT, 0.0, 0.0, OK, value=digest)
        if conditional:
            known = self.seen.get(tag)
            if known is None:
                op.must_not_exist = True
            else:
                op.expected = known
        op.call = self.recorder.now()
        try:
            answer = self.client.put_tag(
                REPOSITORY,
                tag,
                digest,
                expected_digest=op.expected or "",
                must_not_exist=op.must_not_exist,
            )
            op.result, op.revision = answer.previous_digest or None, answer.revision
        except grpc.RpcError as error:
            self._failed(op, error)
        op.ret = self.recorder.now()
        self._finish(op, tag)

    def delete(self, tag: str, conditional: bool) -> None:
        op = Operation(self.number, key_of(tag), DELETE, self.recorder.now(), 0.0, OK)
        if conditional and self.seen.get(tag):
            op.expected = self.seen[tag]
        try:
            answer = self.client.delete_tag(REPOSITORY, tag, expected_digest=op.expected or "")
            op.result, op.revision = answer.digest, answer.revision
        except grpc.RpcError as error:
            self._failed(op, error)
        op.ret = self.recorder.now()
        self._finish(op, tag)

    def push_tagged(self, tag: str) -> None:
        """PutManifest of a fresh manifest under the tag (stores it and sets the tag)."""
        digest, content = self._fresh_manifest()
        op = Operation(self.number, key_of(tag), PUT_MANIFEST, self.recorder.now(), 0.0, OK)
        op.value = digest
        try:
            answer = self.client.put_manifest(REPOSITORY, tag, content)
            op.revision = answer.revision
            if answer.digest != digest:
                self.recorder.note_unexpected(f"PutManifest {tag}: digest {answer.digest}")
        except grpc.RpcError as error:
            self._failed(op, error)
        op.ret = self.recorder.now()
        self._finish(op, tag)

    def delete_manifest(self, tag: str) -> None:
        """DeleteManifest of the digest this client last saw on the tag (see Claims)."""
        digest = self.seen.get(tag)
        if digest is None or not self.claims.claim(digest):
            self.read(tag)  # nothing to delete: look again instead
            return
        op = Operation(self.number, key_of(tag), DELETE_MANIFEST, self.recorder.now(), 0.0, OK)
        op.value = digest
        try:
            answer = self.client.delete_manifest(REPOSITORY, digest)
            op.revision = answer.revision
            if list(answer.deleted_tags) not in ([], [tag]):
                self.recorder.note_unexpected(
                    f"DeleteManifest {digest} of {tag} deleted tags {list(answer.deleted_tags)}"
                )
            op.result = digest if answer.deleted_tags else None
        except grpc.RpcError as error:
            self._failed(op, error)
        op.ret = self.recorder.now()
        self._finish(op, tag)

    def list_tags(self) -> None:
        op = Operation(self.number, REPOSITORY, LIST, self.recorder.now(), 0.0, OK)
        try:
            answer = self.client.list_tags(REPOSITORY, n=1000, consistency=LINEARIZABLE)
            op.tags, op.revision = sorted(answer.tags), answer.revision
            if answer.more:
                self.recorder.note_unexpected(f"ListTags: more than 1000 tags {op.tags[:5]}")
        except grpc.RpcError as error:
            self._failed(op, error)
        op.ret = self.recorder.now()
        self._finish(op, None)

    def _fresh_manifest(self) -> tuple[str, bytes]:
        """A manifest nobody wrote before: its digest and its content."""
        self._count += 1
        content = manifest(f"c{self.number}-{self._count}")
        return "sha256:" + hashlib.sha256(content).hexdigest(), content

    def _new_manifest(self) -> str | None:
        """Store a manifest no one tagged yet; None when that did not succeed."""
        digest, content = self._fresh_manifest()
        try:
            answer = self.client.put_manifest(REPOSITORY, digest, content)
        except grpc.RpcError as error:
            if error.code() not in UNKNOWN_CODES:
                self.recorder.note_unexpected(f"PutManifest: {error.code().name} {error.details()}")
            return None
        self.stored_manifests.append((digest, answer.revision))
        self.revision = max(self.revision, answer.revision)
        return digest

    def _failed(self, op: Operation, error: grpc.RpcError) -> None:
        code = error.code()
        op.error = code.name
        if code in DEFINITE_CODES:
            op.outcome = FAIL
            return
        op.outcome = UNKNOWN
        if code not in UNKNOWN_CODES:
            self.recorder.note_unexpected(f"{op.kind} {op.key}: {code.name} {error.details()}")

    def _finish(self, op: Operation, tag: str | None) -> None:
        if op.outcome == OK:
            if op.kind in (PUT, PUT_MANIFEST):
                self.seen[tag] = op.value
            elif op.kind == GET:
                self.seen[tag] = op.result
            elif op.kind == DELETE:
                self.seen[tag] = None
            elif op.kind == DELETE_MANIFEST:
                self.seen.pop(tag, None)  # gone, or pointing elsewhere: not known
            self.revision = max(self.revision, op.revision)
        self.recorder.add(op)


class Watcher(threading.Thread):
    """Follows the Watch stream, moving to another replica every `period` seconds (and
    on any error), resuming from the last revision it saw."""

    def __init__(
        self,
        endpoints: Callable[[], list[str]],
        from_revision: int,
        seed: int,
        period: float = 2.0,
    ) -> None:
        super().__init__(name="watcher", daemon=True)
        self.endpoints = endpoints  # the members' endpoints now (they change)
        self.rng = random.Random(seed)
        self.period = period
        self.position = from_revision
        self.events: list[registry_pb2.Event] = []
        self.reconnects = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        client = Client(self.endpoints())
        try:
            while not self.stopping.is_set():
                endpoint = self.rng.choice(self.endpoints())
                if not self._follow(client, endpoint):
                    self.stopping.wait(0.1)  # that replica is down: do not spin
                self.reconnects += 1
        finally:
            client.close()

    def _follow(self, client: Client, endpoint: str) -> bool:
        """Read one connection's events; False when it failed before its deadline."""
        # Resume at the last revision seen and skip what was already delivered of it:
        # a connection may end in the middle of a revision's events.
        resume = self.position
        already = sum(1 for e in self.events[-64:] if e.revision == resume)
        stream = client.registry(endpoint).Watch(
            registry_pb2.WatchRequest(from_revision=resume, repository_prefix=REPOSITORY),
            timeout=self.period,
        )
        try:
            for event in stream:
                if event.revision == resume and already:
                    already -= 1
                    continue
                self.events.append(event)
                self.position = event.revision
                if self.stopping.is_set():
                    break
        except grpc.RpcError as error:
            return error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            stream.cancel()
        return True

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


def events_on(endpoint: str, from_revision: int, until: int, timeout: float = 30.0) -> list:
    """Every event of the workload's repository on one replica, up to revision `until`
    (what arrived within `timeout`: a shorter list then shows up as a violation)."""
    found = []
    with Client([endpoint]) as client:
        stream = client.registry(endpoint).Watch(
            registry_pb2.WatchRequest(from_revision=from_revision, repository_prefix=REPOSITORY),
            timeout=timeout,
        )
        try:
            for event in stream:
                if event.revision > until:
                    break
                found.append(event)
                if event.revision == until:
                    break
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        finally:
            stream.cancel()
    return found
