"""Focused tests of storage/: key sizes, listing order, history, snapshots, format, growth."""

import json
import os
import tempfile

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regraft.v1 import command_pb2, record_pb2, registry_pb2
from storage import commands, db, keys, machine, registry, snapshot, versions
from storage.db import FormatError, Store, TornStateError
from storage.errors import InvalidArgument, NotFound
from storage.manifest import OCI_INDEX, OCI_MANIFEST
from storage.names import compute_digest
from storage.snapshot import SnapshotError

OK = command_pb2.Result.OK
Kind = registry_pb2.EventKind
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
SMALL_MAP = 64 << 20

LONGEST_REPO = "/".join(["r" * 63, "e" * 63, "p" * 63, "o" * 63])  # 255 characters
LONGEST_TAG = "T" + "a1._-" * 25 + "zz"  # 128 characters


class Replica:
    """A Store and the next log index: applies commands one batch at a time."""

    def __init__(self, path: str, map_size: int = SMALL_MAP) -> None:
        self.store = Store(path, map_size=map_size)
        self.index = self.store.revision

    def apply(self, *cmds: command_pb2.Command) -> list[command_pb2.Result]:
        batch = self.store.batch()
        results = []
        for command in cmds:
            self.index += 1
            results.append(machine.apply(batch, self.index, command.SerializeToString()))
        batch.commit()
        return results

    def ok(self, *cmds: command_pb2.Command) -> list[command_pb2.Result]:
        results = self.apply(*cmds)
        for result in results:
            assert result.code == OK, result
        return results

    def state_hash(self) -> str:
        with self.store.read() as view:
            return view.state_hash


@pytest.fixture
def replica(tmp_path):
    r = Replica(str(tmp_path / "db"))
    yield r
    r.store.close()


@pytest.fixture
def make_replica(tmp_path):
    made = []

    def make(name: str, map_size: int = SMALL_MAP) -> Replica:
        r = Replica(str(tmp_path / name), map_size)
        made.append(r)
        return r

    yield make
    for r in made:
        r.store.close()


def link(repo: str, digest: str, size: int = 10, media_type: str = LAYER_TYPE, **kw):
    return commands.link_blob(
        registry_pb2.LinkBlobRequest(
            repository=repo, digest=digest, size=size, media_type=media_type, **kw
        )
    )


