"""Replica configuration: files, flags, and the refusals that keep a cluster safe."""

import os

import pytest

from cluster import config
from cluster.config import ConfigError, Peer, ReplicaConfig
from cluster.membership import configured_members

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def valid(tmp_path, **changes) -> ReplicaConfig:
    secret = tmp_path / "secret"
    secret.write_text("x" * 32)
    base = ReplicaConfig(
        id="r1",
        data_dir=str(tmp_path / "r1"),
        raft_address="127.0.0.1:7411",
        grpc_address="127.0.0.1:7401",
        secret_file=str(secret),
        peers=[Peer("r2", "127.0.0.1:7412", "127.0.0.1:7402")],
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_the_shipped_example_configuration_is_valid():
    example = config.load(os.path.join(ROOT, "deploy/config/replica.toml"))
    example.secret_file = ""
    example.insecure = False
    with pytest.raises(ConfigError, match="secret"):
        example.validate()
    example.secret_file = "/etc/regraft/secret"
    example.validate()
    assert [p.id for p in example.peers] == ["r2", "r3"]
    with open(os.path.join(ROOT, "deploy/systemd/regraft.service")) as f:
        assert "regraft serve --config /etc/regraft/regraft.toml" in f.read()


def test_dump_and_load_round_trip(tmp_path):
    original = valid(
        tmp_path,
        snapshot_entries=123,
        metrics_address="127.0.0.1:7421",
        advertise_grpc_address="r1.example:7401",
    )
    path = tmp_path / "r1.toml"
    path.write_text(config.dump(original))
    assert config.load(str(path)) == original


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": ""}, "id is required"),
        ({"raft_address": "nohost"}, "raft_address 'nohost' is not host:port"),
        ({"grpc_address": "127.0.0.1:99999"}, "grpc_address"),
        ({"peers": [Peer("r1", "127.0.0.1:7412", "127.0.0.1:7402")]}, "ids must be unique"),
        ({"secret_file": ""}, "no cluster secret"),
        (
            {"secret_file": "", "insecure": True, "raft_address": "10.1.2.3:7411"},
            "loopback",
        ),
        ({"heartbeat": 0.5}, "three heartbeats"),
        ({"advertise_grpc_address": "0:7401"}, "advertise_grpc_address.*every interface"),
        ({"advertise_grpc_address": "r1"}, "advertise_grpc_address 'r1' is not host:port"),
        # A TOML file may give any type: each is named, not a traceback later.
        ({"election_timeout_min": "x"}, r'election_timeout_min must be a number, got "x" \(str\)'),
        ({"snapshot_entries": "many"}, "snapshot_entries must be a whole number"),
        ({"snapshot_entries": 2.5}, "snapshot_entries must be a whole number"),
        ({"join": "false"}, r'join must be true or false, got "false" \(str\)'),
        ({"insecure": 1}, "insecure must be true or false"),
        ({"id": 7}, "id must be a string"),
        ({"snapshot_entries": 0}, "snapshot_entries must be above 0 and finite, got 0"),
        ({"snapshot_entries": -5}, "snapshot_entries must be above 0"),
        ({"tick": 0}, "tick must be above 0"),
        ({"snapshot_seconds": float("inf")}, "snapshot_seconds must be above 0 and finite"),
        ({"log_level": "LOUD"}, "log_level 'LOUD' is not one of DEBUG, INFO"),
    ],
)
def test_refusals_name_what_is_wrong(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        valid(tmp_path, **changes).validate()


@pytest.mark.parametrize("wildcard", ["0.0.0.0:7401", "[::]:7401"])
def test_a_wildcard_api_address_needs_one_to_advertise(tmp_path, wildcard):
    """The others would be told to dial 0.0.0.0: said at start, and the advertised
    address is what this replica calls itself among the members."""
    bound = valid(tmp_path, grpc_address=wildcard)
    bound.validate()
    assert any(f"grpc_address {wildcard} is a wildcard" in w for w in bound.warnings())
    advertised = valid(tmp_path, grpc_address=wildcard, advertise_grpc_address="r1.example:7401")
    advertised.validate()
    assert not any("wildcard" in w for w in advertised.warnings())
    assert advertised.advertised_grpc_address == "r1.example:7401"
    (me,) = [m for m in configured_members(advertised) if m.id == "r1"]
    assert me.grpc_address == "r1.example:7401"
    assert valid(tmp_path).advertised_grpc_address == "127.0.0.1:7401"


def test_a_peer_named_by_a_wildcard_is_said_at_start(tmp_path):
    """`member add` of a cluster seeded before advertise_grpc_address could print
    such a peer: dialing it reaches this replica, not the peer."""
    config = valid(tmp_path, peers=[Peer("r2", "127.0.0.1:7412", "0.0.0.0:7402")])
    config.validate()
    assert any("peer r2's grpc_address 0.0.0.0:7402 is a wildcard" in w for w in config.warnings())


def test_insecure_on_loopback_is_allowed(tmp_path):
    valid(tmp_path, secret_file="", insecure=True).validate()


def test_short_or_missing_secret_is_refused(tmp_path):
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(ConfigError, match="at least 16"):
        valid(tmp_path, secret_file=str(short)).read_secret()
    with pytest.raises(ConfigError, match="No such file"):
        valid(tmp_path, secret_file=str(tmp_path / "absent")).read_secret()


def test_unknown_keys_and_bad_toml_are_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('id = "r1"\nsnapshot_entrys = 5\n')
    with pytest.raises(ConfigError, match="snapshot_entrys"):
        config.load(str(path))
    path.write_text("id = \n")
    with pytest.raises(ConfigError, match=r"c\.toml"):
        config.load(str(path))


def test_peer_flag():
    assert config.parse_peer("r2=10.0.0.2:7411,10.0.0.2:7401") == Peer(
        "r2", "10.0.0.2:7411", "10.0.0.2:7401"
    )
    with pytest.raises(ConfigError, match="id=raft_host:port,grpc_host:port"):
        config.parse_peer("10.0.0.2:7411")
