"""Read image manifests and indexes to find the blobs, children and subject they reference.

The store needs these references to keep referenced content alive and to answer the
referrers API; it never needs the rest of the document. Pure functions, no I/O. Every
rejection is an InvalidArgument whose field is the JSON path of the bad value
(e.g. "content.layers[2].size"), so a human can find it in the document they pushed.
"""

import json
import math
import sys
import urllib.parse
from dataclasses import dataclass
from typing import Any

from storage.errors import InvalidArgument, oci_code
from storage.names import quote, validate_digest, validate_media_type

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

# Layers a client downloads from the descriptor's `urls` (Windows base layers, say):
# never pushed, so not linked blobs; distribution checks them the same way.
FOREIGN_LAYER_TYPES = (
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
)
IMAGE_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
SUPPORTED_MEDIA_TYPES = IMAGE_MANIFEST_TYPES + INDEX_TYPES

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# A descriptor's size is an int64 (OCI image spec).
MAX_SIZE = (1 << 63) - 1
# Annotations are kept for referrers and applied on every replica's Raft thread, at
# about 17 us each: 380,000 in one manifest held it for 6.6 s, and elections followed.
# Real manifests carry a handful (cosign, buildx attestations, Helm: tens at most).
MAX_ANNOTATIONS = 1024
# Parsing holds the GIL, and json.loads reads a list of numbers without ever letting
# another thread run: a 4 MiB manifest of 2,000,000 zeros held a replica for 0.5 s,
# one of 500,000 small objects for 2.6 s. Commas and opening brackets bound the values
# a document holds (counted in strings too: a generous bound); this many parse in
# tens of milliseconds. A real manifest has a few hundred.
MAX_JSON_VALUES = 100_000
# Layers of an image manifest, or manifests of an index: each is checked and linked on
# every replica's Raft thread (37,000 layers took 138 ms there). Docker images stop at
# 127 layers; ECR allows 4,200 per image.
MAX_DESCRIPTORS = 4096

_ROOT = "content"

Annotations = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ManifestInfo:
    """What a manifest references, and what the referrers API reports about it."""

    media_type: str
    blobs: tuple[str, ...]
    manifests: tuple[str, ...]
    subject: str
    artifact_type: str
    annotations: Annotations


@oci_code("MANIFEST_INVALID")
def parse_manifest(content: bytes, media_type: str = "") -> ManifestInfo:
    """Parse a manifest or index pushed as `media_type` (or as its own mediaType field).

    The given and declared media types must agree, and an image manifest may not carry an
    index's fields (or the reverse): otherwise one digest could be read two ways by
    different clients.
    """
    doc = _load(content)
    resolved = _resolve_media_type(doc, media_type)
    _check_schema_version(doc, resolved)
    subject = _optional_descriptor(doc, "subject")
    artifact_type = validate_media_type(
        _optional_string(doc, "artifactType"), f"{_ROOT}.artifactType"
    )
    annotations = _annotations(doc)
    if resolved in IMAGE_MANIFEST_TYPES:
        _forbid(doc, ("manifests",), "an image manifest")
        config_type, config_digest = _descriptor(_required(doc, "config"), f"{_ROOT}.config")
        layers = [
            _layer(layer, f"{_ROOT}.layers[{i}]") for i, layer in enumerate(_list(doc, "layers"))
        ]
        return ManifestInfo(
            media_type=resolved,
            blobs=tuple(dict.fromkeys(d for d in [config_digest, *layers] if d)),
            manifests=(),
            subject=subject,
            artifact_type=artifact_type or config_type,
            annotations=annotations,
        )
    _forbid(doc, ("config", "layers"), "an index")
    children = [
        _descriptor(child, f"{_ROOT}.manifests[{i}]")[1]
        for i, child in enumerate(_list(doc, "manifests"))
    ]
    return ManifestInfo(
        media_type=resolved,
        blobs=(),
        manifests=tuple(dict.fromkeys(children)),
        subject=subject,
        artifact_type=artifact_type,
        annotations=annotations,
    )


