"""Tests for storage.names: the distribution-spec grammar for names, tags and digests."""

import hashlib
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regraft.v1 import registry_pb2
from storage import commands, names
from storage.errors import InvalidArgument
from storage.names import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MAX_REPOSITORY_LENGTH,
    compute_digest,
    digest_algorithm,
    is_digest_reference,
    is_wildcard,
    quote,
    validate_dialable,
    validate_digest,
    validate_page_size,
    validate_reference,
    validate_repository,
    validate_repository_prefix,
    validate_tag,
)

# The spec's regexes, kept here independently of the implementation to test against.
SPEC_REPOSITORY = re.compile(
    r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*"
)
SPEC_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")

FAST = settings(max_examples=100, deadline=None)

LOWER_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
CONTROL_CHARS = st.sampled_from([chr(c) for c in range(0x20)] + ["\x7f"])


@st.composite
def components(draw: st.DrawFn) -> str:
    parts = [draw(st.text(LOWER_ALNUM, min_size=1, max_size=6))]
    for _ in range(draw(st.integers(0, 3))):
        parts.append(draw(st.sampled_from([".", "_", "__", "-", "--", "---"])))
        parts.append(draw(st.text(LOWER_ALNUM, min_size=1, max_size=6)))
    return "".join(parts)


repositories = st.lists(components(), min_size=1, max_size=6).map("/".join)
tags = st.from_regex(SPEC_TAG, fullmatch=True)
algorithms = st.sampled_from(["sha256", "sha512"])


@st.composite
def digests(draw: st.DrawFn) -> str:
    algorithm = draw(algorithms)
    length = 64 if algorithm == "sha256" else 128
    return f"{algorithm}:{draw(st.text('0123456789abcdef', min_size=length, max_size=length))}"


def reject(func, value, field: str) -> InvalidArgument:
    """Call func(value), assert it raises InvalidArgument for `field`, and return the error."""
    with pytest.raises(InvalidArgument) as info:
        func(value)
    assert info.value.field == field
    return info.value


# --- repositories -------------------------------------------------------------------------


@FAST
@given(repositories)
def test_valid_repositories_round_trip(name: str) -> None:
    assert validate_repository(name) == name


@FAST
@given(repositories.filter(lambda r: len(r) <= MAX_REPOSITORY_LENGTH), st.data())
def test_every_beginning_of_a_repository_name_is_a_prefix(name: str, data) -> None:
    cut = data.draw(st.integers(0, len(name)))
    assert validate_repository_prefix(name[:cut]) == name[:cut]


def test_prefixes_end_anywhere_a_name_can_go_on() -> None:
    for prefix in ("", "team/", "team/a", "a__", "a---", "a."):
        assert validate_repository_prefix(prefix) == prefix
    for prefix in ("BAD//", "a//", "/a", "a___", "a._", "-a"):
        error = reject(validate_repository_prefix, prefix, "repository_prefix")
        assert f"'{prefix}' does not begin any valid repository name" in str(error)


@FAST
@given(st.text("ab0./_-A ", max_size=12), st.text("ab0./_-", max_size=6))
def test_a_refused_prefix_begins_no_repository_name(prefix: str, rest: str) -> None:
    try:
        validate_repository_prefix(prefix)
    except InvalidArgument as error:
        assert error.field == "repository_prefix"
        assert SPEC_REPOSITORY.fullmatch(prefix + rest) is None


@FAST
@given(st.text("aZ0._-/:\n ", max_size=20))
def test_repository_agrees_with_spec_regex(name: str) -> None:
    expected = bool(name) and SPEC_REPOSITORY.fullmatch(name) is not None
    try:
        validate_repository(name)
    except InvalidArgument as e:
        assert e.field == "repository"
        assert not expected, f"{name!r} should be accepted"
    else:
        assert expected, f"{name!r} should be rejected"


@FAST
@given(repositories, st.data())
def test_repository_with_uppercase_rejected(name: str, data: st.DataObject) -> None:
    pos = data.draw(st.integers(0, len(name)))
    bad = name[:pos] + data.draw(st.sampled_from("ABCXYZ")) + name[pos:]
    err = reject(validate_repository, bad, "repository")
    assert quote(bad) in err.message


@FAST
@given(repositories, CONTROL_CHARS, st.data())
def test_repository_with_control_char_rejected(name: str, ch: str, data: st.DataObject) -> None:
    pos = data.draw(st.integers(0, len(name)))
    reject(validate_repository, name[:pos] + ch + name[pos:], "repository")


