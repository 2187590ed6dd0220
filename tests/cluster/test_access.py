"""The Access service on real replicas: cascades reach every replica, reflection lists
it, refusals carry the right status codes, `regraft call` drives it."""

import json
import subprocess
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from regraft.v1 import access_pb2, access_pb2_grpc, registry_pb2
from tests.cluster.harness import push, regraft

pb = access_pb2


def stale(min_revision: int) -> registry_pb2.ReadOptions:
    return registry_pb2.ReadOptions(consistency=registry_pb2.STALE, min_revision=min_revision)


def test_deleting_a_team_removes_its_grants_on_every_replica(cluster):
    leader = cluster.wait_for_leader()
    with grpc.insecure_channel(leader.endpoint) as channel:
        stub = access_pb2_grpc.AccessStub(channel)
        for name in ("alice", "bob"):
            stub.CreateUser(pb.CreateUserRequest(name=name, request_id=f"user-{name}"))
        stub.CreateOrganization(pb.OrganizationRequest(name="acme"))
        stub.CreateTeam(pb.TeamRequest(organization="acme", name="dev"))
        stub.AddTeamMember(pb.TeamMemberRequest(organization="acme", team="dev", user="alice"))
        dev = pb.Subject(team=pb.TeamRef(organization="acme", name="dev"))
        for scope in (pb.Scope(repository="acme/app"), pb.Scope(organization="acme")):
            stub.SetGrant(pb.SetGrantRequest(grant=pb.Grant(scope=scope, subject=dev, level=2)))
        bob = pb.Grant(
            scope=pb.Scope(repository="acme/app"), subject=pb.Subject(user="bob"), level=1
        )
        granted = stub.SetGrant(pb.SetGrantRequest(grant=bob)).revision
        check = pb.CheckAccessRequest(subject="alice", repository="acme/app", actions=["push"])
        before = stub.CheckAccess(check)
        assert list(before.allowed) == ["push"] and "team 'acme/dev'" in before.decisions[0].reason
        deleted = stub.DeleteTeam(pb.DeleteTeamRequest(organization="acme", name="dev")).revision
        assert deleted > granted

    for replica in cluster.replicas:
        with grpc.insecure_channel(replica.endpoint) as channel:
            stub = access_pb2_grpc.AccessStub(channel)
            on_app = pb.ListGrantsRequest(
                scope=pb.Scope(repository="acme/app"), read=stale(deleted)
            )
            answer = stub.ListGrants(on_app, timeout=30)
            assert answer.revision >= deleted
            assert [g.subject for g in answer.grants] == [pb.Subject(user="bob")], replica.id
            on_org = pb.ListGrantsRequest(scope=pb.Scope(organization="acme"), read=stale(deleted))
            assert not stub.ListGrants(on_org, timeout=30).grants
            check = pb.CheckAccessRequest(
                subject="alice",
                repository="acme/app",
                actions=["pull", "push"],
                read=stale(deleted),
            )
            assert not stub.CheckAccess(check, timeout=30).allowed
            with pytest.raises(grpc.RpcError) as gone:
                stub.GetTeam(
                    pb.GetTeamRequest(organization="acme", name="dev", read=stale(deleted))
                )
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    cluster.wait_converged()


