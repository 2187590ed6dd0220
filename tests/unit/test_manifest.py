"""Tests for storage.manifest: finding what manifests and indexes reference."""

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.errors import InvalidArgument
from storage.manifest import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MAX_ANNOTATIONS,
    MAX_DESCRIPTORS,
    MAX_JSON_VALUES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    ManifestInfo,
    parse_manifest,
)
from storage.names import compute_digest

FAST = settings(max_examples=100, deadline=None)

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

CONFIG = compute_digest(b"config")
LAYER1 = compute_digest(b"layer1")
LAYER2 = compute_digest(b"layer2")
SUBJECT = compute_digest(b"subject")
CHILD1 = compute_digest(b"child1")
CHILD2 = compute_digest(b"child2")


def desc(media_type: str, digest: str, size: int = 1234, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def oci_manifest(**overrides: Any) -> dict[str, Any]:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, CONFIG, 7023),
        "layers": [desc(OCI_LAYER, LAYER1, 32654), desc(OCI_LAYER, LAYER2, 16724)],
    }
    doc.update(overrides)
    return doc


def oci_index(**overrides: Any) -> dict[str, Any]:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            desc(OCI_MANIFEST, CHILD1, 7143, platform={"architecture": "amd64", "os": "linux"}),
            desc(OCI_MANIFEST, CHILD2, 7682, platform={"architecture": "arm64", "os": "linux"}),
        ],
    }
    doc.update(overrides)
    return doc


def encode(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def reject(content: bytes, field: str, media_type: str = "") -> InvalidArgument:
    """Parse content, assert it is refused for `field`, and return the error."""
    with pytest.raises(InvalidArgument) as info:
        parse_manifest(content, media_type)
    assert info.value.field == field, str(info.value)
    return info.value


# --- well-formed documents --------------------------------------------------------------


def test_oci_manifest_with_subject_and_annotations() -> None:
    doc = oci_manifest(
        subject=desc(OCI_MANIFEST, SUBJECT, 512),
        annotations={
            "org.opencontainers.image.created": "2024-01-01T00:00:00Z",
            "com.example.b": "2",
            "com.example.a": "",
        },
    )
    info = parse_manifest(encode(doc))
    assert info == ManifestInfo(
        media_type=OCI_MANIFEST,
        blobs=(CONFIG, LAYER1, LAYER2),
        manifests=(),
        subject=SUBJECT,
        artifact_type=OCI_CONFIG,
        annotations=(
            ("com.example.a", ""),
            ("com.example.b", "2"),
            ("org.opencontainers.image.created", "2024-01-01T00:00:00Z"),
        ),
    )


def test_docker_schema2_manifest() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": desc(DOCKER_CONFIG, CONFIG, 1469),
        "layers": [desc(DOCKER_LAYER, LAYER1, 2818413)],
    }
    info = parse_manifest(encode(doc), DOCKER_MANIFEST)
    assert info.media_type == DOCKER_MANIFEST
    assert info.blobs == (CONFIG, LAYER1)
    assert info.manifests == ()
    assert info.subject == ""
    assert info.artifact_type == DOCKER_CONFIG
    assert info.annotations == ()


def test_oci_index_with_two_children() -> None:
    info = parse_manifest(encode(oci_index(annotations={"k": "v"})))
    assert info == ManifestInfo(
        media_type=OCI_INDEX,
        blobs=(),
        manifests=(CHILD1, CHILD2),
        subject="",
        artifact_type="",
        annotations=(("k", "v"),),
    )


def test_index_artifact_type_and_subject_kept() -> None:
    doc = oci_index(artifactType="application/vnd.example.sbom", subject=desc(OCI_INDEX, SUBJECT))
    info = parse_manifest(encode(doc))
    assert info.artifact_type == "application/vnd.example.sbom"
    assert info.subject == SUBJECT


