"""The OCI distribution-spec grammar for names, tags, digests and page sizes.

Every request that reaches the store passes through here first, so the rules live in one
place and every rejection is an InvalidArgument whose message shows the bad value and
the rule it broke: the message is read by a human who typed the name.
"""

import hashlib
import ipaddress
import re
import socket
from collections.abc import Sequence

from storage.errors import InvalidArgument, oci_code

MAX_REPOSITORY_LENGTH = 255
MAX_TAG_LENGTH = 128
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

# Hex length of the encoded part for each supported digest algorithm.
DIGEST_HEX_LENGTHS: dict[str, int] = {"sha256": 64, "sha512": 128}

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_LOWER_HEX_RE = re.compile(r"[0-9a-f]+")

_QUOTE_LIMIT = 80


def quote(value: str) -> str:
    """Quote a value for an error message, cut short so a huge value cannot flood a log.

    Public so every module that reports a bad value shows it the same way.
    """
    if len(value) <= _QUOTE_LIMIT:
        return repr(value)
    return f"{value[:_QUOTE_LIMIT]!r}... ({len(value)} characters)"


def _require_str(value: object, field: str) -> str:
    """Reject non-strings up front, so callers that skip type checks get a clear error."""
    if not isinstance(value, str):
        raise InvalidArgument(field, f"must be a string, got {type(value).__name__}")
    return value


MAX_MEDIA_TYPE_LENGTH = 255


def validate_printable(value: str, field: str, what: str, limit: int) -> str:
    """A free-form string: printable characters (no newline or control character), at
    most `limit` of them."""
    if len(value) > limit or any(not ch.isprintable() for ch in value):
        raise InvalidArgument(
            field, f"{quote(value)} is not {what} (printable, at most {limit} characters)"
        )
    return value


def validate_media_type(value: str, field: str = "media_type") -> str:
    """A media type as requests and documents give it (request fields, a descriptor's
    mediaType, an artifactType): stored, and sent back in answers. Printable and
    bounded only, not RFC 6838's grammar, which clients in the wild do not all keep."""
    return validate_printable(value, field, "a media type", MAX_MEDIA_TYPE_LENGTH)


@oci_code("NAME_INVALID")
def validate_repository(name: str, field: str = "repository") -> str:
    """Check a repository name (e.g. "library/nginx") against the distribution-spec grammar.

    Returns the name unchanged. Length is checked before the regex so an over-long input
    never reaches the matcher.
    """
    name = _require_str(name, field)
    if not name:
        raise InvalidArgument(field, "must not be empty")
    if len(name) > MAX_REPOSITORY_LENGTH:
        raise InvalidArgument(
            field,
            f"{quote(name)} is {len(name)} characters; at most {MAX_REPOSITORY_LENGTH} are allowed",
        )
    if _REPOSITORY_RE.fullmatch(name) is None:
        raise InvalidArgument(
            field,
            f"{quote(name)} is not a valid repository name: use '/'-separated components "
            "of lowercase letters and digits, joined inside a component by '.', '_', '__' "
            "or one or more '-'",
        )
    return name


@oci_code("NAME_INVALID")
def validate_repository_prefix(prefix: str, field: str = "repository_prefix") -> str:
    """Check that `prefix` begins some repository name ("" begins them all)."""
    prefix = _require_str(prefix, field)
    if len(prefix) > MAX_REPOSITORY_LENGTH:
        raise InvalidArgument(
            field,
            f"{quote(prefix)} is {len(prefix)} characters; repository names have at most "
            f"{MAX_REPOSITORY_LENGTH}",
        )
    # A prefix that ends inside a component, or on a separator, goes on with a letter.
    if prefix and not any(_REPOSITORY_RE.fullmatch(p) for p in (prefix, prefix + "a")):
        raise InvalidArgument(field, f"{quote(prefix)} does not begin any valid repository name")
    return prefix


@oci_code("TAG_INVALID")
def validate_tag(tag: str, field: str = "tag") -> str:
    """Check a tag (e.g. "v1.2.3"); returns it unchanged."""
    tag = _require_str(tag, field)
    if not tag:
        raise InvalidArgument(field, "must not be empty")
    if _TAG_RE.fullmatch(tag) is None:
        raise InvalidArgument(
            field,
            f"{quote(tag)} is not a valid tag: up to {MAX_TAG_LENGTH} characters of letters, "
            "digits, '_', '.' and '-', not starting with '.' or '-'",
        )
    return tag


@oci_code("DIGEST_INVALID")
def validate_digest(digest: str, field: str = "digest") -> str:
    """Check a content digest ("sha256:<64 hex>" or "sha512:<128 hex>"); returns it unchanged.

    Only algorithms the store can verify are accepted, and hex must be lowercase so each
    blob has exactly one spelling of its digest.
    """
    digest = _require_str(digest, field)
    if not digest:
        raise InvalidArgument(field, "must not be empty")
    algorithm, sep, encoded = digest.partition(":")
    if not sep:
        raise InvalidArgument(
            field,
            f"{quote(digest)} is not a digest: expected 'algorithm:hex', e.g. 'sha256:<64 hex>'",
        )
    if algorithm not in DIGEST_HEX_LENGTHS:
        raise InvalidArgument(
            field,
            f"{quote(digest)} uses unsupported digest algorithm {quote(algorithm)}; "
            f"supported: {', '.join(DIGEST_HEX_LENGTHS)}",
        )
    want = DIGEST_HEX_LENGTHS[algorithm]
    if len(encoded) != want or _LOWER_HEX_RE.fullmatch(encoded) is None:
        raise InvalidArgument(
            field,
            f"{quote(digest)} is not a valid {algorithm} digest: "
            f"expected {want} lowercase hex characters after '{algorithm}:'",
        )
    return digest