def _load(content: bytes) -> dict[str, Any]:
    """Decode the raw bytes into a JSON object, enforcing the size limit before parsing."""
    if not isinstance(content, bytes | bytearray):
        raise InvalidArgument(_ROOT, f"must be bytes, got {type(content).__name__}")
    if not content:
        raise InvalidArgument(_ROOT, "must not be empty")
    if len(content) > MAX_MANIFEST_BYTES:
        raise InvalidArgument(
            _ROOT,
            f"manifest is {len(content)} bytes, over the limit of {MAX_MANIFEST_BYTES} bytes",
        )
    values = content.count(b",") + content.count(b"{") + content.count(b"[")
    if values > MAX_JSON_VALUES:
        raise InvalidArgument(
            _ROOT,
            f"has about {values} JSON values (commas and opening brackets), over the "
            f"limit of {MAX_JSON_VALUES}",
        )
    # Decode explicitly: json.loads(bytes) would also accept UTF-16 and UTF-32.
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidArgument(_ROOT, f"is not valid UTF-8 (bad byte at offset {e.start})") from e
    try:
        doc = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except _NotJson as e:
        raise InvalidArgument(
            _ROOT,
            f"contains {e.args[0]}: Python's parser reads it, Go's (docker, containerd) "
            "refuses the document",
        ) from None
    except _DuplicateKey as e:
        raise InvalidArgument(
            _ROOT,
            f"has the key {quote(e.key)} twice in one object: JSON parsers disagree on "
            "which one counts, so one digest could be read two ways",
        ) from None
    except json.JSONDecodeError as e:
        raise InvalidArgument(
            _ROOT, f"is not valid JSON: {e.msg} at line {e.lineno} column {e.colno} (char {e.pos})"
        ) from e
    except RecursionError as e:
        raise InvalidArgument(_ROOT, "is nested too deeply to parse") from e
    except ValueError as e:  # the only other ValueError: an integer past Python's digit limit
        raise InvalidArgument(
            _ROOT,
            f"contains a number with more than {sys.get_int_max_str_digits()} digits",
        ) from e
    if not isinstance(doc, dict):
        raise InvalidArgument(_ROOT, f"must be a JSON object, got {_json_type(doc)}")
    return doc


class _NotJson(Exception):
    """NaN, Infinity or -Infinity: json.loads takes them by default."""


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name}, which is not JSON (RFC 8259)")


def _finite_float(text: str) -> float:
    """A number such as 1e400 reads as infinity in Python; Go refuses it as out of range."""
    value = float(text)
    if not math.isfinite(value):
        raise _NotJson(f"the number {text[:40]}, past a double's range")
    return value


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object_pairs_hook: an object, unless a key comes twice."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _resolve_media_type(doc: dict[str, Any], given: str) -> str:
    """Pick the media type from the argument or the document, refusing disagreement."""
    if not isinstance(given, str):
        raise InvalidArgument("media_type", f"must be a string, got {type(given).__name__}")
    declared = _optional_string(doc, "mediaType")
    if given and declared and given != declared:
        raise InvalidArgument(
            "media_type",
            f"{quote(given)} does not match the document's mediaType {quote(declared)}",
        )
    resolved = given or declared
    if not resolved:
        raise InvalidArgument("media_type", "not given, and the document has no mediaType field")
    if resolved not in SUPPORTED_MEDIA_TYPES:
        raise InvalidArgument(
            "media_type",
            f"unsupported manifest media type {quote(resolved)}; "
            f"supported: {', '.join(SUPPORTED_MEDIA_TYPES)}",
        )
    return resolved


def _check_schema_version(doc: dict[str, Any], media_type: str) -> None:
    """Docker schema 2 types must say schemaVersion 2; OCI types may omit it but not lie."""
    field = f"{_ROOT}.schemaVersion"
    if "schemaVersion" not in doc:
        if media_type in (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST):
            raise InvalidArgument(field, f"is required (must be 2) for {media_type}")
        return
    version = doc["schemaVersion"]
    if type(version) is not int or version != 2:
        raise InvalidArgument(field, f"must be 2, got {_show_json(version)}")


def _descriptor(value: object, path: str) -> tuple[str, str]:
    """Validate a descriptor and return its (mediaType, digest)."""
    if not isinstance(value, dict):
        raise InvalidArgument(
            path, f"must be a JSON object (a descriptor), got {_json_type(value)}"
        )
    field = f"{path}.mediaType"
    media_type = validate_media_type(_string(_required(value, "mediaType", path), field), field)
    digest = validate_digest(_required(value, "digest", path), f"{path}.digest")
    validate_size(_required(value, "size", path), f"{path}.size")
    return media_type, digest