@FAST
@given(repositories)
def test_repository_with_trailing_newline_rejected(name: str) -> None:
    reject(validate_repository, name + "\n", "repository")


@FAST
@given(repositories, st.sampled_from(["/", "-", ".", "_", "//", "___"]))
def test_repository_with_dangling_separator_rejected(name: str, sep: str) -> None:
    reject(validate_repository, name + sep, "repository")
    reject(validate_repository, sep + name, "repository")


@FAST
@given(repositories, st.integers(1, 300))
def test_overlong_repository_rejected(name: str, extra: int) -> None:
    bad = name + "/" + "a" * (MAX_REPOSITORY_LENGTH + extra)
    err = reject(validate_repository, bad, "repository")
    assert str(MAX_REPOSITORY_LENGTH) in err.message
    assert f"{len(bad)} characters" in err.message


def test_longest_repository_accepted_and_one_more_rejected() -> None:
    longest = "/".join(["a" * 50] * 4) + "/" + "b" * 51
    assert len(longest) == 255
    assert validate_repository(longest) == longest
    err = reject(validate_repository, longest + "e", "repository")
    assert "256 characters" in err.message
    assert "at most 255" in err.message


def test_empty_repository_rejected() -> None:
    err = reject(validate_repository, "", "repository")
    assert err.message == "must not be empty"


def test_repository_field_name_is_the_callers() -> None:
    reject(lambda v: validate_repository(v, field="from"), "Library/nginx", "from")


def test_repository_non_string_rejected() -> None:
    err = reject(validate_repository, b"library", "repository")
    assert "bytes" in err.message


@pytest.mark.parametrize(
    "name",
    ["library/nginx", "a", "0", "a.b_c__d---e/f", "ghcr.io/org/team/app", "a" * 255],
)
def test_known_good_repositories(name: str) -> None:
    assert validate_repository(name) == name


@pytest.mark.parametrize(
    "name",
    ["Library/nginx", "a___b", "a..b", "a._b", "/a", "a/", "a//b", "-a", "a b", "é", "a:tag"],
)
def test_known_bad_repositories(name: str) -> None:
    reject(validate_repository, name, "repository")


# --- tags -----------------------------------------------------------------------------


@FAST
@given(tags)
def test_valid_tags_round_trip(tag: str) -> None:
    assert validate_tag(tag) == tag
    assert validate_reference(tag) == tag
    assert not is_digest_reference(tag)


@FAST
@given(st.text("aZ0._-/:\n", max_size=10))
def test_tag_agrees_with_spec_regex(tag: str) -> None:
    expected = SPEC_TAG.fullmatch(tag) is not None
    try:
        validate_tag(tag)
    except InvalidArgument as e:
        assert e.field == "tag"
        assert not expected, f"{tag!r} should be accepted"
    else:
        assert expected, f"{tag!r} should be rejected"


@FAST
@given(tags, st.sampled_from(["/", ":", " ", "@", "+"]), st.data())
def test_tag_with_forbidden_char_rejected(tag: str, ch: str, data: st.DataObject) -> None:
    pos = data.draw(st.integers(0, len(tag)))
    bad = (tag[:pos] + ch + tag[pos:])[:128]
    if ch not in bad:  # the cut removed it: put it last instead
        bad = bad[:-1] + ch
    err = reject(validate_tag, bad, "tag")
    assert quote(bad) in err.message


@FAST
@given(tags, st.sampled_from(["-", "."]))
def test_tag_with_leading_dash_or_dot_rejected(tag: str, lead: str) -> None:
    bad = (lead + tag)[:128]
    reject(validate_tag, bad, "tag")
    reject(validate_reference, bad, "reference")


@FAST
@given(tags, CONTROL_CHARS, st.data())
def test_tag_with_control_char_rejected(tag: str, ch: str, data: st.DataObject) -> None:
    pos = data.draw(st.integers(0, len(tag)))
    reject(validate_tag, tag[:pos] + ch + tag[pos:], "tag")


@FAST
@given(tags)
def test_tag_with_trailing_newline_rejected(tag: str) -> None:
    reject(validate_tag, tag + "\n", "tag")


