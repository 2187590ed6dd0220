"""deploy/kubernetes: the StatefulSet, its Services and PodDisruptionBudget agree with
each other and with what `regraft serve` accepts and serves."""

import os
import re
import stat
import subprocess
import urllib.error
import urllib.request

import pytest

from cluster.config import split_address
from cluster.http import ProbeServer
from tests.cluster.harness import free_port
from tests.deploy.conftest import (
    DEPLOY,
    certificate_hosts,
    covers,
    documented_certificates,
    load_yaml_documents,
)

NAMESPACE_DOMAIN = ".regraft"  # <pod>.<headless service>


def objects() -> dict[str, dict]:
    found = {}
    for document in load_yaml_documents("kubernetes", "regraft.yaml"):
        found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def pod_spec() -> dict:
    return objects()["StatefulSet/regraft"]["spec"]["template"]["spec"]


def container() -> dict:
    (only,) = pod_spec()["containers"]
    return only


def ports() -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container()["ports"]}


def rendered_args(pod: str, tmp_path) -> list[str]:
    """The arguments the container's shell command gives `regraft` in pod `pod`."""
    fake = tmp_path / "regraft"
    fake.write_text("#!/bin/sh\nprintf '%s\\0' \"$@\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    command = container()["command"]
    result = subprocess.run(
        command,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", "POD_NAME": pod},
        capture_output=True,
        timeout=30,
        check=True,
    )
    return result.stdout.decode().split("\0")[:-1]


def test_the_objects_are_there_and_select_the_pods():
    found = objects()
    assert set(found) == {
        "Service/regraft",
        "Service/regraft-client",
        "StatefulSet/regraft",
        "PodDisruptionBudget/regraft",
    }
    statefulset = found["StatefulSet/regraft"]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for name in ("Service/regraft", "Service/regraft-client"):
        assert found[name]["spec"]["selector"].items() <= labels.items(), name
    assert found["PodDisruptionBudget/regraft"]["spec"]["selector"]["matchLabels"].items() <= (
        labels.items()
    )


def test_a_quorum_can_form_before_any_pod_is_ready():
    """Readiness needs a leader, so neither pod creation nor peer DNS may wait for it."""
    found = objects()
    headless = found["Service/regraft"]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    statefulset = found["StatefulSet/regraft"]["spec"]
    assert statefulset["serviceName"] == "regraft"
    assert statefulset["podManagementPolicy"] == "Parallel"


def test_the_disruption_budget_keeps_a_quorum():
    found = objects()
    replicas = found["StatefulSet/regraft"]["spec"]["replicas"]
    budget = found["PodDisruptionBudget/regraft"]["spec"]
    assert replicas - budget["maxUnavailable"] >= replicas // 2 + 1


@pytest.mark.parametrize("pod", ["regraft-0", "regraft-1", "regraft-2"])
def test_each_pod_runs_a_valid_replica_on_the_declared_ports(pod, tmp_path, serve_config):
    config = serve_config(rendered_args(pod, tmp_path))
    replicas = objects()["StatefulSet/regraft"]["spec"]["replicas"]
    assert config.id == pod
    assert config.raft_address == f"{pod}{NAMESPACE_DOMAIN}:{ports()['raft']}"
    assert split_address(config.grpc_address)[1] == ports()["grpc"]
    assert split_address(config.metrics_address)[1] == ports()["metrics"]
    others = {f"regraft-{i}" for i in range(replicas)} - {pod}
    assert {p.id for p in config.peers} == others
    assert config.advertised_grpc_address == f"{pod}{NAMESPACE_DOMAIN}:{ports()['grpc']}"
    for peer in config.peers:
        assert peer.raft_address == f"{peer.id}{NAMESPACE_DOMAIN}:{ports()['raft']}"
        assert peer.grpc_address == f"{peer.id}{NAMESPACE_DOMAIN}:{ports()['grpc']}"
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    assert config.data_dir.startswith(mounts["data"] + "/")
    assert os.path.dirname(config.secret_file) == mounts["secret"]
    (claim,) = objects()["StatefulSet/regraft"]["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"


def test_the_services_expose_the_container_ports():
    for name in ("Service/regraft", "Service/regraft-client"):
        for port in objects()[name]["spec"]["ports"]:
            assert ports()[port["name"]] == port["port"], (name, port)


def test_the_probes_ask_the_metrics_port_for_what_it_serves():
    probes = {kind: container()[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/livez"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert probe["port"] == "metrics"
    address = f"127.0.0.1:{free_port()}"
    server = ProbeServer(address, live=lambda: None, ready=lambda: "no leader known")
    server.start()
    try:
        base = f"http://{address}"
        with urllib.request.urlopen(base + probes["livenessProbe"]["path"], timeout=5) as r:
            assert r.status == 200
        with pytest.raises(urllib.error.HTTPError) as unready:
            urllib.request.urlopen(base + probes["readinessProbe"]["path"], timeout=5)
        assert unready.value.code == 503
        assert unready.value.read() == b"no leader known\n"
    finally:
        server.stop()


@pytest.mark.parametrize("pod", ["regraft-0", "regraft-1", "regraft-2"])
def test_pods_require_certificates_and_roles(pod, tmp_path, serve_config):
    config = serve_config(rendered_args(pod, tmp_path))
    assert config.tls and config.tls_client_ca_file and config.callers_file
    assert config.warnings() == []
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    for path in (config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file):
        assert os.path.dirname(path) == mounts["tls"]
    assert volumes["tls"]["secret"]["secretName"] == "regraft-tls"
    assert os.path.dirname(config.callers_file) == mounts["callers"]
    assert volumes["callers"]["configMap"]["name"] == "regraft-callers"


def test_the_documented_certificates_serve_every_address_replicas_are_dialed_at(
    tmp_path, serve_config
):
    """The `regraft certs` commands in the manifest's comment (namespace `registry`)
    make a replica certificate valid for the addresses peers and front-ends dial."""
    documented_certificates("kubernetes/regraft.yaml", tmp_path / "pki", {"NS": "registry"})
    hosts = certificate_hosts(str(tmp_path / "pki" / "tls" / "replica.pem"))
    config = serve_config(rendered_args("regraft-0", tmp_path))
    for peer in config.peers:
        assert covers(hosts, split_address(peer.grpc_address)[0]), (peer, hosts)
    for name in (
        "regraft-client",  # front-ends in the namespace
        "regraft-client.registry",  # and in others
        "regraft-client.registry.svc.cluster.local",
        "regraft-1.regraft.registry.svc",
        "regraft-2.regraft.registry.svc.cluster.local",
        "127.0.0.1",  # kubectl port-forward
    ):
        assert covers(hosts, name), (name, hosts)
    # The secret's keys are the file names the pods read.
    with open(os.path.join(DEPLOY, "kubernetes", "regraft.yaml")) as f:
        keys = set(re.findall(r"--from-file=([\w.]+)=tls/", f.read()))
    names = {os.path.basename(p) for p in (config.tls_cert_file, config.tls_key_file)}
    assert names | {os.path.basename(config.tls_client_ca_file)} == keys