def image(config: str, layers=(), subject: str = "", **extra) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG_TYPE, "digest": config, "size": 2},
        "layers": [{"mediaType": LAYER_TYPE, "digest": d, "size": 3} for d in layers],
        **extra,
    }
    if subject:
        doc["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 4}
    return json.dumps(doc, sort_keys=True).encode()


def put_manifest(repo: str, reference: str, content: bytes, **kw):
    return commands.put_manifest(
        registry_pb2.PutManifestRequest(repository=repo, reference=reference, content=content, **kw)
    )


def put_tag(repo: str, tag: str, digest: str, **kw):
    return commands.put_tag(
        registry_pb2.PutTagRequest(repository=repo, tag=tag, digest=digest, **kw)
    )


def delete_manifest(repo: str, digest: str):
    return commands.delete_manifest(
        registry_pb2.DeleteManifestRequest(repository=repo, digest=digest)
    )


def all_events(view) -> list[registry_pb2.Event]:
    found, _ = registry.events(view, 0, "", 1 << 30)
    return found


# -- keys ---------------------------------------------------------------------------


def test_a_blob_size_past_int64_is_refused():
    """A descriptor's size is an int64 (OCI image spec), and manifests refuse more;
    LinkBlob took up to 2**64 - 1."""
    digest = compute_digest(b"blob")
    with pytest.raises(InvalidArgument) as refused:
        link("acme/app", digest, 2**63)
    assert refused.value.field == "size" and "9223372036854775807" in str(refused.value)
    assert link("acme/app", digest, 2**63 - 1).link_blob.size == 2**63 - 1


def test_longest_names_make_keys_under_the_lmdb_limit(replica):
    assert len(LONGEST_REPO) == 255
    assert len(LONGEST_TAG) == 128
    blob = compute_digest(b"a layer", "sha512")
    config = compute_digest(b"a config", "sha512")
    assert len(blob) == len("sha512:") + 128
    content = image(config, [blob])
    digest = compute_digest(content, "sha512")
    referrer = image(config, subject=digest, annotations={"kind": "signature"})
    referrer_digest = compute_digest(referrer, "sha512")

    # The longest key of each kind, built the way the store builds it.
    rid = keys.repo_id(2**64 - 1)
    built = [
        keys.repository(LONGEST_REPO),
        keys.member(rid, LONGEST_TAG),
        keys.member(rid, digest),
        keys.pair(rid, digest, LONGEST_TAG),
        keys.pair(rid, digest, referrer_digest),
        keys.request_log(2**64 - 1, "r" * commands.MAX_REQUEST_ID_LENGTH),
    ]
    assert replica.store.env.max_key_size() == keys.MAX_KEY_BYTES == 511
    for key in built:
        assert len(key) <= keys.MAX_KEY_BYTES, (len(key), key[:40])

    # And LMDB takes them: every kind of record, under the longest names.
    results = replica.ok(
        link(LONGEST_REPO, blob, 100),
        link(LONGEST_REPO, config, 20),
        put_manifest(LONGEST_REPO, digest, content, request_id="q" * 128),
        put_tag(LONGEST_REPO, LONGEST_TAG, digest),
        put_manifest(LONGEST_REPO, referrer_digest, referrer),
        put_tag(LONGEST_REPO, LONGEST_TAG[:-1] + "2", referrer_digest),
    )
    assert results[2].digest == digest
    assert results[4].digest == referrer_digest
    with replica.store.read() as view:
        assert registry.list_repositories(view, 10, "") == ([LONGEST_REPO], False)
        tags, more = registry.list_tags(view, LONGEST_REPO, 10, "")
        assert (tags, more) == (sorted([LONGEST_TAG, LONGEST_TAG[:-1] + "2"]), False)
        found, record = registry.get_manifest(view, LONGEST_REPO, LONGEST_TAG, False)
        assert found == digest and record.content == content
        assert list(record.blobs) == [config, blob]
        referrers, more, _ = registry.get_referrers(view, LONGEST_REPO, digest, "", 10)
        assert [(d.digest, d.size) for d in referrers] == [(referrer_digest, len(referrer))]
        assert not more
        assert registry.stat_blob(view, LONGEST_REPO, blob).size == 100
    # Deleting walks the (digest, tag) and (subject, referrer) keys too.
    deleted = replica.ok(delete_manifest(LONGEST_REPO, digest))[0]
    assert list(deleted.deleted_tags) == [LONGEST_TAG]
    with replica.store.read() as view:
        assert registry.list_tags(view, LONGEST_REPO, 10, "") == ([LONGEST_TAG[:-1] + "2"], False)


# -- listing ------------------------------------------------------------------------

TAG_ALPHABET = "aAzZ09_.-"
tag_names = st.text(TAG_ALPHABET, min_size=1, max_size=6).filter(lambda t: t[0] not in ".-")


def test_tags_are_listed_in_lexical_order(replica):
    config = compute_digest(b"config")
    content = image(config)
    tags = ["v1", "V1", "latest", "10", "9", "_x", "a-b", "a.b", "a_b", "ab", "a", "Z"]
    replica.ok(link("repo", config), *[put_manifest("repo", t, content) for t in tags])
    # A neighbouring repository's tags never show up.
    replica.ok(link("repo2", config), put_manifest("repo2", "0", content))
    replica.ok(link("rep", config), put_manifest("rep", "zzz", content))
    expected = [
        "10", "9", "V1", "Z", "_x", "a", "a-b", "a.b", "a_b", "ab", "latest", "v1",
    ]  # fmt: skip
    with replica.store.read() as view:
        assert registry.list_tags(view, "repo", 100, "") == (expected, False)
        # Pages of 5: `last` is exclusive, and `more` says whether another page follows.
        assert registry.list_tags(view, "repo", 5, "") == (expected[:5], True)
        assert registry.list_tags(view, "repo", 5, "_x") == (expected[5:10], True)
        assert registry.list_tags(view, "repo", 5, "ab") == (["latest", "v1"], False)
        assert registry.list_tags(view, "repo", 2, "latest") == (["v1"], False)
        assert registry.list_tags(view, "repo", 2, "v1") == ([], False)
        # `last` need not be an existing tag.
        assert registry.list_tags(view, "repo", 3, "a0") == (["a_b", "ab", "latest"], True)
        assert registry.list_tags(view, "repo", 12, "") == (expected, False)
        assert registry.list_tags(view, "repo", 11, "") == (expected[:11], True)
        with pytest.raises(NotFound) as caught:
            registry.list_tags(view, "nope", 10, "")
        assert caught.value.oci_code == "NAME_UNKNOWN"
        assert registry.list_repositories(view, 100, "") == (["rep", "repo", "repo2"], False)
        assert registry.list_repositories(view, 1, "rep") == (["repo"], True)
        assert registry.list_repositories(view, 1, "repo") == (["repo2"], False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tags=st.sets(tag_names, max_size=12),
    other=st.sets(tag_names, max_size=3),
    n=st.integers(1, 5),
    last=st.one_of(st.just(""), tag_names),
)
def test_tag_paging_matches_a_sorted_list(tags, other, n, last):
    with tempfile.TemporaryDirectory() as tmp:
        r = Replica(tmp)
        try:
            config = compute_digest(b"config")
            content = image(config)
            r.ok(link("a/b", config), *[put_manifest("a/b", t, content) for t in sorted(tags)])
            r.ok(link("a/c", config), *[put_manifest("a/c", t, content) for t in sorted(other)])
            expected = sorted(tags)
            rest = [t for t in expected if t > last]
            with r.store.read() as view:
                assert registry.list_tags(view, "a/b", n, last) == (rest[:n], len(rest) > n)
                # Walking every page from the start yields every tag once, in order.
                walked, cursor, more = [], "", True
                while more:
                    page, more = registry.list_tags(view, "a/b", n, cursor)
                    assert len(page) <= n
                    walked += page
                    if page:
                        cursor = page[-1]
                assert walked == expected
        finally:
            r.store.close()


# -- history ------------------------------------------------------------------------


def _history(replica: Replica) -> dict[int, list[tuple]]:
    """Apply a history with revisions of many events; return what each revision emitted."""
    config = compute_digest(b"cfg")
    content = image(config)
    digest = compute_digest(content)
    expected: dict[int, list[tuple]] = {}
    for repo in ("team/api", "team/web", "other"):
        start = replica.index
        replica.ok(link(repo, config), put_manifest(repo, "v0", content))
        expected[start + 1] = [(Kind.BLOB_LINK, repo, config, "")]
        expected[start + 2] = [
            (Kind.MANIFEST_PUT, repo, digest, ""),
            (Kind.TAG_SET, repo, digest, "v0"),
        ]
        tags = [f"t{i}" for i in range(4)]
        replica.ok(*[put_tag(repo, t, digest) for t in tags])
        for i, t in enumerate(tags):
            expected[start + 3 + i] = [(Kind.TAG_SET, repo, digest, t)]
        replica.ok(delete_manifest(repo, digest))
        expected[replica.index] = [
            *[(Kind.TAG_DELETE, repo, digest, t) for t in sorted(["v0", *tags])],
            (Kind.MANIFEST_DELETE, repo, digest, ""),
        ]
    return expected


def _flatten(expected: dict[int, list[tuple]], since: int, prefix: str) -> list[tuple]:
    return [
        (revision, *event)
        for revision in sorted(expected)
        if revision >= since
        for event in expected[revision]
        if event[1].startswith(prefix)
    ]


def _as_tuples(events) -> list[tuple]:
    return [(e.revision, e.kind, e.repository, e.digest, e.tag) for e in events]


@pytest.mark.parametrize("prefix", ["", "team/", "team/web", "other", "nothing"])
@pytest.mark.parametrize("limit", [1, 2, 3, 5, 100])
def test_event_pages_never_split_a_revision(replica, prefix, limit):
    expected = _history(replica)
    with replica.store.read() as view:
        for since in (0, 1, 7, replica.index, replica.index + 1):
            want = _flatten(expected, since, prefix)
            position, pages = since, []
            while position <= view.revision:
                page, position = registry.events(view, position, prefix, limit)
                if page:
                    pages.append(_as_tuples(page))
            assert position == view.revision + 1
            assert [e for page in pages for e in page] == want
            revisions_seen = [sorted({e[0] for e in page}) for page in pages]
            flat = [r for revs in revisions_seen for r in revs]
            assert len(flat) == len(set(flat)), f"a revision was split: {revisions_seen}"
            for page in pages:
                # A page stops at the first revision boundary after `limit` events.
                last_revision = page[-1][0]
                before_last = [e for e in page if e[0] != last_revision]
                assert len(before_last) < limit
                assert all(e[2].startswith(prefix) for e in page)


def test_an_event_page_reads_a_bounded_number_of_events(replica):
    """A prefix that matches nothing, over a long history, costs pages of bounded work
    (each empty, each moving on), not one read of the whole history."""
    _history(replica)
    with replica.store.read() as view:
        total = len(registry.events(view, 0, "", 1 << 30)[0])
        assert total > registry.READ_PER_EVENT + 10
        pages, position = 0, 0
        while position <= view.revision:
            page, following = registry.events(view, position, "nothing", 1)
            assert page == [] and following > position
            read = len(registry.events(view, position, "", 1 << 30)[0]) - len(
                registry.events(view, following, "", 1 << 30)[0]
            )
            # Never splitting a revision: up to the events of one more revision.
            assert read <= registry.READ_PER_EVENT + 10
            pages, position = pages + 1, following
        assert pages > 1


def test_event_position_never_moves_backwards(replica):
    """Asking for revisions that do not exist yet waits for them: nothing older comes."""
    _history(replica)
    ahead = replica.index + 10
    with replica.store.read() as view:
        assert registry.events(view, ahead, "", 5) == ([], ahead)
        assert registry.events(view, replica.index + 1, "", 5) == ([], replica.index + 1)
        found, position = registry.events(view, replica.index, "", 5)
        assert [e.revision for e in found] == [replica.index] * len(found) and found
        assert position == replica.index + 1


def test_events_carry_the_actor(replica):
    config = compute_digest(b"cfg")
    replica.ok(commands.link_blob(
        registry_pb2.LinkBlobRequest(repository="x", digest=config, size=1), actor="alice"
    ))  # fmt: skip
    with replica.store.read() as view:
        (event,) = all_events(view)
    assert (event.actor, event.revision, event.kind) == ("alice", 1, Kind.BLOB_LINK)


@pytest.mark.parametrize("every", [1, 4, 32])
def test_event_pruning_sets_the_floor(replica, monkeypatch, every):
    monkeypatch.setattr(registry, "EVENT_RETENTION", 5)
    monkeypatch.setattr(machine, "PRUNE_EVERY", every)
    blobs = [compute_digest(b"%d" % i) for i in range(70)]
    for i, blob in enumerate(blobs):
        replica.ok(link("repo", blob))
        with replica.store.read() as view:
            floor = registry.events_floor(view)
            revisions = [e.revision for e in all_events(view)]
        applied = i + 1
        # Pruning runs at every `every`-th index and keeps the last 5 revisions.
        pruned_at = applied - applied % every
        assert floor == max(0, pruned_at - 5)
        assert revisions == list(range(max(1, floor), applied + 1))
    with replica.store.read() as view:
        assert [e.digest for e in all_events(view)] == blobs[floor - 1 :]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bursts=st.lists(st.integers(0, 25), min_size=1, max_size=5),
    retention=st.integers(1, 8),
    every=st.integers(1, 5),
    most=st.integers(1, 20),
)
def test_event_history_is_complete_from_the_floor(bursts, retention, every, most):
    """Pruning is bounded per entry, so a revision with many events (deleting a manifest
    with many tags) may be pruned over several entries: meanwhile, it is not history."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "EVENT_RETENTION", retention)
        patch.setattr(machine, "PRUNE_EVERY", every)
        patch.setattr(machine, "PRUNE_BATCH", most)
        r = Replica(tmp)
        emitted: dict[int, int] = {}
        previous_floor = 0

        def check():
            nonlocal previous_floor
            with r.store.read() as view:
                floor = registry.events_floor(view)
                counts: dict[int, int] = {}
                for event in all_events(view):
                    counts[event.revision] = counts.get(event.revision, 0) + 1
            assert previous_floor <= floor <= max(0, r.index - retention)
            previous_floor = floor
            for revision, count in emitted.items():
                if revision >= floor:
                    assert counts.get(revision, 0) == count, (
                        f"events_floor is {floor}, but revision {revision} has "
                        f"{counts.get(revision, 0)} of its {count} events"
                    )

        try:
            config = compute_digest(b"cfg")
            r.ok(link("repo", config))
            emitted[r.index] = 1
            for n, tags in enumerate(bursts):
                content = image(config, annotations={"n": str(n)})
                digest = compute_digest(content)
                r.ok(put_manifest("repo", "v", content))
                emitted[r.index] = 2  # the manifest, and tag "v" moving to it
                for i in range(tags):
                    r.ok(put_tag("repo", f"t{i:02}", digest))
                    emitted[r.index] = 1
                    check()
                r.ok(delete_manifest("repo", digest))
                emitted[r.index] = tags + 2  # its tags, "v", then the manifest
                check()
            # Fillers: one event per entry. Pruning removes up to `most` events every
            # `every` entries, so when most > every the backlog drains.
            backlog = sum(emitted.values())
            drains = most > every
            fillers = retention + every * (backlog // (most - every) + 3) if drains else 20
            for i in range(fillers):
                r.ok(link("filler", compute_digest(b"f%d" % i)))
                emitted[r.index] = 1
                check()
            if drains:
                # Long after the bursts, everything before the window is gone.
                with r.store.read() as view:
                    oldest = min(e.revision for e in all_events(view))
                assert oldest > r.index - retention - every
        finally:
            r.store.close()


# -- snapshots ----------------------------------------------------------------------


def _populate(replica: Replica, repo: str = "library/app", tags=("v1", "v2")) -> str:
    config = compute_digest(b"config")
    layer = compute_digest(b"layer")
    content = image(config, [layer])
    replica.ok(link(repo, config), link(repo, layer, 1234))
    replica.ok(*[put_manifest(repo, t, content, request_id=f"{repo}-{t}") for t in tags])
    return compute_digest(content)


def _dump(store: Store) -> dict:
    """Everything a reader can see, for comparing two stores."""
    with store.read() as view:
        out = {"revision": view.revision, "hash": view.state_hash}
        out["repos"] = registry.list_repositories(view, 1000, "")
        out["tags"] = {r: registry.list_tags(view, r, 1000, "") for r in out["repos"][0]}
        out["events"] = _as_tuples(all_events(view))
        out["floor"] = registry.events_floor(view)
    return out


def _snapshot(replica: Replica, path: str) -> dict:
    with replica.store.read() as view:
        return snapshot.write(replica.store, view, path, {"raft_index": 7, "nodes": ["a", "b"]})


def test_snapshot_round_trip(make_replica, tmp_path):
    source = make_replica("source")
    _populate(source)
    path = str(tmp_path / "snap")
    header = _snapshot(source, path)
    assert header["revision"] == source.index == 4
    assert header["state_hash"] == source.state_hash() != "0" * 64
    assert (header["raft_index"], header["nodes"]) == (7, ["a", "b"])
    read, start, length = snapshot.read_header(path)
    assert read == header
    assert start + length + 40 == os.path.getsize(path)

    target = make_replica("target")
    target.ok(link("unrelated", compute_digest(b"x")))  # older state, to be replaced
    assert snapshot.install(target.store, path) == (header, True)
    assert _dump(target.store) == _dump(source.store)
    with target.store.read() as view:
        assert "unrelated" not in registry.list_repositories(view, 100, "")[0]

    # The installed state goes on like the source: same commands, same hash.
    more = [link("library/app", compute_digest(b"new"), 5)]
    target.index = target.store.revision
    a, b = source.apply(*more), target.apply(*more)
    assert a == b
    assert target.state_hash() == source.state_hash()
    # Request ids came along: a retried request gets its first result, changing nothing.
    retry = put_manifest("library/app", "v1", image(compute_digest(b"config"),
                         [compute_digest(b"layer")]), request_id="library/app-v1")  # fmt: skip
    before = target.state_hash()
    (again,) = target.apply(retry)
    assert again.revision == 3 and again.code == OK
    assert target.state_hash() == before


def _damaged_copies(path: str, tmp_path) -> list[tuple[str, str]]:
    with open(path, "rb") as f:
        data = f.read()
    header_end = len(snapshot.MAGIC) + 4 + int.from_bytes(data[16:20], "little")
    cases = {
        "truncated by one": data[:-1],
        "truncated in the middle": data[: len(data) // 2],
        "cut to almost nothing": data[:10],
        "empty": b"",
    }
    for name, offset in {
        "magic": 3,
        "header length": 17,
        "header": header_end - 5,
        "database": header_end + 100,
        "database end": len(data) - 41,
        "trailer length": len(data) - 38,
        "trailer checksum": len(data) - 1,
    }.items():
        flipped = bytearray(data)
        flipped[offset] ^= 0x01
        cases[f"flipped byte in {name}"] = bytes(flipped)
    out = []
    for i, (name, content) in enumerate(cases.items()):
        damaged = str(tmp_path / f"damaged-{i}")
        with open(damaged, "wb") as f:
            f.write(content)
        out.append((name, damaged))
    return out


def test_damaged_snapshots_are_refused_and_change_nothing(make_replica, tmp_path):
    source = make_replica("source")
    _populate(source)
    path = str(tmp_path / "snap")
    _snapshot(source, path)
    target = make_replica("target")
    target.ok(link("mine", compute_digest(b"x")))
    before = _dump(target.store)
    for name, damaged in _damaged_copies(path, tmp_path):
        with pytest.raises(SnapshotError) as caught:
            snapshot.install(target.store, damaged)
        message = str(caught.value)
        assert message.startswith(damaged + ": "), (name, message)
        assert any(
            words in message
            for words in ("truncated or corrupt", "too short", "bad magic", "inconsistent lengths")
        ), (name, message)
        assert _dump(target.store) == before, name
    with pytest.raises(SnapshotError, match="no such file"):
        snapshot.install(target.store, str(tmp_path / "missing"))
    # The undamaged file still installs.
    assert snapshot.install(target.store, path)[1] is True
    assert _dump(target.store) == _dump(source.store)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_any_flipped_byte_is_detected(data):
    with tempfile.TemporaryDirectory() as tmp:
        r = Replica(os.path.join(tmp, "db"))
        try:
            _populate(r)
            path = os.path.join(tmp, "snap")
            _snapshot(r, path)
            with open(path, "rb") as f:
                content = bytearray(f.read())
            offset = data.draw(st.integers(0, len(content) - 1), label="offset")
            content[offset] ^= data.draw(st.integers(1, 255), label="xor")
            with open(path, "wb") as f:
                f.write(content)
            with pytest.raises(SnapshotError):
                snapshot.read_header(path)
        finally:
            r.store.close()


def test_an_older_snapshot_never_rolls_back(make_replica, tmp_path):
    source = make_replica("source")
    _populate(source)
    path = str(tmp_path / "snap")
    header = _snapshot(source, path)
    # Same revision: nothing to do.
    assert snapshot.install(source.store, path) == (header, False)
    source.ok(link("library/app", compute_digest(b"later")))
    after = _dump(source.store)
    assert snapshot.install(source.store, path) == (header, False)
    assert _dump(source.store) == after
    assert after["revision"] == header["revision"] + 1


def test_a_snapshot_of_a_newer_format_is_refused_before_the_swap(make_replica, tmp_path):
    """An upgraded leader's snapshot must not leave an older replica without a store."""
    newer = make_replica("newer")
    _populate(newer)
    with newer.store.env.begin(write=True) as txn:
        txn.put(b"format_version", keys.u64(db.FORMAT_VERSION + 1))
    path = str(tmp_path / "snap")
    _snapshot(newer, path)
    kept = make_replica("kept")
    before = _dump(kept.store)
    with pytest.raises(FormatError, match=f"data format {db.FORMAT_VERSION + 1}, newer than"):
        snapshot.install(kept.store, path)
    assert _dump(kept.store) == before
    assert not os.path.exists(path + ".mdb")


