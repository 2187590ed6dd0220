"""Who may call what: the role table, the callers file, identification, TLS files."""

import contextlib
import os

import grpc
import prometheus_client
import pytest

from cluster import auth
from cluster.auth import ADMIN, READER, REGISTRY, Caller, Callers
from cluster.client import CredentialError, Credentials, dial, read_token
from cluster.config import ConfigError, ReplicaConfig
from regraft.v1 import cluster_pb2, registry_pb2
from storage import commands, machine, registry, versions
from storage.errors import InvalidArgument
from storage.names import compute_digest
from tests.certs import Authority
from tests.unit.test_storage import Replica, all_events, link

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKEN = "s3cret-token"


def methods(module, service: str) -> list[str]:
    descriptor = module.DESCRIPTOR.services_by_name[service]
    return [f"/{descriptor.full_name}/{m.name}" for m in descriptor.methods]


def test_every_registry_method_is_classified_and_writes_need_the_registry_role():
    """A new Registry method must be placed on purpose, not fall to admin by default."""
    for method in methods(registry_pb2, "Registry"):
        assert method in auth.METHOD_ROLES, method
    writes = {m for m in methods(registry_pb2, "Registry") if auth.required_role(m) == REGISTRY}
    assert {m.rsplit("/", 1)[1] for m in writes} == {
        "PutManifest",
        "DeleteManifest",
        "PutTag",
        "DeleteTag",
        "LinkBlob",
        "UnlinkBlob",
        "MountBlob",
    }


@pytest.mark.parametrize(
    ("method", "reader", "registry", "admin"),
    [
        ("/regraft.v1.Registry/GetManifest", True, True, True),
        ("/regraft.v1.Registry/Watch", True, True, True),
        ("/regraft.v1.Registry/PutManifest", False, True, True),
        ("/regraft.v1.Registry/DeleteTag", False, True, True),
        ("/regraft.v1.Cluster/Status", True, True, True),
        ("/regraft.v1.Cluster/ListMembers", True, True, True),
        ("/regraft.v1.Cluster/Backup", False, False, True),
        ("/regraft.v1.Cluster/AddMember", False, False, True),
        ("/regraft.v1.Cluster/TransferLeadership", False, False, True),
        ("/regraft.v1.Access/CheckAccess", True, True, True),
        ("/regraft.v1.Access/VerifyPassword", False, True, True),
        ("/regraft.v1.Access/CreateUser", False, False, True),
        ("/regraft.v1.Access/ListTeams", False, False, True),
        ("/some.Unknown/Method", False, False, True),
    ],
)
def test_role_table(method, reader, registry, admin):
    assert [auth.allows(r, method) for r in (READER, REGISTRY, ADMIN)] == [reader, registry, admin]
    assert not auth.allows(None, method)


def test_cluster_methods_other_than_status_and_list_members_need_admin():
    for method in methods(cluster_pb2, "Cluster"):
        expected = READER if method.endswith(("/Status", "/ListMembers")) else ADMIN
        assert auth.required_role(method) == expected, method


def test_access_administration_needs_admin():
    from regraft.v1 import access_pb2

    for method in methods(access_pb2, "Access"):
        expected = {"CheckAccess": READER, "VerifyPassword": REGISTRY}.get(
            method.rsplit("/", 1)[1], ADMIN
        )
        assert auth.required_role(method) == expected, method


def test_health_and_reflection_need_no_credentials():
    for method in (
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ):
        assert auth.required_role(method) is None
        assert auth.allows(None, method)


CALLERS = f"""
[[certificate]]
name = "frontend-1"
role = "registry"

[[token]]
name = "backup-job"
role = "admin"
sha256 = "{auth.token_hash(TOKEN)}"
"""


def test_callers_file_parses():
    callers = auth.parse_callers(CALLERS, "callers.toml")
    assert callers.certificates == {"frontend-1": Caller("frontend-1", REGISTRY, "cert")}
    assert callers.tokens == {auth.token_hash(TOKEN): Caller("backup-job", ADMIN, "token")}
    assert callers.tokens[auth.token_hash(TOKEN)].actor == "token:backup-job"


