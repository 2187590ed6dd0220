"""`regraft call`'s names for methods: what grpcurl users and README readers type."""

import pytest

from cluster import cli, cli_call


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