@pytest.mark.parametrize("left", [".new", ".old"])
def test_a_crash_inside_replace_is_finished_at_open(make_replica, tmp_path, left):
    """replace() swaps directories with two renames; a crash between them loses nothing.

    With the staged state left (".new") the install completes; with only the retired
    one (".old") the previous state comes back.
    """
    kept = make_replica("kept")
    _populate(kept)
    expected = _dump(kept.store)
    kept.store.close()
    path = str(tmp_path / "kept")
    os.replace(path, path + left)

    reopened = Replica(path)
    try:
        assert _dump(reopened.store) == expected
        assert not os.path.exists(path + left)
    finally:
        reopened.store.close()


# -- format and growth --------------------------------------------------------------


def test_a_newer_format_is_refused(tmp_path):
    path = str(tmp_path / "db")
    Replica(path).store.close()
    env = lmdb.open(path, max_dbs=20)
    with env.begin(write=True) as txn:
        assert keys.read_u64(txn.get(b"format_version")) == db.FORMAT_VERSION
        txn.put(b"format_version", keys.u64(db.FORMAT_VERSION + 1))
    env.close()
    with pytest.raises(FormatError) as caught:
        Store(path, map_size=SMALL_MAP)
    message = str(caught.value)
    assert f"format version {db.FORMAT_VERSION + 1}" in message
    assert f"({db.FORMAT_VERSION})" in message
    assert path in message
    # Refusing does not rewrite the version.
    env = lmdb.open(path, max_dbs=20)
    with env.begin() as txn:
        assert keys.read_u64(txn.get(b"format_version")) == db.FORMAT_VERSION + 1
    env.close()