def test_errors_immutable_tags_reflection_and_health(cluster):
    leader = cluster.wait_for_leader()
    with grpc.insecure_channel(leader.endpoint) as channel, cluster.client() as client:
        stub = access_pb2_grpc.AccessStub(channel)
        with pytest.raises(grpc.RpcError) as bad:
            stub.CreateUser(pb.CreateUserRequest(name="Bad Name"))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "name" in bad.value.details() and "'Bad Name'" in bad.value.details()
        with pytest.raises(grpc.RpcError) as unfiltered:
            stub.ListGrants(pb.ListGrantsRequest())
        assert unfiltered.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert unfiltered.value.details().startswith("filter: set scope")
        with pytest.raises(grpc.RpcError) as unknown:
            stub.CheckAccess(pb.CheckAccessRequest(subject="nobody", repository="a/b"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert "'nobody'" in unknown.value.details()

        stub.CreateOrganization(pb.OrganizationRequest(name="acme"))
        first = push(client, "acme/app", "v1", seed="first").digest
        second = push(client, "acme/app", "v2", seed="second").digest
        settings = pb.RepositorySettings(immutable_tags=True, create_on_push=True)
        stub.SetRepositorySettings(
            pb.SetRepositorySettingsRequest(repository="acme/app", settings=settings)
        )
        with pytest.raises(grpc.RpcError) as refused:
            client.put_tag("acme/app", "v1", second)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "'v1'" in refused.value.details() and "'acme/app'" in refused.value.details()
        assert client.get_manifest("acme/app", "v1").digest == first

        # Reflection lists the service and serves its descriptor (what grpcurl needs).
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = list(stub.ServerReflectionInfo(iter([request])))
        services = {s.name for s in response.list_services_response.service}
        assert "regraft.v1.Access" in services
        # Its descriptor is served too: what grpcurl needs to call it.
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="regraft.v1.Access")
        (response,) = list(stub.ServerReflectionInfo(iter([request])))
        assert response.file_descriptor_response.file_descriptor_proto
        # Health knows the service (an unknown name is NOT_FOUND) and reports it SERVING
        # once the replica is ready (refreshed every half second).
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="regraft.v1.Access")
        deadline = time.monotonic() + 30
        while health.Check(check).status != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "regraft.v1.Access never became SERVING"
            time.sleep(0.2)


def regraft_call(cluster, *arguments: str) -> subprocess.CompletedProcess:
    return regraft("call", *arguments, "--endpoints", ",".join(cluster.endpoints), timeout=60)


def test_accounts_and_permissions_from_the_shell(cluster):
    """`regraft call` reaches every method with JSON: what an operator scripts."""
    steps = [
        ("CreateUser", '{"name": "carol", "password": "correct horse battery"}'),
        ("CreateOrganization", '{"name": "shell"}'),
        ("CreateTeam", '{"organization": "shell", "name": "devs"}'),
        ("AddTeamMember", '{"organization": "shell", "team": "devs", "user": "carol"}'),
        ("SetGrant", json.dumps({"grant": {"scope": {"organization": "shell"},
                                           "subject": {"team": {"organization": "shell",
                                                                "name": "devs"}},
                                           "level": "READ_WRITE"}})),
    ]  # fmt: skip
    revisions = []
    for method, request in steps:
        done = regraft_call(cluster, method, request)
        assert done.returncode == 0, done.stderr
        revisions.append(int(json.loads(done.stdout)["revision"]))
    assert revisions == sorted(revisions)
    check = '{"subject": "carol", "repository": "shell/app", "actions": ["pull", "push", "admin"]}'
    decided = json.loads(regraft_call(cluster, "CheckAccess", check).stdout)
    assert decided["allowed"] == ["pull", "push"] and decided["level"] == "READ_WRITE"
    # The audit trail of the same changes, as a finished stream of JSON lines.
    span = json.dumps({"from_revision": revisions[0], "to_revision": revisions[-1]})
    events = [json.loads(line) for line in regraft_call(cluster, "Watch", span).stdout.splitlines()]
    assert [e["operation"] for e in events] == [method for method, _ in steps]
    # Mistakes are named, not tracebacks: a bad name, an unknown field, an unknown method.
    bad = regraft_call(cluster, "CreateUser", '{"name": "Bad Name"}')
    assert bad.returncode == 1 and "name: 'Bad Name' is not a valid name" in bad.stderr
    typo = regraft_call(cluster, "CreateUser", '{"nam": "x"}')
    assert typo.returncode == 2 and 'has no field named "nam"' in typo.stderr
    unknown = regraft_call(cluster, "CreateUsers")
    assert unknown.returncode == 2 and "no method 'CreateUsers'" in unknown.stderr
    assert "Traceback" not in bad.stderr + typo.stderr + unknown.stderr