def test_docker_manifest_list() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [desc(DOCKER_MANIFEST, CHILD2), desc(DOCKER_MANIFEST, CHILD1)],
    }
    info = parse_manifest(encode(doc))
    assert info.media_type == DOCKER_MANIFEST_LIST
    assert info.manifests == (CHILD2, CHILD1)


def test_artifact_type_falls_back_to_config_media_type() -> None:
    config_type = "application/vnd.example.signature.config+json"
    doc = oci_manifest(config=desc(config_type, CONFIG))
    assert parse_manifest(encode(doc)).artifact_type == config_type


def test_explicit_artifact_type_wins_over_config() -> None:
    doc = oci_manifest(artifactType="application/vnd.example.sbom+json")
    assert parse_manifest(encode(doc)).artifact_type == "application/vnd.example.sbom+json"


def test_empty_layers_and_missing_schema_version_allowed_for_oci() -> None:
    doc = oci_manifest(layers=[])
    del doc["schemaVersion"]
    assert parse_manifest(encode(doc)).blobs == (CONFIG,)


def test_duplicate_references_kept_once_in_first_position() -> None:
    doc = oci_manifest(
        layers=[desc(OCI_LAYER, LAYER2), desc(OCI_LAYER, CONFIG), desc(OCI_LAYER, LAYER2)]
    )
    assert parse_manifest(encode(doc)).blobs == (CONFIG, LAYER2)
    index = oci_index(manifests=[desc(OCI_MANIFEST, CHILD2)] * 2 + [desc(OCI_MANIFEST, CHILD1)])
    assert parse_manifest(encode(index)).manifests == (CHILD2, CHILD1)


def test_sha512_digests_accepted() -> None:
    config = compute_digest(b"config", "sha512")
    layer = compute_digest(b"layer", "sha512")
    doc = oci_manifest(config=desc(OCI_CONFIG, config), layers=[desc(OCI_LAYER, layer)])
    assert parse_manifest(encode(doc)).blobs == (config, layer)


def test_media_type_from_argument_when_document_has_none() -> None:
    doc = oci_manifest()
    del doc["mediaType"]
    assert parse_manifest(encode(doc), OCI_MANIFEST).media_type == OCI_MANIFEST


# --- media type rules -------------------------------------------------------------------


def test_media_type_mismatch_rejected() -> None:
    err = reject(encode(oci_manifest()), "media_type", DOCKER_MANIFEST)
    assert DOCKER_MANIFEST in err.message
    assert OCI_MANIFEST in err.message


def test_media_type_missing_everywhere_rejected() -> None:
    doc = oci_manifest()
    del doc["mediaType"]
    reject(encode(doc), "media_type")


def test_unsupported_media_type_lists_supported() -> None:
    doc = oci_manifest(mediaType="application/vnd.example.artifact+json")
    err = reject(encode(doc), "media_type")
    assert "'application/vnd.example.artifact+json'" in err.message
    for supported in (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST):
        assert supported in err.message


def test_non_string_media_type_field_rejected() -> None:
    err = reject(encode(oci_manifest(mediaType=5)), "content.mediaType")
    assert err.message == "must be a string, got number"


@pytest.mark.parametrize("version", [None, 1, 3, "2", 2.0, True])
def test_docker_requires_schema_version_2(version: Any) -> None:
    doc = {"mediaType": DOCKER_MANIFEST, "config": desc(DOCKER_CONFIG, CONFIG), "layers": []}
    if version is not None:
        doc["schemaVersion"] = version
    reject(encode(doc), "content.schemaVersion")


@pytest.mark.parametrize(
    ("version", "shown"), [(1, "1"), (3, "3"), ("2", "'2'"), (False, "false"), ([2], "array")]
)
def test_oci_schema_version_must_be_2_when_present(version: Any, shown: str) -> None:
    err = reject(encode(oci_manifest(schemaVersion=version)), "content.schemaVersion")
    assert err.message == f"must be 2, got {shown}"


def test_index_fields_in_image_manifest_rejected() -> None:
    reject(encode(oci_manifest(manifests=[])), "content.manifests")