def test_the_shipped_example_callers_file_parses():
    path = os.path.join(ROOT, "deploy", "config", "callers.toml")
    with open(path) as f:
        callers = auth.parse_callers(f.read(), path)
    assert callers.certificates["registry-frontend-1"].role == REGISTRY
    assert len(callers.tokens) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[certificate]]\nname = "a"\nrole = "root"\n', "role 'root' is not one of"),
        ('[[certificate]]\nname = "a"\n', r"missing \['role'\]"),
        ('[[certificate]]\nname = "a"\nrole = "admin"\ncolour = 1\n', r"unknown \['colour'\]"),
        ('[[token]]\nname = "a"\nrole = "admin"\nsha256 = "abc"\n', "sha256 'abc' is not 64 hex"),
        ('[[certificate]]\nname = ""\nrole = "admin"\n', "name '' is not 1 to"),
        ('[[certificate]]\nname = "a\\u0007"\nrole = "admin"\n', "printable"),
        (
            '[[certificate]]\nname = "a"\nrole = "admin"\n[[certificate]]\nname = "a"\n'
            'role = "reader"\n',
            "number 2: name 'a' is listed twice",
        ),
        (
            f'[[token]]\nname = "a"\nrole = "admin"\nsha256 = "{"a" * 64}"\n'
            f'[[token]]\nname = "b"\nrole = "admin"\nsha256 = "{"A" * 64}"\n',
            "the same token as 'a'",
        ),
        ('[[users]]\nname = "a"\n', r"unknown keys \['users'\]"),
        ("certificate = 3\n", "must be a"),
        ("name = \n", "callers.toml"),
    ],
)
def test_callers_file_errors_name_the_entry_and_value(text, message):
    with pytest.raises(ConfigError, match=message) as raised:
        auth.parse_callers(text, "callers.toml")
    assert "callers.toml" in str(raised.value)


def test_callers_file_reloads_when_it_changes_and_keeps_the_old_when_broken(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(auth, "_RELOAD_CHECK_SECONDS", 0.0)
    path = tmp_path / "callers.toml"
    path.write_text('[[certificate]]\nname = "a"\nrole = "reader"\n')
    callers = auth.CallersFile(str(path))
    assert callers.current().certificates["a"].role == READER
    path.write_text('[[certificate]]\nname = "a"\nrole = "admin"\n# longer\n')
    assert callers.current().certificates["a"].role == ADMIN
    path.write_text('[[certificate]]\nname = "a"\nrole = "superuser"\n# even longer\n')
    assert callers.current().certificates["a"].role == ADMIN
    assert "superuser" in caplog.text
    path.write_bytes(b'[[certificate]]\nname = "\xff"\nrole = "reader"\n# not UTF-8\n')
    assert callers.current().certificates["a"].role == ADMIN
    assert "is not UTF-8" in caplog.text
    with pytest.raises(ConfigError, match="No such file"):
        auth.CallersFile(str(tmp_path / "absent.toml"))


class FixedCallers:
    def __init__(self, callers: Callers) -> None:
        self._callers = callers

    def current(self) -> Callers:
        return self._callers


def interceptor(with_callers: bool = True) -> auth.AuthInterceptor:
    callers = FixedCallers(auth.parse_callers(CALLERS, "callers.toml")) if with_callers else None
    return auth.AuthInterceptor(callers, secret="x" * 32)


def bearer(token: str) -> tuple:
    return (("authorization", f"Bearer {token}"),)


def cert(name: str) -> dict:
    return {"x509_common_name": [name.encode()]}


def test_identify_by_token_peer_token_or_certificate():
    checks = interceptor()
    by_token = checks.identify(bearer(TOKEN), cert("frontend-1"))
    assert by_token == Caller("backup-job", ADMIN, "token")
    peer = checks.identify(bearer(auth.peer_token("x" * 32)), {})
    assert (peer.actor, peer.role) == ("peer:replica", READER)
    assert checks.identify((), cert("frontend-1")) == Caller("frontend-1", REGISTRY, "cert")
    assert checks.identify((), cert("stranger")) == Caller("stranger", None, "cert")


@pytest.mark.parametrize(
    ("metadata", "context", "message"),
    [
        ((), {}, "no credentials"),
        (bearer("wrong"), {}, "not in the callers file"),
        (bearer(auth.peer_token("another secret")), {}, "not in the callers file"),
        ((("authorization", "Basic abc"),), {}, "not `Bearer <token>`"),
        ((("authorization", "Bearer "),), {}, "not `Bearer <token>`"),
    ],
)
def test_unidentified_callers_are_refused(metadata, context, message):
    with pytest.raises(auth._Unauthenticated, match=message):
        interceptor().identify(metadata, context)


def test_without_a_callers_file_everyone_is_admin_and_identified_when_possible():
    checks = interceptor(with_callers=False)
    assert checks.identify((), {}) is auth.ANONYMOUS
    assert checks.identify(bearer("anything"), cert("ci")) == Caller("ci", ADMIN, "cert")
    assert auth.ANONYMOUS.actor == ""


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self, peer: dict) -> None:
        self._peer = peer
        self.aborted = None

    def auth_context(self) -> dict:
        return self._peer

    def abort(self, code, details):
        self.aborted = (code, details)
        raise Aborted


