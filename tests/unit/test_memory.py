"""State lives in LMDB, not in Python: memory stays flat as a repository grows."""

import hashlib

from regraft.v1 import command_pb2
from storage import keys, machine, registry
from storage.db import Store


def anonymous_memory_kib() -> int:
    """Resident memory that is not a mapped file (LMDB's pages do not count)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


def test_a_repository_with_a_million_tags_keeps_memory_flat(tmp_path):
    store = Store(str(tmp_path / "state"))
    blob = "sha256:" + hashlib.sha256(b"config").hexdigest()
    digest = "sha256:" + hashlib.sha256(b"manifest").hexdigest()
    setup = [
        command_pb2.Command(
            link_blob=command_pb2.LinkBlobOp(repository="big/repo", digest=blob, size=6)
        ),
        command_pb2.Command(
            put_manifest=command_pb2.PutManifestOp(
                repository="big/repo", digest=digest, media_type="m", content=b"{}", blobs=[blob]
            )
        ),
    ]
    index = 1

    def apply_tags(count: int) -> None:
        nonlocal index
        batch = store.batch()
        for _ in range(count):
            index += 1
            command = command_pb2.Command(
                put_tag=command_pb2.PutTagOp(repository="big/repo", tag=f"t{index}", digest=digest)
            )
            result = machine.apply(batch, index, command.SerializeToString())
            assert result.code == command_pb2.Result.OK, result.message
            if index % 5000 == 0:
                batch.commit()
                batch = store.batch()
        batch.commit()

    batch = store.batch()
    for command in setup:
        index += 1
        assert machine.apply(batch, index, command.SerializeToString()).code == 0
    batch.commit()
    apply_tags(100_000)
    before = anonymous_memory_kib()
    apply_tags(900_000)
    after = anonymous_memory_kib()
    with store.read() as view:
        assert view.count("tags") == 1_000_000
        page, more = registry.list_tags(view, "big/repo", 10, "t5")
    names = sorted(f"t{i}" for i in range(4, index + 1))
    after_t5 = names[names.index("t5") + 1 :]
    assert more and page == after_t5[:10]
    with store.read() as view:
        assert keys.read_u64(view.get("repos", b"big/repo")) == 1
    store.close()
    # 900,000 more tags held in Python would take well over 100 MiB.
    assert after - before < 16 * 1024, f"anonymous memory grew {after - before} KiB"