@pytest.mark.parametrize("key", ["config", "layers"])
def test_image_fields_in_index_rejected(key: str) -> None:
    reject(encode(oci_index(**{key: []})), f"content.{key}")


# --- malformed documents --------------------------------------------------------------------


def test_bad_layer_size_names_json_path() -> None:
    layers = [desc(OCI_LAYER, LAYER1), desc(OCI_LAYER, LAYER2), desc(OCI_LAYER, LAYER1, -1)]
    err = reject(encode(oci_manifest(layers=layers)), "content.layers[2].size")
    assert str(err) == (
        "content.layers[2].size: must be an integer from 0 to 9223372036854775807 (int64), got -1"
    )


def test_a_size_past_int64_is_refused() -> None:
    """The OCI image spec makes a size an int64: 2**64 was accepted."""
    for size in (2**63, 2**64):
        reject(encode(oci_manifest(config=desc(OCI_CONFIG, CONFIG, size))), "content.config.size")
    parse_manifest(encode(oci_manifest(config=desc(OCI_CONFIG, CONFIG, 2**63 - 1))))


@pytest.mark.parametrize("size", [True, 1.5, 1.0, "12", None, [1]])
def test_size_must_be_an_integer(size: Any) -> None:
    reject(encode(oci_manifest(config=desc(OCI_CONFIG, CONFIG, size))), "content.config.size")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_constants_that_go_refuses_are_refused(constant: str) -> None:
    """Python's json reads NaN and Infinity; Go's encoding/json (docker, containerd)
    refuses the document, so a manifest pushed with one could never be pulled."""
    content = encode(oci_manifest()).replace(
        b'"schemaVersion": 2', b'"x": %s, "schemaVersion": 2' % constant.encode()
    )
    err = reject(content, "content")
    assert constant in str(err) and "RFC 8259" in str(err)


def test_a_number_past_a_double_s_range_is_refused() -> None:
    """Python reads 1e400 as infinity; Go refuses it as out of range."""
    content = encode(oci_manifest())
    content = content.replace(b'"schemaVersion": 2', b'"x": 1e400, "schemaVersion": 2')
    assert "1e400, past a double's range" in str(reject(content, "content"))
    parse_manifest(encode(oci_manifest(x=1.5e300)))


def test_media_types_in_descriptors_at_the_limit_are_kept() -> None:
    longest = "application/" + "x" * 243  # 255 characters
    doc = oci_manifest(config=desc(longest, CONFIG), artifactType=longest)
    assert parse_manifest(encode(doc)).artifact_type == longest


def test_zero_size_allowed() -> None:
    doc = oci_manifest(config=desc(OCI_CONFIG, CONFIG, 0))
    assert parse_manifest(encode(doc)).blobs[0] == CONFIG


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (oci_manifest(layers=[desc(OCI_LAYER, LAYER1), desc(OCI_LAYER, "sha256:bad")]),
         "content.layers[1].digest"),
        (oci_manifest(config=desc(OCI_CONFIG, "md5:" + "a" * 32)), "content.config.digest"),
        (oci_index(manifests=[desc(OCI_MANIFEST, CHILD1.upper())]), "content.manifests[0].digest"),
        (oci_manifest(subject=desc(OCI_MANIFEST, "sha256:" + "0" * 63)), "content.subject.digest"),
    ],
)  # fmt: skip
def test_bad_digest_names_json_path(doc: dict[str, Any], field: str) -> None:
    reject(encode(doc), field)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (oci_manifest(config=None), "content.config"),
        (oci_manifest(config=[CONFIG]), "content.config"),
        (oci_manifest(layers={"0": desc(OCI_LAYER, LAYER1)}), "content.layers"),
        (oci_manifest(layers=[CONFIG]), "content.layers[0]"),
        (oci_manifest(subject="sha256:" + "0" * 64), "content.subject"),
        (oci_index(manifests=None), "content.manifests"),
        (oci_manifest(layers=[{"digest": LAYER1, "size": 1}]), "content.layers[0].mediaType"),
        (oci_manifest(layers=[desc("", LAYER1)]), "content.layers[0].mediaType"),
        (oci_manifest(layers=[{"mediaType": OCI_LAYER, "size": 1}]), "content.layers[0].digest"),
        (oci_manifest(layers=[{"mediaType": OCI_LAYER, "digest": LAYER1}]),
         "content.layers[0].size"),
        (oci_manifest(artifactType=7), "content.artifactType"),
        (oci_manifest(artifactType="a" * 256), "content.artifactType"),
        (oci_manifest(layers=[desc("text/plain\nX-Evil: 1", LAYER1)]),
         "content.layers[0].mediaType"),
        (oci_manifest(config=desc("x" * 256, CONFIG)), "content.config.mediaType"),
        (oci_manifest(subject=desc("a\tb", SUBJECT)), "content.subject.mediaType"),
        (oci_manifest(annotations=["a"]), "content.annotations"),
        (oci_manifest(annotations={"k": 1}), "content.annotations['k']"),
    ],
)  # fmt: skip
def test_malformed_fields_name_json_path(doc: dict[str, Any], field: str) -> None:
    reject(encode(doc), field)