def call_through(method: str, metadata: tuple, peer: dict):
    """Run a unary handler through the interceptor: (what the servicer saw, context)."""
    seen = []

    def behavior(request, context):
        seen.append(auth.actor(context))
        return "answer"

    handler = grpc.unary_unary_rpc_method_handler(behavior)
    details = type("Details", (), {"method": method, "invocation_metadata": metadata})()
    wrapped = interceptor().intercept_service(lambda _: handler, details)
    context = FakeContext(peer)
    with contextlib.suppress(Aborted):
        wrapped.unary_unary("request", context)
    return seen, context.aborted


def refusals(method: str, code: str) -> float:
    return (
        prometheus_client.REGISTRY.get_sample_value(
            "regraft_grpc_requests_total", {"method": method, "code": code}
        )
        or 0.0
    )


def test_the_interceptor_denies_naming_method_and_role_and_passes_the_actor():
    denied_before = refusals("Backup", "PERMISSION_DENIED")
    anonymous_before = refusals("GetManifest", "UNAUTHENTICATED")
    seen, aborted = call_through("/regraft.v1.Registry/PutTag", (), cert("frontend-1"))
    assert (seen, aborted) == (["cert:frontend-1"], None)
    seen, aborted = call_through("/regraft.v1.Cluster/Backup", (), cert("frontend-1"))
    assert seen == []
    assert aborted == (
        grpc.StatusCode.PERMISSION_DENIED,
        "/regraft.v1.Cluster/Backup needs role admin (or above); cert:frontend-1 has role registry",
    )
    _, aborted = call_through("/regraft.v1.Registry/GetManifest", (), cert("stranger"))
    assert aborted[0] == grpc.StatusCode.PERMISSION_DENIED
    assert "cert:stranger has no role" in aborted[1]
    _, aborted = call_through("/regraft.v1.Registry/GetManifest", (), {})
    assert aborted[0] == grpc.StatusCode.UNAUTHENTICATED
    assert aborted[1].startswith("/regraft.v1.Registry/GetManifest: no credentials")
    seen, aborted = call_through("/grpc.health.v1.Health/Check", (), {})
    assert (seen, aborted) == ([""], None)
    # Refusals are counted as requests, by the code they got.
    assert refusals("Backup", "PERMISSION_DENIED") == denied_before + 1
    assert refusals("GetManifest", "UNAUTHENTICATED") == anonymous_before + 1


# -- TLS files --------------------------------------------------------------------------


def test_server_tls_refuses_bad_files_naming_the_option(tmp_path):
    ca = Authority(str(tmp_path))
    one, other = ca.issue("one"), ca.issue("other")
    with pytest.raises(ConfigError, match=r"tls_key_file .* does not belong to the certificate"):
        auth.ServerTls(one.cert_file, other.key_file)
    with pytest.raises(ConfigError, match=r"tls_cert_file '.*absent.pem': No such file"):
        auth.ServerTls(str(tmp_path / "absent.pem"), one.key_file)
    with pytest.raises(ConfigError, match=r"tls_client_ca_file .* holds no PEM certificate"):
        auth.ServerTls(one.cert_file, one.key_file, one.key_file)
    with pytest.raises(ConfigError, match=r"tls_key_file .* is not an unencrypted PEM private key"):
        auth.ServerTls(one.cert_file, one.cert_file)


def test_server_tls_reloads_changed_files_and_keeps_the_old_ones_when_they_do_not_load(tmp_path):
    ca = Authority(str(tmp_path))
    served = ca.issue("server")
    tls = auth.ServerTls(served.cert_file, served.key_file, ca.ca_file)
    assert tls.fetch() is None  # unchanged
    ca.issue("server")  # new key and certificate under the same names
    assert isinstance(tls.fetch(), grpc.ServerCertificateConfiguration)
    assert tls.fetch() is None
    # The key replaced before the certificate: refused until the certificate follows.
    os.replace(ca.issue("next").key_file, served.key_file)
    assert tls.fetch() is None
    os.replace(os.path.join(str(tmp_path), "next.pem"), served.cert_file)
    assert isinstance(tls.fetch(), grpc.ServerCertificateConfiguration)