@pytest.mark.parametrize("boot", ["first", "second"])
def test_a_store_closed_cleanly_reopens_in_this_boot_or_a_later_one(tmp_path, monkeypatch, boot):
    monkeypatch.setenv("REGRAFT_BOOT_ID", "first")
    path = str(tmp_path / "db")
    r = Replica(path)
    _populate(r)
    before = _dump(r.store)
    r.store.close()
    monkeypatch.setenv("REGRAFT_BOOT_ID", boot)
    again = Store(path, map_size=SMALL_MAP)
    try:
        assert _dump(again) == before
    finally:
        again.close()


def test_an_older_format_is_upgraded_when_opened(tmp_path):
    path = str(tmp_path / "db")
    Replica(path).store.close()
    env = lmdb.open(path, max_dbs=20)
    with env.begin(write=True) as txn:
        txn.put(b"format_version", keys.u64(1))
    env.close()
    Store(path, map_size=SMALL_MAP).close()
    env = lmdb.open(path, max_dbs=20)
    with env.begin() as txn:
        assert keys.read_u64(txn.get(b"format_version")) == db.FORMAT_VERSION
    env.close()


def test_a_store_left_open_is_trusted_in_the_same_boot_only(tmp_path, monkeypatch):
    """Commits are not fsynced: a killed process leaves a whole file (the kernel has
    its pages), a crash of the machine may not."""
    monkeypatch.setenv("REGRAFT_BOOT_ID", "first")
    path = str(tmp_path / "db")
    r = Replica(path)
    _populate(r)
    before = _dump(r.store)
    r.store.env.close()  # the process is killed: Store.close never runs
    again = Store(path, map_size=SMALL_MAP)
    assert _dump(again) == before
    again.env.close()
    monkeypatch.setenv("REGRAFT_BOOT_ID", "second")
    with pytest.raises(TornStateError) as caught:
        Store(path, map_size=SMALL_MAP)
    assert path in str(caught.value)
    assert "opened in boot first, this is boot second" in str(caught.value)


