"""How records are keyed in LMDB.

LMDB keys are at most 511 bytes. A repository name (up to 255 bytes) is stored once
and replaced inside every other key by an 8-byte id, so the longest key is an id, a
sha512 digest (135 bytes) and a tag (128 bytes). Keys sort in listing order: byte order
of the names, which for the ASCII-only OCI grammar is the lexical order clients expect.
A zero byte separates variable-length parts; no name, tag or digest can contain one.
"""

import struct

MAX_KEY_BYTES = 511
SEP = b"\x00"

_U64 = struct.Struct(">Q")
_EVENT = struct.Struct(">QI")


def repo_id(number: int) -> bytes:
    """The compact id that stands for a repository inside other keys."""
    return _U64.pack(number)


def u64(value: int) -> bytes:
    return _U64.pack(value)


def read_u64(data: bytes) -> int:
    return _U64.unpack(data)[0]


def repository(name: str) -> bytes:
    return name.encode()


def member(rid: bytes, name: str) -> bytes:
    """A record that belongs to a repository: a tag, a manifest or a blob by digest."""
    return rid + name.encode()


def member_name(rid: bytes, key: bytes) -> str:
    return key[len(rid) :].decode()


def pair(rid: bytes, first: str, second: str) -> bytes:
    """Two names under a repository, e.g. (subject, referrer) or (digest, tag)."""
    return rid + first.encode() + SEP + second.encode()


def pair_prefix(rid: bytes, first: str) -> bytes:
    return rid + first.encode() + SEP


def pair_second(prefix: bytes, key: bytes) -> str:
    return key[len(prefix) :].decode()


def event(revision: int, sequence: int) -> bytes:
    return _EVENT.pack(revision, sequence)


def event_revision(key: bytes) -> int:
    return _EVENT.unpack(key)[0]


def event_sequence(key: bytes) -> int:
    return _EVENT.unpack(key)[1]


def request_log(index: int, request_id: str) -> bytes:
    """Requests in the order they were applied, so that old ones can be forgotten."""
    return _U64.pack(index) + request_id.encode()


def request_log_id(key: bytes) -> tuple[int, str]:
    return _U64.unpack(key[:8])[0], key[8:].decode()
