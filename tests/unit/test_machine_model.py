"""storage.machine.apply against a plain-Python model of the registry.

A hypothesis state machine builds requests (valid and not), turns them into commands
with storage.commands, and applies each to two real Stores: A, whose batch is committed
(or aborted and replayed, or the store reopened) at random points, and B, which commits
after every entry. After every step both must agree with each other and with the model
below, which is written from the OCI semantics, not from storage/registry.py.
"""

import json
import shutil
import tempfile
from dataclasses import dataclass, field

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from regraft.v1 import command_pb2, registry_pb2
from storage import commands, machine, registry, versions
from storage.db import Store
from storage.errors import InvalidArgument, NotFound
from storage.names import compute_digest

Result = command_pb2.Result
Kind = registry_pb2.EventKind
OK, NOT_FOUND, FAILED = Result.OK, Result.NOT_FOUND, Result.FAILED_PRECONDITION

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPES = ["application/vnd.oci.image.config.v1+json", "application/vnd.example.sbom"]
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
BLOB_TYPES = ["application/octet-stream", LAYER_TYPE]

REPOS = ["app", "app/web", "lib.x"]
BAD_REPOS = ["", "App", "app//web", "-app", "app/", "a" * 256, "app:1", "app web"]
TAGS = ["latest", "v1", "v1.0", "V2", "_x"]
BAD_TAGS = ["", ".hidden", "-x", "a" * 129, "has space", "x:y", "tag/slash"]
BLOBS = [compute_digest(b"blob-%d" % i) for i in range(4)] + [compute_digest(b"blob", "sha512")]
NEVER = compute_digest(b"never pushed")
BAD_DIGESTS = [
    "sha256:abc",
    "md5:" + "0" * 32,
    "sha256:" + "A" * 64,
    "sha256" + "0" * 64,
    "sha512:" + "0" * 64,
]
REQUEST_IDS = [""] * 9 + [f"req-{i}" for i in range(6)]


def _op(command: command_pb2.Command) -> tuple[str, bytes]:
    """What a request id stands for: the same operation with the same arguments."""
    name = command.WhichOneof("op")
    return name, getattr(command, name).SerializeToString(deterministic=True)


ACTORS = ["", "alice", "ci-bot"]
SIZES = [10, 20]


# -- the model ----------------------------------------------------------------------


@dataclass
class Repo:
    blobs: dict = field(default_factory=dict)  # digest -> (size, media_type, revision)
    manifests: dict = field(default_factory=dict)  # digest -> dict (see Model.put_manifest)
    tags: dict = field(default_factory=dict)  # tag -> digest


@dataclass
class Expect:
    code: int = OK
    oci_code: str = ""
    digest: str = ""
    previous_digest: str = ""
    deleted_tags: tuple = ()
    size: int | None = None
    media_type: str | None = None