def test_bytes_in_use_fall_when_records_are_deleted(tmp_path):
    store = Store(str(tmp_path / "db"), map_size=SMALL_MAP)
    try:
        empty = store.stat()["used_bytes"]
        keys_written = [b"k%06d" % i for i in range(5000)]
        batch = store.batch()
        for key in keys_written:
            batch.put("tags", key, b"v" * 100)
        batch.commit()
        full = store.stat()
        assert full["used_bytes"] > empty + 5000 * 100
        batch = store.batch()
        for key in keys_written:
            batch.delete("tags", key)
        batch.commit()
        after = store.stat()
        # The file keeps its size (LMDB reuses the pages); the pages in use are gone.
        assert after["file_bytes"] >= full["file_bytes"]
        assert after["used_bytes"] < full["used_bytes"] / 10
    finally:
        store.close()


def test_map_full_recovers_by_growing(tmp_path):
    path = str(tmp_path / "db")
    store = Store(path, map_size=64 << 10)
    initial = store.stat()["map_bytes"]
    config = compute_digest(b"config")
    contents = [image(config, annotations={"pad": f"{i}" * 30_000}) for i in range(8)]
    log = [link("big", config), *[put_manifest("big", f"t{i}", c) for i, c in enumerate(contents)]]
    entries = [(i + 1, c.SerializeToString()) for i, c in enumerate(log)]
    failures = 0
    while True:
        batch = store.batch()
        try:
            results = [machine.apply(batch, index, data) for index, data in entries]
            batch.commit()
            break
        except lmdb.MapFullError:
            failures += 1
            batch.abort()
            store.grow()
            assert failures < 10
    try:
        assert failures >= 1, "the map was never full: the test proves nothing"
        assert store.stat()["map_bytes"] == initial * 2**failures
        assert [r.code for r in results] == [OK] * len(entries)
        with store.read() as view:
            assert view.revision == len(entries)
            for i, content in enumerate(contents):
                digest, record = registry.get_manifest(view, "big", f"t{i}", False)
                assert (digest, record.content) == (compute_digest(content), content)
    finally:
        store.close()
    # The grown map is what the file now needs; reopening with the default works.
    reopened = Store(path, map_size=SMALL_MAP)
    try:
        assert reopened.revision == len(entries)
    finally:
        reopened.close()