def test_tag_length_boundary() -> None:
    assert validate_tag("v" * 128) == "v" * 128
    err = reject(validate_tag, "v" * 129, "tag")
    assert "128" in err.message


def test_empty_tag_rejected() -> None:
    err = reject(validate_tag, "", "tag")
    assert err.message == "must not be empty"


def test_long_value_is_truncated_in_message() -> None:
    err = reject(validate_tag, "x" * 10_000 + "/", "tag")
    assert "10001 characters" in err.message
    assert len(err.message) < 300


# --- digests --------------------------------------------------------------------------


@FAST
@given(digests())
def test_valid_digests_round_trip(digest: str) -> None:
    assert validate_digest(digest) == digest
    assert validate_reference(digest) == digest
    assert is_digest_reference(digest)
    assert digest_algorithm(digest) == digest.split(":")[0]


@FAST
@given(st.binary(max_size=200), algorithms)
def test_compute_digest_matches_hashlib(content: bytes, algorithm: str) -> None:
    digest = compute_digest(content, algorithm)
    assert digest == f"{algorithm}:{hashlib.new(algorithm, content).hexdigest()}"
    assert validate_digest(digest) == digest
    assert digest_algorithm(digest) == algorithm


def test_compute_digest_defaults_to_sha256() -> None:
    assert compute_digest(b"") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_sha512_digest() -> None:
    digest = compute_digest(b"hello", "sha512")
    assert digest == (
        "sha512:9b71d224bd62f3785d96d46ad3ea3d73319bfbc2890caadae2dff72519673ca7"
        "2323c3d99ba5c11d7c7acc6e14b8c5da0c4663475c2e5c3adef46f73bcdec043"
    )
    assert digest_algorithm(digest) == "sha512"
    # A sha512 algorithm with a sha256-length hex is wrong, and vice versa.
    reject(validate_digest, "sha512:" + "a" * 64, "digest")
    reject(validate_digest, "sha256:" + "a" * 128, "digest")


@FAST
@given(digests(), st.data())
def test_digest_with_uppercase_hex_rejected(digest: str, data: st.DataObject) -> None:
    algorithm, encoded = digest.split(":")
    pos = data.draw(st.integers(0, len(encoded) - 1))
    bad = f"{algorithm}:{encoded[:pos]}{data.draw(st.sampled_from('ABCDEF'))}{encoded[pos + 1 :]}"
    err = reject(validate_digest, bad, "digest")
    assert "lowercase hex" in err.message


@FAST
@given(digests(), st.integers(-10, 10).filter(bool))
def test_digest_with_wrong_length_rejected(digest: str, delta: int) -> None:
    bad = digest[:delta] if delta < 0 else digest + "a" * delta
    reject(validate_digest, bad, "digest")


@FAST
@given(digests(), CONTROL_CHARS)
def test_digest_with_trailing_control_char_rejected(digest: str, ch: str) -> None:
    reject(validate_digest, digest + ch, "digest")


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha384", "SHA256", "blake3", ""])
def test_unsupported_algorithm_lists_supported(algorithm: str) -> None:
    err = reject(validate_digest, f"{algorithm}:{'a' * 64}", "digest")
    assert "supported: sha256, sha512" in err.message


def test_unsupported_compute_algorithm_rejected() -> None:
    err = reject(lambda a: compute_digest(b"x", a), "md5", "algorithm")
    assert "supported: sha256, sha512" in err.message


@pytest.mark.parametrize("bad", ["", "sha256", "a" * 64, "sha256-" + "a" * 64])
def test_digest_without_algorithm_rejected(bad: str) -> None:
    reject(validate_digest, bad, "digest")


def test_digest_algorithm_validates() -> None:
    reject(digest_algorithm, "sha256:xyz", "digest")


# --- references -----------------------------------------------------------------------


def test_reference_dispatches_on_colon() -> None:
    # With a colon it is judged as a digest, so the message is about digests, not tags.
    err = reject(validate_reference, "latest:1", "reference")
    assert "digest algorithm" in err.message
    err = reject(validate_reference, "la/test", "reference")
    assert "not a valid tag" in err.message
    assert validate_reference("latest", field="ref") == "latest"
    reject(lambda v: validate_reference(v, field="ref"), "", "ref")


# --- page sizes -----------------------------------------------------------------------


@FAST
@given(st.integers(1, MAX_PAGE_SIZE))
def test_page_size_in_range_kept(n: int) -> None:
    assert validate_page_size(n) == n


