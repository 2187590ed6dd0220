"""`regraft call`'s names for methods and its requests: what grpcurl users and README
readers type."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import cli, cli_call
from cluster.config import ConfigError
from regraft.v1 import registry_pb2


@pytest.mark.parametrize(
    "name",
    [
        "ListTags",
        "Registry/ListTags",
        "regraft.v1.Registry/ListTags",
        "regraft.v1.Registry.ListTags",
    ],
)
def test_a_method_is_found_by_every_name_it_is_known_by(name):
    assert cli_call.methods()[name].full_name == "regraft.v1.Registry.ListTags"


def test_an_unknown_method_is_named_with_the_way_to_list_them(capsys):
    assert cli.main(["call", "regraft.v1.Registry/ListTag", "{}"]) == 2
    assert "no method 'regraft.v1.Registry/ListTag': `regraft call list`" in capsys.readouterr().err


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_NOT_OBJECTS = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=5)


@settings(max_examples=60, deadline=None)
@given(value=_NOT_OBJECTS.filter(lambda v: v is not None))
def test_a_message_field_given_something_else_than_an_object_is_named(value):
    text = json.dumps({"repository": "a", "reference": "b", "read": value})
    with pytest.raises(ConfigError) as caught:
        cli_call._request(cli_call.methods()["GetManifest"], text)
    assert str(caught.value).startswith(
        "GetManifest request: field 'read' is a regraft.v1.ReadOptions message: give an "
        "object with its fields (consistency, min_revision), not "
    )


@pytest.mark.parametrize(
    ("method", "text", "named"),
    [
        ("SetGrant", '{"grant": {"scope": "x"}}', "field 'grant.scope' is a regraft.v1.Scope"),
        ("SetGrant", '{"grant": [1]}', "field 'grant' is a regraft.v1.Grant"),
        ("SetGrant", '{"grant": {"scope": {"repository": 3}}}', "Failed to parse repository"),
    ],
)
def test_mistakes_inside_messages_are_named_with_their_path(method, text, named):
    with pytest.raises(ConfigError) as caught:
        cli_call._request(cli_call.methods()[method], text)
    assert named in str(caught.value)


def test_objects_where_messages_go_are_parsed():
    request = cli_call._request(
        cli_call.methods()["GetManifest"],
        '{"repository": "a", "reference": "b", "read": {"consistency": "STALE"}}',
    )
    assert request.read.consistency == registry_pb2.STALE