class Model:
    """What the registry should hold. Each method changes it only when the command works."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.events: list[tuple] = []  # (revision, kind, repository, digest, tag, actor)
        # request id -> its first result and operation
        self.requests: dict[str, tuple[Result, tuple[str, bytes]]] = {}

    def fingerprint(self) -> str:
        """Everything replicated, in a canonical form: equal exactly when the state is."""
        repos = [
            (
                name,
                sorted(r.blobs.items()),
                sorted((d, m["revision"]) for d, m in r.manifests.items()),
                sorted(r.tags.items()),
            )
            for name, r in sorted(self.repos.items())
        ]
        return repr((repos, self.events, sorted(self.requests)))

    def _emit(self, rev, actor, kind, repo, digest, tag=""):
        self.events.append((rev, kind, repo, digest, tag, actor))

    def _link(self, rev, actor, repo, digest, size, media_type) -> Expect | None:
        existing = self.repos.get(repo, Repo()).blobs.get(digest)
        if existing is not None:
            if existing[0] != size:
                return Expect(FAILED, "SIZE_INVALID")
            return None
        self.repos.setdefault(repo, Repo()).blobs[digest] = (size, media_type, rev)
        self._emit(rev, actor, Kind.BLOB_LINK, repo, digest)
        return None

    def link(self, rev, actor, repo, digest, size, media_type) -> Expect:
        refused = self._link(rev, actor, repo, digest, size, media_type)
        return refused or Expect(digest=digest, size=size)

    def unlink(self, rev, actor, repo, digest) -> Expect:
        if repo not in self.repos:
            return Expect(NOT_FOUND, "NAME_UNKNOWN")
        if digest not in self.repos[repo].blobs:
            return Expect(NOT_FOUND, "BLOB_UNKNOWN")
        del self.repos[repo].blobs[digest]
        self._emit(rev, actor, Kind.BLOB_UNLINK, repo, digest)
        return Expect(digest=digest)

    def mount(self, rev, actor, source, repo, digest) -> Expect:
        blob = self.repos.get(source, Repo()).blobs.get(digest)
        if blob is None:
            return Expect(NOT_FOUND, "BLOB_UNKNOWN")
        refused = self._link(rev, actor, repo, digest, blob[0], blob[1])
        return refused or Expect(digest=digest, size=blob[0], media_type=blob[1])

    def _set_tag(self, rev, actor, repo, tag, digest) -> str:
        tags = self.repos[repo].tags
        previous = tags.get(tag, "")
        if previous != digest:
            tags[tag] = digest
            self._emit(rev, actor, Kind.TAG_SET, repo, digest, tag)
        return previous

    def put_manifest(self, rev, actor, repo, digest, tag, info: dict) -> Expect:
        have = self.repos.get(repo, Repo())
        if any(b not in have.blobs for b in info["blobs"]):
            return Expect(FAILED, "MANIFEST_BLOB_UNKNOWN")
        if any(m not in have.manifests for m in info["manifests"]):
            return Expect(FAILED, "MANIFEST_BLOB_UNKNOWN")
        r = self.repos.setdefault(repo, Repo())
        if digest not in r.manifests:
            r.manifests[digest] = {**info, "revision": rev}
            self._emit(rev, actor, Kind.MANIFEST_PUT, repo, digest)
        previous = self._set_tag(rev, actor, repo, tag, digest) if tag else ""
        return Expect(digest=digest, previous_digest=previous)

    def put_tag(self, rev, actor, repo, tag, digest, expected, must_not_exist) -> Expect:
        if repo not in self.repos:
            return Expect(NOT_FOUND, "NAME_UNKNOWN")
        r = self.repos[repo]
        if digest not in r.manifests:
            return Expect(NOT_FOUND, "MANIFEST_UNKNOWN")
        current = r.tags.get(tag, "")
        if (must_not_exist and current) or (expected and current != expected):
            return Expect(FAILED, "TAG_CONFLICT")
        previous = self._set_tag(rev, actor, repo, tag, digest)
        return Expect(digest=digest, previous_digest=previous)

    def delete_tag(self, rev, actor, repo, tag, expected) -> Expect:
        if repo not in self.repos:
            return Expect(NOT_FOUND, "NAME_UNKNOWN")
        r = self.repos[repo]
        if tag not in r.tags:
            return Expect(NOT_FOUND, "MANIFEST_UNKNOWN")
        if expected and r.tags[tag] != expected:
            return Expect(FAILED, "TAG_CONFLICT")
        digest = r.tags.pop(tag)
        self._emit(rev, actor, Kind.TAG_DELETE, repo, digest, tag)
        return Expect(digest=digest)

    def delete_manifest(self, rev, actor, repo, digest) -> Expect:
        if repo not in self.repos:
            return Expect(NOT_FOUND, "NAME_UNKNOWN")
        r = self.repos[repo]
        if digest not in r.manifests:
            return Expect(NOT_FOUND, "MANIFEST_UNKNOWN")
        doomed = sorted(t for t, d in r.tags.items() if d == digest)
        for tag in doomed:
            del r.tags[tag]
            self._emit(rev, actor, Kind.TAG_DELETE, repo, digest, tag)
        del r.manifests[digest]
        self._emit(rev, actor, Kind.MANIFEST_DELETE, repo, digest)
        return Expect(digest=digest, deleted_tags=tuple(doomed))


# -- documents ----------------------------------------------------------------------


def _descriptor(media_type: str, digest: str, size: int) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": size}


@st.composite
def documents(draw, here: list[str], known: list[str]):
    """(content, media type to send, what the model stores) for an image or an index.

    `here`: manifests in the target repository (an index's children must be there);
    `known`: every manifest digest seen so far, in any repository.
    """
    annotations = draw(
        st.sampled_from([None, {}, {"org.opencontainers.image.title": "t"}, {"k": "v", "a": ""}])
    )
    subject = draw(st.sampled_from(["", "", NEVER, BLOBS[0], *here, *known[:3]]))
    artifact = draw(st.sampled_from(["", "application/vnd.example.signature"]))
    if draw(st.integers(0, 3)) == 0:  # an index of manifests
        children = draw(st.lists(st.sampled_from([NEVER, *here, *here, *known[:3]]), max_size=3))
        media_type = OCI_INDEX
        doc = {"schemaVersion": 2, "manifests": [_descriptor(OCI_MANIFEST, c, 5) for c in children]}
        info = {"blobs": [], "manifests": list(dict.fromkeys(children))}
        artifact_type = artifact
    else:
        media_type = draw(st.sampled_from([OCI_MANIFEST, OCI_MANIFEST, DOCKER_MANIFEST]))
        config = draw(st.sampled_from(BLOBS))
        config_type = draw(st.sampled_from(CONFIG_TYPES))
        layers = draw(st.lists(st.sampled_from(BLOBS), max_size=2))
        doc = {
            "schemaVersion": 2,
            "config": _descriptor(config_type, config, 7),
            "layers": [_descriptor(LAYER_TYPE, d, 100) for d in layers],
        }
        info = {"blobs": list(dict.fromkeys([config, *layers])), "manifests": []}
        artifact_type = artifact or config_type
    declared = draw(st.booleans())
    if declared:
        doc["mediaType"] = media_type
    if subject:
        doc["subject"] = _descriptor(OCI_MANIFEST, subject, 3)
    if artifact:
        doc["artifactType"] = artifact
    if annotations is not None:
        doc["annotations"] = annotations
    content = json.dumps(doc, sort_keys=True).encode()
    send = media_type if not declared or draw(st.booleans()) else ""
    info.update(
        media_type=media_type,
        content=content,
        subject=subject,
        artifact_type=artifact_type,
        annotations=dict(annotations or {}),
    )
    return content, send, info


# -- the state machine --------------------------------------------------------------


def _maybe_bad(good: list[str], bad: list[str]):
    """Mostly a good value; one time in 16 one that must be refused before it is proposed."""
    return st.integers(0, 15).flatmap(
        lambda roll: st.sampled_from(bad) if roll == 0 else st.sampled_from(good)
    )


class RegistryMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="regraft-model-")
        self.path_a = f"{self.dir}/a"
        self.store_a = Store(self.path_a, map_size=64 << 20)
        self.store_b = Store(f"{self.dir}/b", map_size=64 << 20)
        self.batch_a = self.store_a.batch()
        self.model = Model()
        self.index = 0
        self.log: list[tuple[int, bytes, Result]] = []  # every applied entry
        self.pending: list[tuple[int, bytes, Result]] = []  # applied to A, not committed
        self.known: list[str] = []  # digests of every manifest document ever built
        self.upgraded = False  # the machine version raised to the latest (from 1)

    def teardown(self):
        self.batch_a.abort()
        self.store_a.close()
        self.store_b.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- applying -------------------------------------------------------------------

    def _hash_b(self) -> str:
        with self.store_b.read() as view:
            return view.state_hash

    def _apply(self, data: bytes, index: int) -> Result:
        result = machine.apply(self.batch_a, index, data)
        batch = self.store_b.batch()
        other = machine.apply(batch, index, data)
        batch.commit()
        assert result == other, "two stores applying the same entry disagree"
        return result

    def _propose(self, command: command_pb2.Command) -> Result:
        self.index += 1
        data = command.SerializeToString()
        result = self._apply(data, self.index)
        self.log.append((self.index, data, result))
        self.pending.append((self.index, data, result))
        return result

    def execute(self, build, expect):
        """Build a command (None: it must be refused) and check its outcome on the model.

        `expect(model, revision, actor)` returns the Expect and updates the model.
        """
        try:
            command = build()
        except InvalidArgument as e:
            assert e.field and e.message
            return None
        before, hash_before = self.model.fingerprint(), self._hash_b()
        rid = command.request_id
        if rid and rid in self.model.requests:
            first, first_op = self.model.requests[rid]
            result = self._propose(command)
            if _op(command) == first_op:
                assert result == first, "a retried request must get its first result"
                assert result.revision < self.index
            else:
                assert result.code == command_pb2.Result.INVALID_ARGUMENT, result
                assert rid in result.message and "different request" in result.message
            assert self._hash_b() == hash_before, "a retried or reused request changed the state"
            return result
        want = expect(self.model, self.index + 1, command.actor)
        result = self._propose(command)
        assert result.code == want.code, (result, want)
        assert result.oci_code == want.oci_code, (result, want)
        assert result.revision == self.index
        if want.code == OK:
            assert result.digest == want.digest
            assert result.previous_digest == want.previous_digest
            assert tuple(result.deleted_tags) == want.deleted_tags
            if want.size is not None:
                assert result.size == want.size
            if want.media_type is not None:
                assert result.media_type == want.media_type
        else:
            assert result.message
        if rid:
            self.model.requests[rid] = (result, _op(command))
        changed = self.model.fingerprint() != before
        hash_after = self._hash_b()
        assert (hash_after != hash_before) == changed, (
            f"state {'changed' if changed else 'did not change'} but the hash "
            f"{'did not' if hash_after == hash_before else 'did'}"
        )
        if result.code != OK and not rid:
            assert hash_after == hash_before, "a refused command changed the state hash"
        return result

    # -- rules: writes --------------------------------------------------------------

    @initialize(
        repo=st.sampled_from(REPOS),
        blobs=st.lists(st.sampled_from(BLOBS), min_size=1, max_size=4, unique=True),
    )
    def first_push(self, repo, blobs):
        """Start with a pushed image: a repository, blobs, a manifest and a tag."""
        for blob in blobs:
            self._link_blob(repo, blob, SIZES[0], LAYER_TYPE, "", "")
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(CONFIG_TYPES[0], blobs[0], 7),
            "layers": [_descriptor(LAYER_TYPE, d, 100) for d in blobs[1:]],
        }
        content = json.dumps(doc).encode()
        digest = compute_digest(content)
        self.known.append(digest)
        info = {
            "blobs": blobs,
            "manifests": [],
            "media_type": OCI_MANIFEST,
            "content": content,
            "subject": "",
            "artifact_type": CONFIG_TYPES[0],
            "annotations": {},
        }
        request = registry_pb2.PutManifestRequest(
            repository=repo, reference="latest", content=content
        )
        result = self.execute(
            lambda: commands.put_manifest(request),
            lambda m, rev, a: m.put_manifest(rev, a, repo, digest, "latest", info),
        )
        assert result.code == OK

    def _blobs(self, repo: str):
        """Mostly a blob linked to `repo`; sometimes any blob, or a malformed digest."""
        here = sorted(self.model.repos[repo].blobs) if repo in self.model.repos else []
        return st.integers(0, 15).flatmap(
            lambda roll: (
                st.sampled_from(BAD_DIGESTS)
                if roll == 0
                else st.sampled_from(here)
                if roll > 5 and here
                else st.sampled_from(BLOBS)
            )
        )

    @rule(
        repo=_maybe_bad(REPOS, BAD_REPOS),
        digest=_maybe_bad(BLOBS, [*BAD_DIGESTS, ""]),
        size=st.sampled_from(SIZES),
        media_type=st.sampled_from(BLOB_TYPES),
        rid=st.sampled_from(REQUEST_IDS),
        actor=st.sampled_from(ACTORS),
    )
    def link_blob(self, repo, digest, size, media_type, rid, actor):
        self._link_blob(repo, digest, size, media_type, rid, actor)

    def _link_blob(self, repo, digest, size, media_type, rid, actor):
        request = registry_pb2.LinkBlobRequest(
            repository=repo, digest=digest, size=size, media_type=media_type, request_id=rid
        )
        self.execute(
            lambda: commands.link_blob(request, actor),
            lambda m, rev, a: m.link(rev, a, repo, digest, size, media_type),
        )

    @rule(
        data=st.data(),
        repo=_maybe_bad(REPOS, BAD_REPOS),
        rid=st.sampled_from(REQUEST_IDS),
        actor=st.sampled_from(ACTORS),
    )
    def unlink_blob(self, data, repo, rid, actor):
        digest = data.draw(self._blobs(repo), label="digest")
        request = registry_pb2.UnlinkBlobRequest(repository=repo, digest=digest, request_id=rid)
        self.execute(
            lambda: commands.unlink_blob(request, actor),
            lambda m, rev, a: m.unlink(rev, a, repo, digest),
        )

    @rule(
        data=st.data(),
        source=_maybe_bad(REPOS, BAD_REPOS),
        repo=_maybe_bad(REPOS, BAD_REPOS),
        rid=st.sampled_from(REQUEST_IDS),
        actor=st.sampled_from(ACTORS),
    )
    def mount_blob(self, data, source, repo, rid, actor):
        digest = data.draw(self._blobs(source), label="digest")
        request = registry_pb2.MountBlobRequest(
            from_repository=source, repository=repo, digest=digest, request_id=rid
        )
        self.execute(
            lambda: commands.mount_blob(request, actor),
            lambda m, rev, a: m.mount(rev, a, source, repo, digest),
        )

    @rule(
        data=st.data(),
        repo=_maybe_bad(REPOS, BAD_REPOS),
        rid=st.sampled_from(REQUEST_IDS),
        actor=st.sampled_from(ACTORS),
        link_first=st.integers(0, 9).map(lambda roll: roll < 7),
    )
    def put_manifest(self, data, repo, rid, actor, link_first):
        here = sorted(self.model.repos[repo].manifests) if repo in self.model.repos else []
        content, media_type, info = data.draw(documents(here, self.known), label="document")
        digest = compute_digest(content)
        how = data.draw(
            st.sampled_from(
                ["tag"] * 8 + ["digest"] * 3 + ["sha512", "wrong digest", "bad tag", "junk"]
            ),
            label="reference",
        )
        tag = ""
        if how == "tag":
            tag = data.draw(st.sampled_from(TAGS))
            reference = tag
        elif how == "bad tag":
            reference = data.draw(st.sampled_from(BAD_TAGS))
        elif how == "digest":
            reference = digest
        elif how == "sha512":
            digest = reference = compute_digest(content, "sha512")
        elif how == "wrong digest":
            reference = compute_digest(content + b" ")
        else:  # not a manifest at all
            content, media_type = b'{"schemaVersion": 2, "mediaType": "text/plain"}', ""
            reference = "latest"
        valid = repo in REPOS and how in ("tag", "digest", "sha512")
        if valid and digest not in self.known:
            self.known.append(digest)
        if valid and link_first:
            # What a client does: upload (link) the blobs, then push the manifest.
            for blob in info["blobs"]:
                if blob not in self.model.repos.get(repo, Repo()).blobs:
                    self._link_blob(repo, blob, SIZES[0], LAYER_TYPE, "", actor)
        request = registry_pb2.PutManifestRequest(
            repository=repo,
            reference=reference,
            content=content,
            media_type=media_type,
            request_id=rid,
        )
        result = self.execute(
            lambda: commands.put_manifest(request, actor),
            lambda m, rev, a: m.put_manifest(rev, a, repo, digest, tag, info),
        )
        assert (result is not None) == valid, f"{how} {repo!r}: refused={result is None}"

    def _manifest_digests(self, repo: str, current: str = ""):
        """Mostly a manifest of `repo` (or what a tag points at); sometimes any manifest
        pushed anywhere, one never pushed, or a malformed digest."""
        here = sorted(self.model.repos[repo].manifests) if repo in self.model.repos else []
        here = here or self.known or [NEVER]
        weighted = [
            (1, st.sampled_from(BAD_DIGESTS)),
            (1, st.just(NEVER)),
            (3, st.sampled_from(self.known or [NEVER])),
            (7, st.sampled_from(here)),
            (4, st.just(current or NEVER)),
        ]
        choices = [strategy for weight, strategy in weighted for _ in range(weight)]
        return st.integers(0, len(choices) - 1).flatmap(lambda roll: choices[roll])

    def _current(self, repo: str, tag: str) -> str:
        return self.model.repos[repo].tags.get(tag, "") if repo in self.model.repos else ""

    def _tags(self, repo: str):
        """Mostly a tag that exists in `repo`; sometimes any tag, or an invalid one."""
        existing = sorted(self.model.repos[repo].tags) if repo in self.model.repos else []
        return st.integers(0, 15).flatmap(
            lambda roll: (
                st.sampled_from(BAD_TAGS)
                if roll == 0
                else st.sampled_from(existing)
                if roll > 7 and existing
                else st.sampled_from(TAGS)
            )
        )

    @rule(
        data=st.data(),
        repo=_maybe_bad(REPOS, BAD_REPOS),
        tag=_maybe_bad(TAGS, BAD_TAGS),
        condition=st.sampled_from(
            ["none"] * 4 + ["must_not_exist"] * 2 + ["expected"] * 3 + ["both"]
        ),
        rid=st.sampled_from(REQUEST_IDS),
        actor=st.sampled_from(ACTORS),
    )
    def put_tag(self, data, repo, tag, condition, rid, actor):
        current = self._current(repo, tag)
        digest = data.draw(self._manifest_digests(repo, current), label="digest")
        expected = ""
        if condition in ("expected", "both"):
            expected = data.draw(self._manifest_digests(repo, current), label="expected")
        must_not_exist = condition in ("must_not_exist", "both")
        request = registry_pb2.PutTagRequest(
            repository=repo,
            tag=tag,
            digest=digest,
            expected_digest=expected,
            must_not_exist=must_not_exist,
            request_id=rid,
        )
        result = self.execute(
            lambda: commands.put_tag(request, actor),
            lambda m, rev, a: m.put_tag(rev, a, repo, tag, digest, expected, must_not_exist),
        )
        valid = (
            repo in REPOS
            and tag in TAGS
            and digest not in BAD_DIGESTS
            and expected not in BAD_DIGESTS
            and condition != "both"
        )
        assert (result is not None) == valid

    @rule(
        data=st.data(),
        repo=_maybe_bad(REPOS, BAD_REPOS),
        conditional=st.booleans(),
        rid=st.sampled_from(REQUEST_IDS),
        actor=st.sampled_from(ACTORS),
    )
    def delete_tag(self, data, repo, conditional, rid, actor):
        tag = data.draw(self._tags(repo), label="tag")
        expected = ""
        if conditional:
            current = self._current(repo, tag)
            expected = data.draw(self._manifest_digests(repo, current), label="expected")
        request = registry_pb2.DeleteTagRequest(
            repository=repo, tag=tag, expected_digest=expected, request_id=rid
        )
        self.execute(
            lambda: commands.delete_tag(request, actor),
            lambda m, rev, a: m.delete_tag(rev, a, repo, tag, expected),
        )

    @rule(
        data=st.data(),
        repo=_maybe_bad(REPOS, BAD_REPOS),
        rid=st.sampled_from(REQUEST_IDS),
        actor=st.sampled_from(ACTORS),
    )
    def delete_manifest(self, data, repo, rid, actor):
        digest = data.draw(self._manifest_digests(repo), label="digest")
        request = registry_pb2.DeleteManifestRequest(repository=repo, digest=digest, request_id=rid)
        self.execute(
            lambda: commands.delete_manifest(request, actor),
            lambda m, rev, a: m.delete_manifest(rev, a, repo, digest),
        )

    @precondition(lambda self: not self.upgraded)
    @rule()
    def raise_machine_version(self):
        """A rolling upgrade ends: manifests put from here on are indexed the newest way
        (referrers carry their descriptors), those before stay as they were, and reads
        must not tell them apart."""
        result = self._propose(commands.set_machine_version(versions.LATEST))
        assert result.code == OK, result
        self.model._emit(self.index, "", Kind.CLUSTER_CHANGE, "", "")
        self.upgraded = True

    @rule(kind=st.sampled_from(["barrier", "no operation", "undecodable"]))
    def changes_nothing(self, kind):
        """Entries that take an index and change nothing else."""
        before, hash_before = self.model.fingerprint(), self._hash_b()
        if kind == "barrier":
            data, code = commands.barrier().SerializeToString(), OK
        elif kind == "no operation":
            data = command_pb2.Command(request_id="", actor="x").SerializeToString()
            code = Result.INVALID_ARGUMENT
        else:
            data, code = b"\xff\xff\xff not a command", Result.INVALID_ARGUMENT
        self.index += 1
        result = self._apply(data, self.index)
        self.log.append((self.index, data, result))
        self.pending.append((self.index, data, result))
        assert (result.code, result.revision) == (code, self.index)
        assert self.model.fingerprint() == before
        assert self._hash_b() == hash_before

    @precondition(lambda self: self.model.requests)
    @rule(data=st.data())
    def retry_request(self, data):
        """Re-propose an earlier command as a client retry would: same bytes, new index."""
        candidates = []
        for _, raw, _ in self.log:
            try:
                command = command_pb2.Command.FromString(raw)
            except DecodeError:
                continue
            first = self.model.requests.get(command.request_id)
            if first and command.WhichOneof("op") and first[1] == _op(command):
                candidates.append(command)
        command = data.draw(st.sampled_from(candidates), label="retried")
        first, _ = self.model.requests[command.request_id]
        before, hash_before = self.model.fingerprint(), self._hash_b()
        result = self._propose(command)
        assert result == first
        assert result.revision < self.index
        assert self._hash_b() == hash_before
        assert self.model.fingerprint() == before

    @precondition(lambda self: self.log)
    @rule(data=st.data())
    def replay_old_entry(self, data):
        """Raft replays entries after a restart: at or below the revision they change nothing."""
        index, _, _ = data.draw(st.sampled_from(self.log), label="entry")
        payload = data.draw(
            st.sampled_from([entry[1] for entry in self.log] + [b"\xff\xff"]), label="data"
        )
        before, hash_before = self.model.fingerprint(), self._hash_b()
        result = self._apply(payload, index)
        assert result.code == command_pb2.Result.OUTCOME_UNKNOWN
        assert str(index) in result.message
        assert result.revision == self.index
        assert self.batch_a.revision == self.index
        assert self._hash_b() == hash_before
        assert self.model.fingerprint() == before

    # -- rules: batches and restarts ------------------------------------------------

    @rule()
    def commit_a(self):
        pending_hash = self.batch_a.state_hash
        self.batch_a.commit()
        self.batch_a = self.store_a.batch()
        self.pending = []
        with self.store_a.read() as view:
            assert view.state_hash == pending_hash == self._hash_b()
            assert view.revision == self.index

    @rule()
    def abort_and_replay_a(self):
        """What the Raft adapter does after an LMDB error: abort, then apply again."""
        self.batch_a.abort()
        self.batch_a = self.store_a.batch()
        for index, data, result in self.pending:
            assert machine.apply(self.batch_a, index, data) == result

    @rule()
    def reopen_a(self):
        self.batch_a.commit()
        self.pending = []
        self.store_a.close()
        self.store_a = Store(self.path_a, map_size=64 << 20)
        self.batch_a = self.store_a.batch()

    # -- rules: reads ---------------------------------------------------------------

    @rule(
        repo=st.sampled_from([*REPOS, "nope"]),
        n=st.integers(1, 4),
        last=st.sampled_from(["", *TAGS, "a", "v", "zzz", "0"]),
        which=st.integers(0, 3),
    )
    def page_tags(self, repo, n, last, which):
        """A page of a repository's tags: all of them (`which` 0), those of a manifest
        none points at (1), or those of one of the manifests they point at."""
        with self.store_b.read() as view:
            if repo not in self.model.repos:
                with pytest.raises(NotFound):
                    registry.list_tags(view, repo, n, last)
                return
            tags = self.model.repos[repo].tags
            choices = ["", NEVER, *sorted(set(tags.values()))]
            digest = choices[min(which, len(choices) - 1)]
            rest = sorted(t for t in tags if t > last and (not digest or tags[t] == digest))
            want = (rest[:n], len(rest) > n)
            assert registry.list_tags(view, repo, n, last, digest) == want
            assert registry.list_tags(self.batch_a, repo, n, last, digest) == want

    @rule(n=st.integers(1, 3), last=st.sampled_from(["", *REPOS, "b"]))
    def page_repositories(self, n, last):
        rest = sorted(r for r in self.model.repos if r > last)
        with self.store_b.read() as view:
            assert registry.list_repositories(view, n, last) == (rest[:n], len(rest) > n)

    @rule(
        since=st.integers(0, 50),
        prefix=st.sampled_from(["", "app", "app/", "lib", "x"]),
        limit=st.integers(1, 4),
    )
    def watch(self, since, prefix, limit):
        want = [e for e in self.model.events if e[0] >= since and e[2].startswith(prefix)]
        got, position, places = [], since, {}
        with self.store_b.read() as view:
            while position <= self.index:
                page, position = registry.events(view, position, prefix, limit)
                got += [(e.revision, e.kind, e.repository, e.digest, e.tag, e.actor) for e in page]
                for e in page:
                    places.setdefault(e.revision, []).append(e.sequence)
            assert position == max(since, self.index + 1)  # never behind what was asked
        assert got == want
        # Each event's place in its revision, for a consumer that resumes inside one.
        for sequences in places.values():
            assert sequences == sorted(set(sequences))
            assert prefix or sequences == list(range(len(sequences)))

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def revision_is_the_last_index(self):
        assert self.batch_a.revision == self.index
        with self.store_b.read() as view:
            assert view.revision == self.index

    @invariant()
    def stores_agree(self):
        """Different batch boundaries, same entries: the same state hash."""
        assert self.batch_a.state_hash == self._hash_b()

    @invariant()
    def reads_match_the_model(self):
        with self.store_b.read() as view:
            self._check_reads(view)
        self._check_reads(self.batch_a)

    def _check_reads(self, view):
        model = self.model
        assert registry.list_repositories(view, 100, "") == (sorted(model.repos), False)
        for name in REPOS:
            repo = model.repos.get(name)
            if repo is None:
                with pytest.raises(NotFound):
                    registry.get_manifest(view, name, "latest", False)
                assert registry.get_referrers(view, name, NEVER, "", 10) == ([], False, "")
                continue
            assert registry.list_tags(view, name, 100, "") == (sorted(repo.tags), False)
            for tag in TAGS:
                if tag in repo.tags:
                    digest, record = registry.get_manifest(view, name, tag, False)
                    assert digest == repo.tags[tag]
                    self._check_record(record, repo.manifests[digest])
                else:
                    with pytest.raises(NotFound):
                        registry.get_manifest(view, name, tag, False)
            for digest in [NEVER, *self.known]:
                if digest in repo.manifests:
                    found, record = registry.get_manifest(view, name, digest, True)
                    assert found == digest
                    self._check_record(record, repo.manifests[digest])
                else:
                    with pytest.raises(NotFound):
                        registry.get_manifest(view, name, digest, True)
            for digest in BLOBS:
                if digest in repo.blobs:
                    blob = registry.stat_blob(view, name, digest)
                    assert (blob.size, blob.media_type, blob.revision) == repo.blobs[digest]
                else:
                    with pytest.raises(NotFound):
                        registry.stat_blob(view, name, digest)
            for subject in [NEVER, BLOBS[0], *self.known[:4]]:
                self._check_referrers(view, name, subject, repo)

    def _check_record(self, record, info):
        assert record.media_type == info["media_type"]
        assert record.content == info["content"]
        assert record.subject == info["subject"]
        assert record.artifact_type == info["artifact_type"]
        assert dict(record.annotations) == info["annotations"]
        assert list(record.blobs) == info["blobs"]
        assert list(record.manifests) == info["manifests"]
        assert record.revision == info["revision"]

    def _check_referrers(self, view, name, subject, repo):
        want = sorted(
            (digest, m["media_type"], len(m["content"]), m["artifact_type"], m["annotations"])
            for digest, m in repo.manifests.items()
            if m["subject"] == subject
        )
        got = [
            (d.digest, d.media_type, d.size, d.artifact_type, dict(d.annotations))
            for d in _all_referrers(view, name, subject, "", 1000)
        ]
        assert got == want
        assert [d.digest for d in _all_referrers(view, name, subject, "", 2)] == [
            w[0] for w in want
        ]
        for artifact_type in {w[3] for w in want} - {""}:  # "" asks for no filter
            filtered = _all_referrers(view, name, subject, artifact_type, 1)
            assert [d.digest for d in filtered] == [w[0] for w in want if w[3] == artifact_type]


def _all_referrers(view, name: str, subject: str, artifact_type: str, n: int) -> list:
    """Every referrer, page after page of at most n."""
    found, last = [], ""
    while True:
        page, more, covered = registry.get_referrers(view, name, subject, artifact_type, n, last)
        found += page
        if not more:
            return found
        # A page may end early past REFERRERS_PAGE_BYTES, REFERRERS_EXAMINED or
        # REFERRERS_READ_BYTES, none of which this model's few referrers reach.
        assert len(page) == n
        assert covered > last
        last = covered


TestRegistryMachine = RegistryMachine.TestCase
TestRegistryMachine.settings = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