def test_page_size_zero_means_default() -> None:
    assert validate_page_size(0) == DEFAULT_PAGE_SIZE == 100


@FAST
@given(st.integers(max_value=-1))
def test_negative_page_size_rejected(n: int) -> None:
    err = reject(validate_page_size, n, "n")
    assert str(n) in err.message


@FAST
@given(st.integers(min_value=MAX_PAGE_SIZE + 1))
def test_page_size_over_limit_rejected(n: int) -> None:
    err = reject(lambda v: validate_page_size(v, field="page_size"), n, "page_size")
    assert "1000" in err.message


@pytest.mark.parametrize("bad", [True, False, 1.0, "10", None])
def test_page_size_must_be_int(bad: object) -> None:
    err = reject(validate_page_size, bad, "n")
    assert "integer" in err.message


def test_quote_truncates() -> None:
    assert quote("abc") == "'abc'"
    long = quote("y" * 1000)
    assert long.startswith("'" + "y" * 80 + "'")
    assert long.endswith("(1000 characters)")


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "0", "0.0", "00.0.0.0", "0x0", "::", "::0", "::ffff:0.0.0.0"]
)
def test_wildcards_in_every_numeric_form_are_not_dialable(host: str) -> None:
    """The resolver reads all of these as 0.0.0.0 or ::, which bind every interface."""
    assert is_wildcard(host)
    with pytest.raises(InvalidArgument, match="stands for every interface"):
        validate_dialable(f"[{host}]:7401" if ":" in host else f"{host}:7401", "grpc_address")


@pytest.mark.parametrize("host", ["127.0.0.1", "10.0.0.1", "::1", "localhost", "r1", "0.example"])
def test_addresses_and_names_are_dialable(host: str) -> None:
    assert not is_wildcard(host)
    address = f"[{host}]:7401" if ":" in host else f"{host}:7401"
    assert validate_dialable(address) == address


@pytest.mark.parametrize(
    ("make", "field", "code"),
    [
        (lambda: commands.link_blob(blob("Bad/Name", DIGEST)), "repository", "NAME_INVALID"),
        (lambda: names.validate_repository_prefix("a//"), "repository_prefix", "NAME_INVALID"),
        (lambda: commands.put_tag(tag("-v1")), "tag", "TAG_INVALID"),
        (lambda: names.validate_reference(".v1"), "reference", "TAG_INVALID"),
        (lambda: names.validate_reference("sha256:abc"), "reference", "DIGEST_INVALID"),
        (lambda: commands.link_blob(blob("a/b", "md5:00")), "digest", "DIGEST_INVALID"),
        (lambda: commands.link_blob(blob("a/b", DIGEST, 1 << 63)), "size", "SIZE_INVALID"),
        (lambda: commands.put_manifest(push(INDEX, DIGEST)), "reference", "DIGEST_INVALID"),
        (lambda: commands.put_manifest(push(b"{", "v1")), "content", "MANIFEST_INVALID"),
        (lambda: commands.put_manifest(push(BAD_LAYER, "v1")), "content.layers[0].digest",
         "MANIFEST_INVALID"),
        (lambda: commands.put_manifest(push(b"{}", "v1", "text/plain")), "media_type",
         "MANIFEST_INVALID"),
        (lambda: names.validate_page_size(-1), "n", ""),
    ],
)  # fmt: skip
def test_refusals_carry_the_oci_code_a_front_end_returns(make, field, code):
    with pytest.raises(InvalidArgument) as caught:
        make()
    assert (caught.value.field, caught.value.oci_code) == (field, code)


DIGEST = "sha256:" + "a" * 64
INDEX = (
    b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}'
)
BAD_LAYER = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/json", "digest": DIGEST, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": "sha256:zz", "size": 1}],
    }
).encode()


def blob(repository: str, digest: str, size: int = 1) -> registry_pb2.LinkBlobRequest:
    return registry_pb2.LinkBlobRequest(repository=repository, digest=digest, size=size)


def tag(name: str) -> registry_pb2.PutTagRequest:
    return registry_pb2.PutTagRequest(repository="a/b", tag=name, digest=DIGEST)


def push(content: bytes, reference: str, media_type: str = "") -> registry_pb2.PutManifestRequest:
    return registry_pb2.PutManifestRequest(
        repository="a/b", reference=reference, content=content, media_type=media_type
    )
