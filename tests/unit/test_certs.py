"""`regraft certs` (cluster/certificates.py, cluster/cli_certs.py): the files, what
the certificates say, a real mutual-TLS handshake with them, and the refusals."""

import concurrent.futures
import ipaddress
import os
import stat

import grpc
import pytest
from cryptography import x509
from cryptography.x509 import DNSName
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cluster import auth, cli
from cluster.certificates import Authority
from cluster.config import ConfigError


def run(*argv: str) -> int:
    return cli.main(["certs", *argv])


def load(path: str) -> x509.Certificate:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_ca_and_what_it_issues(tmp_path, capsys):
    pki = str(tmp_path / "pki")
    assert run("init", pki) == 0
    assert run("issue", pki, "replica", "--host", "r1.example", "--host", "10.0.0.1") == 0
    assert capsys.readouterr().out.split() == [
        f"{pki}/ca.pem",
        f"{pki}/replica.pem",
        f"{pki}/replica.key",
    ]
    ca, replica = load(f"{pki}/ca.pem"), load(f"{pki}/replica.pem")
    # RFC 5280 as strict verifiers apply it (Python 3.13's ssl, cryptography's own).
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(DNSName("r1.example"))
    assert verifier.verify(replica, []) == [replica, ca]
    assert replica.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "replica"
    sans = replica.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["r1.example"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1")]
    usage = replica.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not replica.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert mode(f"{pki}/ca.key") == mode(f"{pki}/replica.key") == 0o600
    assert mode(f"{pki}/replica.pem") == 0o644
    assert not [name for name in os.listdir(pki) if name.endswith(".tmp")]


def test_issuing_again_replaces_the_certificate(tmp_path):
    pki = str(tmp_path)
    authority = Authority.create(pki)
    first = load(authority.issue("frontend").cert_file)
    second = load(Authority.load(pki).issue("frontend", days=30).cert_file)
    assert first.serial_number != second.serial_number
    assert (second.not_valid_after_utc - second.not_valid_before_utc).days == 30


def test_the_entry_printed_for_a_caller_is_a_callers_file_entry(tmp_path, capsys):
    pki = str(tmp_path)
    run("init", pki)
    assert run("issue", pki, "ops-alice", "--role", "admin") == 0
    entry = capsys.readouterr().err
    callers = auth.parse_callers(entry, "the printed entry")
    assert callers.certificates["ops-alice"].role == auth.ADMIN


def test_callers_are_added_to_the_callers_file_once(tmp_path, capsys):
    """Issuing again (a renewal) leaves the entry as it is; another role is refused
    before anything is issued."""
    pki, callers = str(tmp_path / "pki"), str(tmp_path / "callers.toml")
    run("init", pki)
    for name, role in (("ops", "admin"), ("frontend", "registry"), ("ops", "admin")):
        assert run("issue", pki, name, "--role", role, "--callers", callers) == 0
    with open(callers) as f:
        text = f.read()
    parsed = auth.parse_callers(text, callers)
    assert {n: c.role for n, c in parsed.certificates.items()} == {
        "ops": "admin",
        "frontend": "registry",
    }
    assert text.count('name = "ops"') == 1
    capsys.readouterr()
    assert run("issue", pki, "viewer-x", "--role", "reader", "--callers", callers) == 0
    assert run("issue", pki, "frontend", "--role", "admin", "--callers", callers) == 2
    assert "already gives 'frontend' role registry, not admin" in capsys.readouterr().err
    assert run("issue", pki, "other", "--callers", callers) == 2
    assert "--callers needs --role" in capsys.readouterr().err
    assert run("issue", pki, "other", "--role", "reader", "--callers", callers, "--host=a..b") == 2
    assert "host 'a..b' is neither" in capsys.readouterr().err
    assert not os.path.exists(f"{pki}/other.pem")
    with open(callers) as f:
        assert f.read().count("[[certificate]]") == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_renewal_keeps_the_owner_and_follows_links(tmp_path):
    """A key chowned to the replica's user (as deploy/compose says) stays readable to
    it when renewed with sudo; a callers file reached through a link is edited where
    it is."""
    pki = str(tmp_path / "pki")
    run("init", pki)
    issued = Authority.load(pki).issue("replica")
    os.chown(issued.key_file, 10001, 10001)
    real = tmp_path / "etc" / "callers.toml"
    real.parent.mkdir()
    real.write_text("")
    os.chown(real, 10001, 10001)
    link = tmp_path / "callers.toml"
    link.symlink_to(real)
    assert run("issue", pki, "replica", "--role", "reader", "--callers", str(link)) == 0
    assert os.stat(issued.key_file).st_uid == 10001 and mode(issued.key_file) == 0o600
    assert link.is_symlink() and 'name = "replica"' in real.read_text()
    assert os.stat(real).st_uid == 10001


def test_a_replica_and_a_caller_complete_a_mutual_tls_handshake(tmp_path):
    """grpcio accepts the certificates: a caller with one is served, one whose
    certificate comes from another CA is not."""
    authority = Authority.create(str(tmp_path / "pki"))
    replica = authority.issue("replica", ["localhost", "127.0.0.1"])
    caller = authority.issue("ops")
    stranger = Authority.create(str(tmp_path / "other")).issue("ops")

    def read(*paths: str) -> list[bytes]:
        contents = []
        for path in paths:
            with open(path, "rb") as f:
                contents.append(f.read())
        return contents

    ca, cert, key = read(authority.ca_file, replica.cert_file, replica.key_file)
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    credentials = grpc.ssl_server_credentials([(key, cert)], ca, require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        for issued, served in ((caller, True), (stranger, False)):
            client_cert, client_key = read(issued.cert_file, issued.key_file)
            channel_credentials = grpc.ssl_channel_credentials(ca, client_key, client_cert)
            with grpc.secure_channel(f"localhost:{port}", channel_credentials) as channel:
                check = health_pb2_grpc.HealthStub(channel).Check
                if served:
                    assert check(health_pb2.HealthCheckRequest(), timeout=10).status
                else:
                    with pytest.raises(grpc.RpcError) as refused:
                        check(health_pb2.HealthCheckRequest(), timeout=10)
                    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(None).wait()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["issue", "{pki}", "bad name"], "certificate name 'bad name' must be"),
        (["issue", "{pki}", "../escape"], "certificate name '../escape' must be"),
        (["issue", "{pki}", "x", "--host", "a..b"], "host 'a..b' is neither an IP address"),
        (["issue", "{pki}", "x", "--host=a-.b"], "host 'a-.b' is neither"),
        (["issue", "{pki}", "x", "--host", "*.regraft"], "a wildcard over a single label"),
        (["issue", "{pki}", "x", "--days", "0"], "--days 0 is not from 1 to 36500"),
        (["issue", "{pki}", "x", "--days", "36000"], "--days 36000 outlasts the CA"),
        (["issue", "{pki}", "ca"], "'ca' would replace the CA's own files"),
        (["issue", "{pki}", "x", "--host", "10.0.0.256"], "host '10.0.0.256' is neither"),
        (["issue", "{pki}", "x", "--host", "fe80::1%eth0"], "cannot name an address's zone"),
        (["init", "{pki}/ca.pem/under"], "cannot write {pki}/ca.pem/under"),
        (["issue", "{pki}/none", "x"], "ca.pem does not exist: make a CA first"),
        (["init", "{pki}"], "already holds a CA"),
    ],
)
def test_bad_input_is_refused_naming_it_and_writes_nothing(tmp_path, capsys, argv, message):
    pki = str(tmp_path)
    Authority.create(pki)
    before = sorted(os.listdir(pki))
    assert run(*(a.format(pki=pki) for a in argv)) == 2
    assert message.format(pki=pki) in capsys.readouterr().err
    assert sorted(os.listdir(pki)) == before


def test_a_directory_without_a_ca_of_ours_is_said_so(tmp_path):
    (tmp_path / "ca.pem").write_text("not a certificate")
    (tmp_path / "ca.key").write_text("not a key")
    with pytest.raises(ConfigError, match="does not hold a CA made by regraft"):
        Authority.load(str(tmp_path))