# -- hashing ------------------------------------------------------------------------


def test_state_hash_is_independent_of_batch_boundaries(make_replica):
    config = compute_digest(b"config")
    content = image(config)
    digest = compute_digest(content)
    log = [
        link("a", config),
        put_manifest("a", "v1", content),
        put_tag("a", "v2", digest),
        put_tag("a", "v1", compute_digest(b"none")),  # refused
        commands.delete_tag(registry_pb2.DeleteTagRequest(repository="a", tag="v1")),
        link("b", config, 3),
    ]
    one = make_replica("one")
    one.apply(*log)
    each = make_replica("each")
    hashes = set()
    for command in log:
        each.apply(command)
        hashes.add(each.state_hash())
    assert one.state_hash() == each.state_hash()
    assert len(hashes) == len(log) - 1  # every change but the refused one is new state
    # The open batch reports the hash of the state it holds, before it is committed.
    batch = one.store.batch()
    machine.apply(batch, one.index + 1, link("c", config).SerializeToString())
    assert batch.state_hash != one.state_hash()
    pending = batch.state_hash
    batch.commit()
    assert one.state_hash() == pending


def test_a_command_that_fails_unexpectedly_leaves_nothing_behind(replica, monkeypatch):
    config = compute_digest(b"config")
    replica.ok(link("a", config))

    def half_done(change, op):
        change.batch.put("tags", b"half", b"done")
        raise RuntimeError("a bug")

    monkeypatch.setitem(machine._OPERATIONS, "link_blob", half_done)
    (result,) = replica.apply(link("b", config, request_id="r1"))
    assert result.code == command_pb2.Result.INTERNAL
    with replica.store.read() as view:
        assert view.get("tags", b"half") is None
        assert view.get("requests", b"r1") is not None  # the outcome is remembered
        assert view.state_hash == view.recompute_state_hash()