@pytest.mark.parametrize("key", ["config", "layers"])
def test_missing_image_fields_rejected(key: str) -> None:
    doc = oci_manifest()
    del doc[key]
    err = reject(encode(doc), f"content.{key}")
    assert err.message == "is required"


def test_missing_index_manifests_rejected() -> None:
    doc = oci_index()
    del doc["manifests"]
    reject(encode(doc), "content.manifests")


def test_lone_surrogate_in_annotation_rejected() -> None:
    # Python decodes "\ud800" into a str that cannot be encoded as UTF-8 again.
    content = b'{"mediaType": "%s", "manifests": [], "annotations": {"k": "\\ud800"}}' % (
        OCI_INDEX.encode()
    )
    err = reject(content, "content.annotations['k']")
    assert "surrogate" in err.message


def test_empty_content_rejected() -> None:
    assert reject(b"", "content").message == "must not be empty"


@pytest.mark.parametrize("content", [b"[]", b'"x"', b"null", b"2"])
def test_non_object_rejected(content: bytes) -> None:
    assert reject(content, "content").message.startswith("must be a JSON object")


def test_invalid_json_names_position() -> None:
    err = reject(b'{\n  "mediaType": ,\n}', "content")
    assert "line 2 column 16" in err.message


def test_invalid_utf8_rejected() -> None:
    err = reject(b'{"mediaType": "\xff"}', "content")
    assert "UTF-8" in err.message
    assert "offset 15" in err.message


def test_utf16_rejected() -> None:
    reject(json.dumps(oci_manifest()).encode("utf-16"), "content")


def test_deep_nesting_rejected() -> None:
    reject(b"[" * 100_000 + b"]" * 100_000, "content")


def test_huge_integer_rejected() -> None:
    reject(b'{"schemaVersion": ' + b"9" * 5000 + b"}", "content")


# --- size limit --------------------------------------------------------------------------


def padded_to(total: int) -> bytes:
    """An OCI manifest whose annotation is padded so the whole document is `total` bytes."""
    base = encode(oci_manifest(annotations={"pad": ""}))
    content = encode(oci_manifest(annotations={"pad": "x" * (total - len(base))}))
    assert len(content) == total
    return content


def test_exactly_4_mib_accepted() -> None:
    info = parse_manifest(padded_to(MAX_MANIFEST_BYTES))
    assert info.annotations[0][0] == "pad"
    assert len(info.annotations[0][1]) > MAX_MANIFEST_BYTES - 1000


def test_4_mib_of_trailing_spaces_accepted() -> None:
    content = encode(oci_manifest())
    content += b" " * (MAX_MANIFEST_BYTES - len(content))
    assert parse_manifest(content).blobs == (CONFIG, LAYER1, LAYER2)