# -- configuration and client credentials -----------------------------------------------


def config(tmp_path, **changes) -> ReplicaConfig:
    base = ReplicaConfig(
        id="r1",
        data_dir=str(tmp_path / "r1"),
        raft_address="127.0.0.1:7411",
        grpc_address="127.0.0.1:7401",
        secret_file="/etc/regraft/secret",
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tls_cert_file": "c.pem"}, "tls_cert_file 'c.pem' is set but tls_key_file is not"),
        ({"tls_key_file": "k.pem"}, "tls_key_file 'k.pem' is set but tls_cert_file is not"),
        ({"tls_client_ca_file": "ca.pem"}, "tls_client_ca_file 'ca.pem' needs TLS"),
        ({"tls_ca_file": "ca.pem"}, "tls_ca_file 'ca.pem' needs TLS"),
        (
            {"callers_file": "callers.toml", "grpc_address": "10.0.0.1:7401"},
            "bearer tokens would cross the network in clear",
        ),
    ],
)
def test_tls_configuration_refusals(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, **changes).validate()


def test_plaintext_api_off_loopback_is_allowed_but_warned_about(tmp_path):
    exposed = config(tmp_path, grpc_address="10.0.0.1:7401")
    exposed.validate()
    assert "neither encrypted nor authenticated" in exposed.warnings()[0]
    assert config(tmp_path).warnings() == []
    tls = {"grpc_address": "10.0.0.1:7401", "tls_cert_file": "c", "tls_key_file": "k"}
    encrypted = config(tmp_path, **tls)
    encrypted.validate()
    [warning] = encrypted.warnings()
    assert "encrypted but does not authenticate its callers" in warning
    assert "10.0.0.1:7401" in warning
    for authenticated in ({"tls_client_ca_file": "ca"}, {"callers_file": "callers.toml"}):
        assert config(tmp_path, **tls, **authenticated).warnings() == []