def test_index_command_with_children(replica):
    """An index needs its children in the same repository."""
    config = compute_digest(b"config")
    child = image(config)
    child_digest = compute_digest(child)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": child_digest, "size": 1}],
        }
    ).encode()
    replica.ok(link("a", config), link("b", config), put_manifest("a", "child", child))
    (refused,) = replica.apply(put_manifest("b", "multi", index))
    assert (refused.code, refused.oci_code) == (
        command_pb2.Result.FAILED_PRECONDITION,
        "MANIFEST_BLOB_UNKNOWN",
    )
    assert child_digest in refused.message
    replica.ok(put_manifest("a", "multi", index))
    with replica.store.read() as view:
        _, record = registry.get_manifest(view, "a", "multi", False)
    assert list(record.manifests) == [child_digest]
    assert list(record.blobs) == []


def test_a_batch_keeps_the_machine_version_a_failed_command_set(replica):
    """The batch keeps the version in memory (apply reads it per entry): a command that
    raised it and then failed must leave the version it found, as its writes are."""

    def raise_then_fail(batch: db.Batch) -> None:
        batch.set_machine_version(5)
        raise ValueError("after raising the version")

    batch = replica.store.batch()
    try:
        with pytest.raises(ValueError):
            batch.atomically(raise_then_fail, batch)
        assert batch.machine_version == 1
        batch.atomically(batch.set_machine_version, 3)
        assert batch.machine_version == 3
        batch.commit()
    except BaseException:
        batch.abort()
        raise
    with replica.store.read() as view:
        assert view.machine_version == 3


def test_a_manifest_goes_with_at_most_max_tags_deleted(replica, monkeypatch):
    """One command deleting 100,000 tags (an event each) held every replica's Raft
    thread for seconds and deposed the leader: from machine version 8 a manifest with
    more tags is refused, whole, and its tags can be listed to delete them first."""
    monkeypatch.setattr(registry, "MAX_TAGS_DELETED", 3)
    config = compute_digest(b"a config")
    content = image(config)
    digest = compute_digest(content)
    tags = ["a", "b", "c", "d"]
    replica.ok(link("acme/app", config), *(put_manifest("acme/app", t, content) for t in tags))
    replica.ok(put_manifest("acme/app", "other", image(config, n=1)))
    # Before version 8 (a rolling upgrade not done): every tag goes, as older code does.
    older = Replica(replica.store.path + "-older")
    try:
        older.ok(link("acme/app", config), *(put_manifest("acme/app", t, content) for t in tags))
        [result] = older.ok(delete_manifest("acme/app", digest))
        assert list(result.deleted_tags) == tags
    finally:
        older.store.close()
    replica.ok(commands.set_machine_version(versions.BOUNDED_CASCADES))
    before = replica.state_hash()
    [refused] = replica.apply(delete_manifest("acme/app", digest))
    assert refused.code == command_pb2.Result.FAILED_PRECONDITION
    assert f"manifest {digest} of repository 'acme/app' has more than 3 tags" in refused.message
    assert replica.state_hash() == before
    with replica.store.read() as view:
        assert registry.list_tags(view, "acme/app", 10, "", digest) == (tags, False)
        assert registry.list_tags(view, "acme/app", 2, "a", digest) == (["b", "c"], True)
    replica.ok(commands.delete_tag(registry_pb2.DeleteTagRequest(repository="acme/app", tag="a")))
    [deleted] = replica.ok(delete_manifest("acme/app", digest))
    assert list(deleted.deleted_tags) == ["b", "c", "d"]
    with replica.store.read() as view:
        assert registry.list_tags(view, "acme/app", 10, "") == (["other"], False)


def _referrers(replica: Replica, subject: str, count: int, **extra) -> list[str]:
    """Push `count` manifests of acme/app whose subject is `subject`; their digests."""
    config = compute_digest(b"a config")
    documents = [image(config, subject=subject, n=i, **extra) for i in range(count)]
    replica.ok(
        link("acme/app", config, 20, CONFIG_TYPE),
        *(put_manifest("acme/app", compute_digest(d), d) for d in documents),
    )
    return [compute_digest(d) for d in documents]


def _every_page(replica: Replica, subject: str, artifact_type: str = "", n: int = 1000):
    """Every page of the subject's referrers, each asked from the last one's `last`."""
    pages, last = [], ""
    with replica.store.read() as view:
        while True:
            page = registry.get_referrers(view, "acme/app", subject, artifact_type, n, last)
            pages.append(page)
            if not page.more:
                return pages
            assert page.last > last, "a page must move on"
            last = page.last