def is_digest_reference(reference: str) -> bool:
    """Tell a digest reference from a tag: tags cannot contain ':', digests always do."""
    return ":" in reference


def validate_reference(reference: str, field: str = "reference") -> str:
    """Check a manifest reference, which is either a digest or a tag; returns it unchanged."""
    reference = _require_str(reference, field)
    if is_digest_reference(reference):
        return validate_digest(reference, field)
    return validate_tag(reference, field)


def digest_algorithm(digest: str) -> str:
    """Return the algorithm of a digest ("sha256" or "sha512"), validating it first."""
    return validate_digest(digest).partition(":")[0]


def compute_digest(content: bytes, algorithm: str = "sha256") -> str:
    """Digest content in the canonical "algorithm:lowercase-hex" form the store keys on."""
    if algorithm not in DIGEST_HEX_LENGTHS:
        raise InvalidArgument(
            "algorithm",
            f"unsupported digest algorithm {quote(str(algorithm))}; "
            f"supported: {', '.join(DIGEST_HEX_LENGTHS)}",
        )
    return f"{algorithm}:{hashlib.new(algorithm, content).hexdigest()}"


# Users, organizations and teams: a repository path component (users and organizations
# are namespaces, the first component of their repositories'), 2 to 63 characters.
MIN_ACCOUNT_LENGTH = 2
MAX_ACCOUNT_LENGTH = 63
_ACCOUNT_RE = re.compile(_COMPONENT)
# What CheckAccess answers about (storage/access.py gives each its access level).
ACTIONS = ("pull", "push", "delete", "admin")


def validate_account_name(name: str, field: str = "name") -> str:
    """A user, organization or team name; returns it unchanged."""
    name = _require_str(name, field)
    length_ok = MIN_ACCOUNT_LENGTH <= len(name) <= MAX_ACCOUNT_LENGTH
    if not length_ok or _ACCOUNT_RE.fullmatch(name) is None:
        raise InvalidArgument(
            field,
            f"{quote(name)} is not a valid name: {MIN_ACCOUNT_LENGTH} to {MAX_ACCOUNT_LENGTH} "
            "lowercase letters and digits, joined inside by '.', '_', '__' or one or more '-'",
        )
    return name


def validate_actions(actions: Sequence[str], field: str = "actions") -> list[str]:
    """Actions CheckAccess knows, each at most once; returns them as a list. The count
    is checked first: a request can name hundreds of thousands, each with its answer."""
    if len(actions) > len(ACTIONS):
        raise InvalidArgument(
            field, f"{len(actions)} actions named; there are {len(ACTIONS)}: {', '.join(ACTIONS)}"
        )
    for action in actions:
        if _require_str(action, field) not in ACTIONS:
            raise InvalidArgument(
                field, f"{quote(action)} is not an action; known: {', '.join(ACTIONS)}"
            )
    if len(set(actions)) < len(actions):
        raise InvalidArgument(field, f"an action is named twice: {', '.join(actions)}")
    return list(actions)


def namespace(repository: str) -> str:
    """The user or organization a repository belongs to: its first path component."""
    return repository.partition("/")[0]


_MEMBER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]{1,253}")


def validate_member_id(member_id: str, field: str = "id") -> str:
    """A replica id: letters, digits, '.', '_', '-', at most 63, starting alphanumeric."""
    _require_str(member_id, field)
    if not _MEMBER_ID_RE.fullmatch(member_id):
        raise InvalidArgument(
            field,
            f"{quote(member_id)} is not a replica id (letters, digits, '.', '_', '-', "
            "at most 63 characters, starting with a letter or digit)",
        )
    return member_id


def split_address(address: str, field: str = "address") -> tuple[str, int]:
    """host:port (an IPv6 host in brackets) -> (host, port)."""
    _require_str(address, field)
    host, sep, port = address.rpartition(":")
    if not (sep and _HOST_RE.fullmatch(host) and port.isdigit() and 0 < int(port) < 65536):
        raise InvalidArgument(field, f"{quote(address)} is not host:port")
    return host.strip("[]"), int(port)


def is_wildcard(host: str) -> bool:
    """Whether `host` stands for every interface: 0.0.0.0, ::, or a numeric form the
    resolver reads as one of them ("0", "0.0", "::ffff:0.0.0.0"). One binds such an
    address; nobody can dial it."""
    try:
        found = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError):
        return False  # a host name
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0].partition("%")[0])
        mapped = getattr(address, "ipv4_mapped", None)
        if address.is_unspecified or (mapped is not None and mapped.is_unspecified):
            return True
    return False


def is_wildcard_address(address: str) -> bool:
    """Whether host:port `address` names a wildcard host (False if it is not host:port)."""
    try:
        return is_wildcard(split_address(address)[0])
    except InvalidArgument:
        return False


def validate_dialable(address: str, field: str = "address") -> str:
    """host:port that others can dial: not a wildcard such as 0.0.0.0:7401."""
    host, _ = split_address(address, field)
    if is_wildcard(host):
        raise InvalidArgument(
            field, f"{quote(address)} stands for every interface: give the address others dial"
        )
    return address


def validate_page_size(n: int, field: str = "n") -> int:
    """Turn a requested page size into the one to use: 0 means the server default.

    Sizes above MAX_PAGE_SIZE are refused rather than clamped, so a client that asks for
    too much learns the limit instead of receiving a silently shorter page.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise InvalidArgument(field, f"must be an integer, got {type(n).__name__}")
    if n < 0:
        raise InvalidArgument(field, f"must not be negative, got {n}")
    if n > MAX_PAGE_SIZE:
        raise InvalidArgument(field, f"{n} is over the maximum page size of {MAX_PAGE_SIZE}")
    return n or DEFAULT_PAGE_SIZE
