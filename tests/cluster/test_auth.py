"""The gRPC API behind TLS, mutual TLS and bearer tokens, on real replica processes."""

import json
import os
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cluster import auth
from cluster.cli_members import call_leader
from cluster.client import Client, Credentials, dial
from regraft.v1 import (
    access_pb2,
    cluster_pb2,
    cluster_pb2_grpc,
    record_pb2,
    registry_pb2,
)
from tests.certs import Authority
from tests.cluster.harness import ROOT, LocalCluster, push, regraft

ADMIN_TOKEN = "admin-token-" + "a" * 20
READER_TOKEN = "reader-token-" + "b" * 20


def write_callers(path: str) -> str:
    with open(path, "w") as f:
        f.write(
            '[[certificate]]\nname = "ops"\nrole = "admin"\n'
            '[[certificate]]\nname = "frontend"\nrole = "registry"\n'
            '[[certificate]]\nname = "viewer"\nrole = "reader"\n'
            f'[[token]]\nname = "ci"\nrole = "admin"\nsha256 = "{auth.token_hash(ADMIN_TOKEN)}"\n'
            f'[[token]]\nname = "dashboard"\nrole = "reader"\n'
            f'sha256 = "{auth.token_hash(READER_TOKEN)}"\n'
        )
    return path


@pytest.fixture(scope="module")
def mtls(tmp_path_factory):
    """Three replicas requiring client certificates, with a callers file."""
    directory = str(tmp_path_factory.mktemp("mtls"))
    ca = Authority(os.path.join(directory, "pki"))
    server = ca.issue("replica")
    local = LocalCluster(
        os.path.join(directory, "cluster"),
        tls_cert_file=server.cert_file,
        tls_key_file=server.key_file,
        tls_client_ca_file=ca.ca_file,
        callers_file=write_callers(os.path.join(directory, "callers.toml")),
    )
    local.ca = ca
    local.credentials = as_caller(ca, "ops")
    try:
        local.start()
        local.wait_for_leader()
        yield local
    finally:
        local.stop()


def as_caller(ca: Authority, name: str, token: str = "") -> Credentials:
    issued = ca.issue(name)
    return Credentials(ca.ca_file, issued.cert_file, issued.key_file, token)


def status_code(endpoint: str, credentials: Credentials) -> grpc.StatusCode:
    with dial(endpoint, credentials) as channel:
        try:
            cluster_pb2_grpc.ClusterStub(channel).Status(cluster_pb2.StatusRequest(), timeout=5)
        except grpc.RpcError as e:
            return e.code()
    return grpc.StatusCode.OK


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def test_callers_without_a_valid_client_certificate_cannot_connect(mtls, tmp_path):
    endpoint = mtls.endpoints[0]
    ca = mtls.ca
    assert status_code(endpoint, as_caller(ca, "viewer")) == grpc.StatusCode.OK
    # No certificate, plaintext, a certificate from another CA, an expired certificate:
    # the handshake fails, nothing reaches a servicer.
    stranger_ca = Authority(str(tmp_path / "other-ca"))
    expired = ca.issue("viewer", expired=True, file_name="viewer-expired")
    for credentials in (
        Credentials(ca_file=ca.ca_file),
        Credentials(),
        Credentials(ca.ca_file, *vars(stranger_ca.issue("viewer")).values()),
        Credentials(ca.ca_file, expired.cert_file, expired.key_file),
        Credentials(ca.ca_file, token=ADMIN_TOKEN),
    ):
        assert status_code(endpoint, credentials) == grpc.StatusCode.UNAVAILABLE, credentials
    # And the client refuses a replica whose certificate its CA did not sign.
    viewer = as_caller(ca, "viewer")
    mistrusting = Credentials(stranger_ca.ca_file, viewer.cert_file, viewer.key_file)
    assert status_code(endpoint, mistrusting) == grpc.StatusCode.UNAVAILABLE