def test_referrers_carry_their_descriptor_from_machine_version_8(replica, monkeypatch):
    """GetReferrers read each referrer's whole manifest record, content included (up to
    4 MiB), to describe it; referrers indexed from version 8 on carry their descriptor.
    Those indexed before read as they did, and both list alike."""
    subject = compute_digest(b"the subject")
    before = _referrers(replica, subject, 2, artifactType="application/x.sig")
    replica.ok(commands.set_machine_version(versions.REFERRER_RECORDS))
    after = _referrers(replica, subject, 2, artifactType="application/x.sbom")
    manifests_read = []
    get = registry.View.get

    def counting(view, name: str, key: bytes):
        if name == "manifests":
            manifests_read.append(key)
        return get(view, name, key)

    monkeypatch.setattr(registry.View, "get", counting)
    with replica.store.read() as view:
        page = registry.get_referrers(view, "acme/app", subject, "", 1000)
        rid = view.get("repos", keys.repository("acme/app"))
        for digest in after:
            value = view.get("referrers", keys.pair(rid, subject, digest))
            record = record_pb2.ReferrerRecord.FromString(value)
            assert record.artifact_type == "application/x.sbom" and record.size > 0
        for digest in before:
            assert view.get("referrers", keys.pair(rid, subject, digest)) == b""
    assert manifests_read == [keys.member(rid, d) for d in sorted(before)]
    described = {d.digest: d for d in page.descriptors}
    assert sorted(described) == sorted(before + after) and not page.more
    with replica.store.read() as view:
        for digest, descriptor in described.items():
            _, record = registry.get_manifest(view, "acme/app", digest, True)
            assert descriptor.size == len(record.content)
            assert descriptor.media_type == record.media_type
            assert descriptor.artifact_type == record.artifact_type


def test_a_filtered_page_of_referrers_looks_at_a_bounded_number(replica, monkeypatch):
    """A filter by artifact type may pass over nearly every referrer of a subject: a
    page stops after REFERRERS_EXAMINED, possibly empty, and says where to go on."""
    monkeypatch.setattr(registry, "REFERRERS_EXAMINED", 3)
    subject = compute_digest(b"the subject")
    replica.ok(commands.set_machine_version(versions.REFERRER_RECORDS))
    others = _referrers(replica, subject, 10, artifactType="application/x.other")
    [wanted] = _referrers(replica, subject, 1, artifactType="application/x.wanted")
    pages = _every_page(replica, subject, "application/x.wanted")
    assert len(pages) == 4  # 11 referrers, 3 looked at per page
    assert [d.digest for p in pages for d in p.descriptors] == [wanted]
    assert any(p.more and not p.descriptors for p in pages)
    unfiltered = _every_page(replica, subject)
    assert [d.digest for p in unfiltered for d in p.descriptors] == sorted([*others, wanted])


def test_a_page_of_older_referrers_reads_a_bounded_number_of_bytes(replica, monkeypatch):
    """Referrers indexed before machine version 8 are described from their manifest
    records, content and all: a page stops once it has read REFERRERS_READ_BYTES."""
    subject = compute_digest(b"the subject")
    digests = _referrers(replica, subject, 5, annotations={"pad": "x" * 1000})
    with replica.store.read() as view:
        rid = view.get("repos", keys.repository("acme/app"))
        sizes = {len(view.get("manifests", keys.member(rid, d))) for d in digests}
    assert len(sizes) == 1  # one record's worth: a page stops after two
    monkeypatch.setattr(registry, "REFERRERS_READ_BYTES", sizes.pop())
    pages = _every_page(replica, subject)
    assert [len(p.descriptors) for p in pages] == [2, 2, 1]
    assert [d.digest for p in pages for d in p.descriptors] == sorted(digests)


def test_a_page_of_referrers_ends_before_its_byte_limit(replica):
    """Each referrer may carry up to a manifest's worth of annotations: all of them in
    one answer passed gRPC's message limit and held gigabytes under concurrent calls,
    and a page that ended only once past 4 MiB was refused by clients' default limit."""
    config = compute_digest(b"a config")
    subject = compute_digest(b"the subject")
    big = "x" * (registry.REFERRERS_PAGE_BYTES // 3)
    referrers = [
        image(config, subject=subject, annotations={"note": big, "n": str(i)}) for i in range(3)
    ]
    replica.ok(
        link("acme/app", config, 20, CONFIG_TYPE),
        *(put_manifest("acme/app", compute_digest(r), r) for r in referrers),
    )
    ordered = sorted(compute_digest(r) for r in referrers)
    with replica.store.read() as view:
        first, more, last = registry.get_referrers(view, "acme/app", subject, "", 1000)
        assert [d.digest for d in first] == ordered[:2] and more  # 3 pass the limit
        assert last == ordered[1]
        answer = registry_pb2.GetReferrersResponse(
            manifests=first, revision=1 << 62, more=True, last=last
        )
        assert answer.ByteSize() < 4 << 20
        rest, more, last = registry.get_referrers(view, "acme/app", subject, "", 1000, last)
        assert [d.digest for d in rest] == ordered[2:] and not more
        page = registry.get_referrers(view, "acme/app", subject, "", 1, ordered[2])
        assert page == ([], False, ordered[2])