def test_peer_credentials_follow_the_servers_tls(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("y" * 32)
    mutual = config(
        tmp_path,
        secret_file=str(secret),
        tls_cert_file="c.pem",
        tls_key_file="k.pem",
        tls_client_ca_file="ca.pem",
    )
    assert auth.peer_credentials(mutual) == Credentials(
        ca_file="ca.pem",
        cert_file="c.pem",
        key_file="k.pem",
        token=auth.peer_token("y" * 32),
        tls=True,
    )
    plain = config(tmp_path, secret_file=str(secret))
    assert not auth.peer_credentials(plain).secure


def test_token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(f"  {TOKEN}\n")
    assert read_token(str(path)) == TOKEN
    path.write_text("two words\n")
    with pytest.raises(CredentialError, match="does not hold one token"):
        read_token(str(path))
    with pytest.raises(CredentialError, match="No such file"):
        read_token(str(tmp_path / "absent"))


# -- the audit log's retention ----------------------------------------------------------

HOUR_MS = 3600 * 1000


def timed(command, time_ms: int):
    command.time_ms = time_ms
    return command


def links(store: Replica, count: int, time_ms: int, seed: str) -> None:
    for i in range(count):
        blob = compute_digest(f"{seed}{i}".encode())
        store.ok(timed(link("repo", blob), time_ms))


def history(store: Replica) -> tuple[int, list[int]]:
    with store.store.read() as view:
        return registry.events_floor(view), [e.revision for e in all_events(view)]


@pytest.fixture
def stores(tmp_path):
    """Two state machines, as two replicas applying the same log, at the latest
    machine version (storage/versions.py)."""
    made = [Replica(str(tmp_path / "a")), Replica(str(tmp_path / "b"))]
    for store in made:
        # Timed (long ago): an event without a time would stop pruning by age.
        store.ok(timed(commands.set_machine_version(versions.LATEST), 1))
    yield made
    for store in made:
        store.store.close()


def small_retention_allowed(monkeypatch) -> None:
    """Apply-level tests use tiny retentions; the API refuses them (see below)."""
    monkeypatch.setattr(registry, "MIN_EVENT_REVISIONS", 1)
    monkeypatch.setattr(commands, "MIN_EVENT_AGE_SECONDS", 1)


def test_retention_too_small_to_audit_is_refused():
    with pytest.raises(InvalidArgument) as few:
        commands.set_event_retention(revisions=5, max_age_seconds=0)
    assert few.value.field == "revisions" and "5" in few.value.message
    with pytest.raises(InvalidArgument) as short:
        commands.set_event_retention(revisions=0, max_age_seconds=3600)
    assert short.value.field == "max_age_seconds" and "3600" in short.value.message
    commands.set_event_retention(revisions=0, max_age_seconds=0)  # the defaults


def test_event_retention_by_revisions_is_replicated_state(stores, monkeypatch):
    monkeypatch.setattr(machine, "PRUNE_EVERY", 1)
    small_retention_allowed(monkeypatch)
    for store in stores:
        store.ok(commands.set_event_retention(revisions=5, max_age_seconds=0, actor="cert:ops"))
        links(store, 20, 0, "blob")
    first = stores[0]
    floor, revisions = history(first)
    assert floor == first.index - 5
    assert revisions == list(range(floor, first.index + 1))
    assert history(stores[1]) == (floor, revisions)
    assert first.state_hash() == stores[1].state_hash()
    # A longer retention later does not pretend that forgotten history exists.
    first.ok(commands.set_event_retention(revisions=1000, max_age_seconds=0))
    links(first, 3, 0, "more")
    assert history(first)[0] == floor


def test_event_retention_by_age_uses_the_times_in_the_log(stores, monkeypatch):
    monkeypatch.setattr(machine, "PRUNE_EVERY", 1)
    small_retention_allowed(monkeypatch)
    store = stores[0]
    start = 1_800_000_000_000
    links(store, 4, 0, "untimed")  # written before entries carried a time: kept
    links(store, 6, start, "old")
    untimed_and_old = store.index
    store.ok(timed(commands.set_event_retention(0, max_age_seconds=3600), start + 1))
    links(store, 3, start + HOUR_MS // 2, "recent")
    # The fixture's machine version change (written long ago) went by age; the untimed
    # ones after it stop age pruning.
    assert history(store)[0] == 2
    monkeypatch.setattr(registry, "EVENT_RETENTION", store.index - 4)
    late = start + HOUR_MS + HOUR_MS // 4
    links(store, 2, late, "late")
    floor, revisions = history(store)
    # Untimed ones fell out by revisions, the old ones by age (the retention change,
    # written at `start`, among them); the recent ones stay.
    assert floor == untimed_and_old + 2
    assert revisions[0] == floor
    with store.store.read() as view:
        assert {e.time_ms for e in all_events(view)} == {start + HOUR_MS // 2, late}


def test_a_clock_far_ahead_cannot_erase_the_recent_history(stores, monkeypatch):
    monkeypatch.setattr(machine, "PRUNE_EVERY", 1)
    small_retention_allowed(monkeypatch)
    monkeypatch.setattr(registry, "MIN_EVENT_REVISIONS", 5)
    store = stores[0]
    start = 1_800_000_000_000
    store.ok(timed(commands.set_event_retention(0, max_age_seconds=3600), start))
    links(store, 10, start, "now")
    links(store, 1, start + 100 * 365 * 86400 * 1000, "future")  # a clock a century ahead
    # Everything older than "an hour before the future entry" may go, but not the last 5.
    floor, revisions = history(store)
    assert revisions == list(range(store.index - 4, store.index + 1))
    assert floor == store.index - 4


def test_a_token_is_never_sent_in_clear_over_a_network():
    token = Credentials(token="s3cret")
    with pytest.raises(CredentialError, match=r"in clear text to 10\.0\.0\.5:7401"):
        dial("10.0.0.5:7401", token)
    dial("127.0.0.1:7401", token).close()  # loopback: no network to cross
    dial("10.0.0.5:7401", Credentials(token="s3cret", tls=True)).close()


class Peer:
    def __init__(self, peer: str, caller=None) -> None:
        self._peer = peer
        if caller is not None:
            self.caller = caller

    def peer(self) -> str:
        return self._peer


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("ipv4:10.0.0.7:5555", "ipv4:10.0.0.7"),
        # One host holds a whole /64: rotating source addresses gets no more share.
        ("ipv6:[2001:db8::1:2]:443", "ipv6:2001:db8::/64"),
        ("ipv6:[2001:db8::ffff]:80", "ipv6:2001:db8::/64"),
        ("ipv6:[fe80::1%eth0]:1", "ipv6:fe80::/64"),
        ("unix:/run/regraft.sock", "unix"),
    ],
)
def test_a_stream_s_holder_is_its_caller_s_host_without_an_identity(peer, key):
    assert auth.caller_key(Peer(peer)) == key
    alice = auth.Caller("alice", auth.READER, "token")
    assert auth.caller_key(Peer(peer, alice)) == "token:alice"