def test_each_role_gets_what_it_may_and_permission_denied_for_the_rest(mtls):
    with mtls.client() as ops:
        pushed = push(ops, "auth/app", "v1", seed="roles")
    with Client(mtls.endpoints, credentials=as_caller(mtls.ca, "viewer")) as viewer:
        assert viewer.get_manifest("auth/app", "v1").digest == pushed.digest
        denied = refused(lambda: viewer.put_tag("auth/app", "v2", pushed.digest))
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert denied.details() == (
            "/regraft.v1.Registry/PutTag needs role registry (or above); "
            "cert:viewer has role reader"
        )
        assert viewer.cluster().ListMembers(cluster_pb2.ListMembersRequest(), timeout=10).members
    with Client(mtls.endpoints, credentials=as_caller(mtls.ca, "frontend")) as frontend:
        frontend.put_tag("auth/app", "v2", pushed.digest)
        for call in (
            lambda: next(frontend.cluster().Backup(cluster_pb2.BackupRequest(), timeout=10)),
            lambda: frontend.cluster().TransferLeadership(
                cluster_pb2.TransferLeadershipRequest(), timeout=10
            ),
            lambda: frontend.cluster().RemoveMember(
                cluster_pb2.RemoveMemberRequest(id="r3"), timeout=10
            ),
        ):
            denied = refused(call)
            assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "needs role admin" in denied.details()
            assert "cert:frontend has role registry" in denied.details()
    # Signed by the CA but not in the callers file: no role at all.
    with Client(mtls.endpoints, credentials=as_caller(mtls.ca, "unlisted")) as unlisted:
        denied = refused(lambda: unlisted.get_manifest("auth/app", "v1"))
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "cert:unlisted has no role" in denied.details()
        # Health needs no role: it answers (whatever the readiness).
        with dial(mtls.endpoints[0], unlisted.credentials) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            assert answer.status != health_pb2.HealthCheckResponse.UNKNOWN


def test_a_token_identifies_the_caller_over_any_client_certificate(mtls):
    with Client(mtls.endpoints, credentials=as_caller(mtls.ca, "unlisted", READER_TOKEN)) as c:
        assert c.status().id
        denied = refused(lambda: c.link_blob("auth/tok", "sha256:" + "1" * 64, 1))
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "token:dashboard has role reader" in denied.details()
    with Client(mtls.endpoints, credentials=as_caller(mtls.ca, "unlisted", "forged")) as c:
        assert refused(c.status).code() == grpc.StatusCode.UNAUTHENTICATED


def test_watch_events_carry_the_actor_of_each_write(mtls):
    frontend = as_caller(mtls.ca, "frontend")
    token_caller = as_caller(mtls.ca, "unlisted", ADMIN_TOKEN)
    with Client(mtls.endpoints, credentials=frontend) as client:
        first = push(client, "audit/app", "v1", seed="audit")
    with Client(mtls.endpoints, credentials=token_caller) as client:
        tagged = client.put_tag("audit/app", "v2", first.digest)
        stream = client.watch(from_revision=first.revision, repository_prefix="audit/")
        seen, times = [], []
        for event in stream:
            seen.append((event.revision, event.kind, event.actor))
            times.append(event.time_ms)
            if event.revision >= tagged.revision:
                break
        stream.cancel()
    kinds = registry_pb2.EventKind
    assert (first.revision, kinds.Value("MANIFEST_PUT"), "cert:frontend") in seen
    assert (tagged.revision, kinds.Value("TAG_SET"), "token:ci") in seen
    assert all(abs(time_ms / 1000 - time.time()) < 120 for time_ms in times)