def test_one_byte_over_4_mib_rejected() -> None:
    err = reject(padded_to(MAX_MANIFEST_BYTES + 1), "content")
    assert str(MAX_MANIFEST_BYTES + 1) in err.message
    assert str(MAX_MANIFEST_BYTES) in err.message


# --- generated inputs -------------------------------------------------------------------

digests = st.builds(compute_digest, st.binary(max_size=16), st.sampled_from(["sha256", "sha512"]))
media_types = st.sampled_from([OCI_CONFIG, OCI_LAYER, "application/x", "a/b+json"])
descriptors = st.builds(desc, media_types, digests, st.integers(0, 2**63 - 1))
annotation_maps = st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=5)


@FAST
@given(descriptors, st.lists(descriptors, max_size=6), annotation_maps, st.booleans())
def test_generated_image_manifests_parse(
    config: dict[str, Any], layers: list[dict[str, Any]], annotations: dict[str, str], docker: bool
) -> None:
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    doc = {"schemaVersion": 2, "config": config, "layers": layers, "annotations": annotations}
    info = parse_manifest(encode(doc), media_type)
    expected = list(dict.fromkeys([config["digest"]] + [layer["digest"] for layer in layers]))
    assert list(info.blobs) == expected
    assert info.media_type == media_type
    assert info.artifact_type == config["mediaType"]
    assert info.annotations == tuple(sorted(annotations.items()))


@FAST
@given(st.lists(descriptors, max_size=6), st.sampled_from([OCI_INDEX, DOCKER_MANIFEST_LIST]))
def test_generated_indexes_parse(children: list[dict[str, Any]], media_type: str) -> None:
    doc = {"schemaVersion": 2, "mediaType": media_type, "manifests": children}
    info = parse_manifest(encode(doc))
    assert list(info.manifests) == list(dict.fromkeys(c["digest"] for c in children))
    assert info.blobs == ()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
any_media_type = st.sampled_from(
    ["", OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, "text/plain"]
)


def parse_or_refuse(content: bytes, media_type: str) -> None:
    """Parsing either succeeds or raises InvalidArgument: anything else is a bug."""
    try:
        info = parse_manifest(content, media_type)
    except InvalidArgument as e:
        assert e.field == "media_type" or e.field.startswith("content")
        assert e.message
    else:
        assert isinstance(info, ManifestInfo)


@FAST
@given(st.binary(max_size=200), any_media_type)
def test_random_bytes_only_raise_invalid_argument(content: bytes, media_type: str) -> None:
    parse_or_refuse(content, media_type)


@FAST
@given(json_values, any_media_type)
def test_random_json_only_raises_invalid_argument(value: Any, media_type: str) -> None:
    parse_or_refuse(json.dumps(value).encode(), media_type)


manifest_keys = st.sampled_from(
    ["schemaVersion", "mediaType", "config", "layers", "manifests", "subject", "artifactType",
     "annotations"]
)  # fmt: skip
descriptor_keys = st.sampled_from(["mediaType", "digest", "size"])


@FAST
@given(
    st.sampled_from([oci_manifest, oci_index]),
    manifest_keys,
    descriptor_keys,
    json_values,
    any_media_type,
    st.booleans(),
)
def test_mutated_manifests_only_raise_invalid_argument(
    build: Any, key: str, inner: str, value: Any, media_type: str, nested: bool
) -> None:
    doc = build()
    target = doc.get(key)
    if nested and isinstance(target, dict):
        target[inner] = value
    elif nested and isinstance(target, list) and target:
        target[0][inner] = value
    else:
        doc[key] = value
    parse_or_refuse(encode(doc), media_type)