def _layer(value: object, path: str) -> str:
    """A layer's digest, or "" for a foreign layer, which must name where it is."""
    media_type, digest = _descriptor(value, path)
    if media_type not in FOREIGN_LAYER_TYPES:
        return digest
    urls = _required(value, "urls", path)
    if not isinstance(urls, list) or not urls:
        raise InvalidArgument(
            f"{path}.urls",
            f"a foreign layer needs URLs to download it from, got {_show_json(urls)}",
        )
    for i, url in enumerate(urls):
        field = f"{path}.urls[{i}]"
        url = _string(url, field)
        try:
            parsed = urllib.parse.urlsplit(url)
        except ValueError:  # a bracketed host that is not one
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InvalidArgument(field, f"{quote(url)} is not an http or https URL")
        if parsed.fragment:
            raise InvalidArgument(field, f"{quote(url)} has a fragment (#...)")
    return ""


@oci_code("SIZE_INVALID")
def validate_size(size: object, field: str) -> int:
    """A blob's or manifest's size as a descriptor gives it: an int64 (OCI image spec)."""
    if type(size) is not int or not 0 <= size <= MAX_SIZE:
        raise InvalidArgument(
            field, f"must be an integer from 0 to {MAX_SIZE} (int64), got {_show_json(size)}"
        )
    return size


def _optional_descriptor(doc: dict[str, Any], key: str) -> str:
    """Return the digest of an optional descriptor field, or "" when it is absent."""
    if key not in doc:
        return ""
    return _descriptor(doc[key], f"{_ROOT}.{key}")[1]


def _required(obj: dict[str, Any], key: str, path: str = _ROOT) -> Any:
    """Fetch a field that must be present."""
    if key not in obj:
        raise InvalidArgument(f"{path}.{key}", "is required")
    return obj[key]


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    """Fetch a required top-level array of descriptors."""
    value = _required(doc, key)
    if not isinstance(value, list):
        raise InvalidArgument(f"{_ROOT}.{key}", f"must be an array, got {_json_type(value)}")
    if len(value) > MAX_DESCRIPTORS:
        raise InvalidArgument(
            f"{_ROOT}.{key}", f"has {len(value)} entries, over the limit of {MAX_DESCRIPTORS}"
        )
    return value


def _forbid(doc: dict[str, Any], keys: tuple[str, ...], kind: str) -> None:
    """Refuse fields of the other document kind, which would make the manifest ambiguous."""
    for key in keys:
        if key in doc:
            raise InvalidArgument(f"{_ROOT}.{key}", f"is not allowed in {kind}")


def _optional_string(doc: dict[str, Any], key: str) -> str:
    """Fetch an optional top-level non-empty string, or "" when it is absent."""
    if key not in doc:
        return ""
    return _string(doc[key], f"{_ROOT}.{key}")


def _string(value: object, field: str, *, allow_empty: bool = False) -> str:
    """Accept a string that can be stored and sent on as UTF-8.

    JSON escapes can spell lone surrogates, which Python decodes but protobuf and LMDB
    keys cannot carry, so they are refused here rather than failing later.
    """
    if not isinstance(value, str):
        raise InvalidArgument(field, f"must be a string, got {_json_type(value)}")
    if not value and not allow_empty:
        raise InvalidArgument(field, "must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgument(
            field, f"{quote(value)} is not valid Unicode (lone surrogate at index {e.start})"
        ) from e
    return value


def _annotations(doc: dict[str, Any]) -> Annotations:
    """Read the optional top-level annotations as sorted (key, value) pairs."""
    if "annotations" not in doc:
        return ()
    field = f"{_ROOT}.annotations"
    value = doc["annotations"]
    if not isinstance(value, dict):
        raise InvalidArgument(field, f"must be a JSON object, got {_json_type(value)}")
    if len(value) > MAX_ANNOTATIONS:
        raise InvalidArgument(
            field, f"has {len(value)} annotations, over the limit of {MAX_ANNOTATIONS}"
        )
    pairs = []
    for key, item in value.items():
        item_field = f"{field}[{quote(key)}]"
        _string(key, item_field, allow_empty=True)
        pairs.append((key, _string(item, item_field, allow_empty=True)))
    return tuple(sorted(pairs))


def _json_type(value: object) -> str:
    """Name a decoded value's type the way the JSON document spells it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _show_json(value: object) -> str:
    """Show a value as JSON spells it, cut short, and only the type of a container."""
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, dict | list):
        return _json_type(value)
    text = json.dumps(value)
    return text if len(text) <= 80 else f"{text[:80]}... ({len(text)} characters)"