def audit(cluster: LocalCluster, *arguments: str) -> str:
    """`regraft audit ...` as the cluster's admin (cert:ops); its standard output."""
    ops = cluster.credentials
    flags = ["--ca-file", ops.ca_file, "--cert-file", ops.cert_file, "--key-file", ops.key_file]
    done = regraft("audit", *arguments, *flags, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_admins_set_the_event_retention_for_every_replica(mtls):
    endpoints = ["--endpoints", ",".join(mtls.endpoints)]
    shown = audit(mtls, "retention", "--revisions", "5000", "--max-age", "30d", *endpoints)
    assert "last 5000 revisions; age limit: 2592000 s" in shown
    mtls.wait_converged()
    for replica in mtls.replicas:
        retention = mtls.status(replica).event_retention
        assert (retention.revisions, retention.max_age_seconds) == (5000, 30 * 86400)
    # Setting one of the two leaves the other as it was.
    assert "last 5000 revisions; age limit: 5184000 s" in audit(
        mtls, "retention", "--max-age", "60d", *endpoints
    )
    # Too short: refused in the flag's terms, before anything is sent.
    ops = mtls.credentials
    flags = ["--ca-file", ops.ca_file, "--cert-file", ops.cert_file, "--key-file", ops.key_file]
    short = regraft("audit", "retention", "--max-age", "1h", *endpoints, *flags, timeout=60)
    assert short.returncode == 2 and "--max-age: 3600 is too short" in short.stderr, short.stderr
    with Client(mtls.endpoints, credentials=as_caller(mtls.ca, "frontend")) as frontend:
        denied = refused(
            lambda: frontend.cluster().SetEventRetention(
                cluster_pb2.EventRetention(revisions=1), timeout=10
            )
        )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_audit_log_names_who_changed_accounts_and_when(mtls):
    ops = mtls.credentials
    with Client(mtls.endpoints, credentials=as_caller(mtls.ca, "unlisted", ADMIN_TOKEN)) as c:
        created = c.call(
            "CreateUser",
            access_pb2.CreateUserRequest(name="auditee", password="a long enough password"),
        )
    with Client(mtls.endpoints, credentials=ops) as client:
        granted = client.call(
            "SetGrant",
            access_pb2.SetGrantRequest(
                grant=access_pb2.Grant(
                    scope=access_pb2.Scope(repository="auditee/app"),
                    subject=access_pb2.Subject(user="auditee"),
                    level=access_pb2.READ_ONLY,
                )
            ),
        )
    endpoint = mtls.replicas[2].endpoint  # any replica: each keeps the same history
    mtls.wait_converged()
    span = ["--from-revision", str(created.revision), "--endpoints", endpoint]
    lines = audit(mtls, "log", *span).splitlines()
    assert lines[0].split() == [
        str(created.revision), lines[0].split()[1], "token:ci", "CreateUser", "user",
        "'auditee':", "admin:", "no,", "password", "set",
    ]  # fmt: skip
    assert lines[-1].split()[2:] == [
        "cert:ops", "SetGrant", "user", "'auditee'", "on", "repository", "'auditee/app':",
        "read-only",
    ]  # fmt: skip
    assert int(lines[-1].split()[0]) == granted.revision
    assert "argon2" not in "".join(lines)
    # JSON lines, the repository filter, and the range's end: the log ends, it does not wait.
    as_json = audit(mtls, "log", "--json", "--repository-prefix", "auditee/", *span)
    events = [json.loads(line) for line in as_json.splitlines()]
    assert [(e["operation"], e["actor"], e["repository"]) for e in events] == [
        ("SetGrant", "cert:ops", "auditee/app")
    ]


def test_replicas_reach_each_other_with_the_peer_token(mtls):
    """Membership checks call other replicas; they present the secret-derived token."""
    replica = mtls.replicas[1]
    peer = auth.peer_credentials(replica.config)
    assert peer.token and peer.cert_file
    assert status_code(replica.endpoint, peer) == grpc.StatusCode.OK
    with dial(replica.endpoint, peer) as channel:
        denied = refused(
            lambda: cluster_pb2_grpc.ClusterStub(channel).AddMember(
                cluster_pb2.AddMemberRequest(id="r9"), timeout=5
            )
        )
    assert "peer:replica has role reader" in denied.details()


def test_tokens_over_tls_and_the_cli(make_cluster, tmp_path):
    """Server-only TLS with bearer tokens: no credentials is UNAUTHENTICATED; the CLI
    takes --ca-file and the token from a file or REGRAFT_TOKEN."""
    ca = Authority(str(tmp_path / "pki"))
    server = ca.issue("replica")
    local = make_cluster(
        size=1,
        start=False,
        tls_cert_file=server.cert_file,
        tls_key_file=server.key_file,
        callers_file=write_callers(str(tmp_path / "callers.toml")),
    )
    local.credentials = Credentials(ca_file=ca.ca_file, token=ADMIN_TOKEN)
    local.start()
    local.wait_for_leader()
    anonymous = Credentials(ca_file=ca.ca_file)
    with Client(local.endpoints, credentials=anonymous) as client:
        denied = refused(client.status)
    assert denied.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "no credentials" in denied.details()
    token_file = tmp_path / "token"
    token_file.write_text(READER_TOKEN + "\n")
    command = [sys.executable, "-m", "cluster.cli", "status", "--endpoints", local.endpoints[0]]
    env = {k: v for k, v in os.environ.items() if k != "REGRAFT_TOKEN"}
    for extra, environment in (
        (["--ca-file", ca.ca_file, "--token-file", str(token_file)], env),
        (["--ca-file", ca.ca_file], {**env, "REGRAFT_TOKEN": READER_TOKEN}),
    ):
        done = subprocess.run(
            command + extra, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "healthy" in done.stdout
    done = subprocess.run(
        [*command, "--ca-file", ca.ca_file], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "no credentials" in done.stdout


def test_a_replaced_certificate_is_served_to_new_connections_without_a_restart(
    make_cluster, tmp_path
):
    old_ca = Authority(str(tmp_path / "old"))
    new_ca = Authority(str(tmp_path / "new"))
    served = old_ca.issue("replica")
    local = make_cluster(
        size=1, start=False, tls_cert_file=served.cert_file, tls_key_file=served.key_file
    )
    local.credentials = Credentials(ca_file=old_ca.ca_file)
    local.start()
    local.wait_for_leader()
    endpoint = local.endpoints[0]
    pid = local.replicas[0].process.pid
    trusting_new = Credentials(ca_file=new_ca.ca_file)
    assert status_code(endpoint, trusting_new) == grpc.StatusCode.UNAVAILABLE
    # Replace the files the way an operator (or cert-manager) does: rename into place.
    replacement = new_ca.issue("replica")
    os.replace(replacement.key_file, served.key_file)
    os.replace(replacement.cert_file, served.cert_file)
    assert status_code(endpoint, trusting_new) == grpc.StatusCode.OK
    assert status_code(endpoint, Credentials(ca_file=old_ca.ca_file)) == grpc.StatusCode.UNAVAILABLE
    assert local.replicas[0].process.pid == pid and local.replicas[0].running
    assert "TLS certificates reloaded" in local.replicas[0].log()


def test_a_learner_is_promoted_under_mutual_tls(make_cluster, tmp_path):
    """Promotion asks the learner over gRPC how far it is: the replicas' own credentials
    (their certificate and the peer token) must get them through each other's checks."""
    ca = Authority(str(tmp_path / "pki"))
    server = ca.issue("replica")
    local = make_cluster(
        size=1,
        start=False,
        tls_cert_file=server.cert_file,
        tls_key_file=server.key_file,
        tls_client_ca_file=ca.ca_file,
        callers_file=write_callers(str(tmp_path / "callers.toml")),
    )
    local.credentials = as_caller(ca, "ops")
    local.start()
    local.wait_for_leader()
    learner = local.new_member("r2")
    endpoints = local.endpoints[0]
    request = cluster_pb2.AddMemberRequest(
        id="r2", raft_address=learner.config.raft_address, grpc_address=learner.endpoint
    )
    call_leader(endpoints, "AddMember", request, 30.0, local.credentials)
    learner.start()
    deadline = time.monotonic() + 60
    while True:
        try:
            promote = cluster_pb2.PromoteMemberRequest(id="r2")
            call_leader(endpoints, "PromoteMember", promote, 30.0, local.credentials)
            break
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    listed = call_leader(
        endpoints, "ListMembers", cluster_pb2.ListMembersRequest(), 30.0, local.credentials
    )
    assert {m.id: m.membership for m in listed.members}["r2"] == record_pb2.MemberRecord.VOTER
    # Each step is in the audit log, with the admin who asked for it.
    logged = audit(local, "log", "--endpoints", endpoints).splitlines()
    changes = [line.split(None, 3)[2:] for line in logged]
    assert ["cert:ops", "SetMemberRole member 'r2': PROMOTING -> VOTER"] in changes
    assert ["cert:ops", "SetMemberRole member 'r2': LEARNER -> PROMOTING"] in changes