@pytest.mark.parametrize(
    "content, key",
    [
        (b'{"schemaVersion": 2, "layers": [], "layers": [1]}', "layers"),
        (b'{"schemaVersion": 2, "config": {"digest": "a", "digest": "b"}}', "digest"),
    ],
)
def test_a_key_twice_in_one_object_is_refused(content: bytes, key: str) -> None:
    """Go's encoding/json takes the last of two equal keys, other parsers the first:
    the registry and a client could read one digest two ways."""
    err = reject(content, "content", OCI_MANIFEST)
    assert f"the key '{key}' twice" in err.message


def test_annotations_over_the_limit_are_refused() -> None:
    most = {f"k{i}": "" for i in range(MAX_ANNOTATIONS)}
    assert len(parse_manifest(encode(oci_manifest(annotations=most))).annotations) == len(most)
    over = {**most, "one-more": ""}
    err = reject(encode(oci_manifest(annotations=over)), "content.annotations")
    assert err.message == f"has {MAX_ANNOTATIONS + 1} annotations, over the limit of 1024"


@pytest.mark.parametrize("key", ["layers", "manifests"])
def test_descriptors_over_the_limit_are_refused(key: str) -> None:
    make, media_type = (oci_manifest, OCI_LAYER) if key == "layers" else (oci_index, OCI_MANIFEST)
    most = [desc(media_type, compute_digest(str(i).encode())) for i in range(MAX_DESCRIPTORS)]
    info = parse_manifest(encode(make(**{key: most})))
    assert len(info.blobs if key == "layers" else info.manifests) >= MAX_DESCRIPTORS
    err = reject(encode(make(**{key: [*most, most[0]]})), f"content.{key}")
    assert err.message == f"has {MAX_DESCRIPTORS + 1} entries, over the limit of 4096"


@pytest.mark.parametrize("unit", [b"0,", b"{},", b"[],"], ids=["numbers", "objects", "arrays"])
def test_documents_of_too_many_values_are_refused_before_they_are_parsed(unit: bytes) -> None:
    """json.loads reads a list of numbers without letting another thread run."""

    def with_extra(count: int) -> bytes:
        return encode(oci_manifest(x=None)).replace(b"null", b"[" + unit * count + b"0]")

    assert parse_manifest(with_extra(MAX_JSON_VALUES // 2 - 100)).blobs == (CONFIG, LAYER1, LAYER2)
    err = reject(with_extra(MAX_JSON_VALUES), "content")
    assert "JSON values" in err.message and "over the limit of 100000" in err.message


FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"


def docker_manifest(**overrides: Any) -> dict[str, Any]:
    return oci_manifest(mediaType=DOCKER_MANIFEST, config=desc(DOCKER_CONFIG, CONFIG), **overrides)


@pytest.mark.parametrize(
    ("make", "layer_type"), [(docker_manifest, FOREIGN), (oci_manifest, NONDISTRIBUTABLE)]
)
def test_foreign_layers_are_downloaded_from_their_urls_not_linked(make, layer_type) -> None:
    """A Windows base layer is never pushed: linking it would claim bytes nobody has."""
    url = "https://mcr.microsoft.com/v2/windows/blobs/" + LAYER2
    foreign = desc(layer_type, LAYER2, urls=[url])
    info = parse_manifest(encode(make(layers=[desc(OCI_LAYER, LAYER1), foreign])))
    assert info.blobs == (CONFIG, LAYER1)
    for urls, field, says in [
        (None, "content.layers[0].urls", "is required"),
        ([], "content.layers[0].urls", "needs URLs"),
        (["ftp://example.com/x"], "content.layers[0].urls[0]", "not an http or https URL"),
        (["http://[::1/x"], "content.layers[0].urls[0]", "not an http or https URL"),
        ([url + "#part"], "content.layers[0].urls[0]", "has a fragment"),
        ([7], "content.layers[0].urls[0]", "must be a string"),
    ]:
        layer = desc(layer_type, LAYER2, **({} if urls is None else {"urls": urls}))
        err = reject(encode(make(layers=[layer])), field)
        assert says in err.message, err.message
