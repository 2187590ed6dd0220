"""deploy/compose, deploy/Dockerfile and deploy/systemd agree with what `regraft serve`
accepts, with `regraft up`'s ports, and with each other."""

import configparser
import os
import re
import shlex
import tomllib

from cluster import config as config_module
from cluster.auth import CallersFile
from cluster.cli import DEFAULT_ENDPOINTS, local_cluster_configs
from cluster.config import split_address
from tests.cluster.harness import ROOT
from tests.deploy.conftest import (
    DEPLOY,
    certificate_hosts,
    covers,
    documented_certificates,
    load_yaml,
)


def compose() -> dict:
    return load_yaml("compose", "compose.yaml")


def dockerfile() -> str:
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        return f.read()


def published(service: dict) -> dict[int, int]:
    """container port -> host port of a service's `ports` (host:ip:container)."""
    found = {}
    for entry in service["ports"]:
        host_ip, host_port, container_port = entry.split(":")
        assert host_ip == "127.0.0.1", f"{entry}: publish on loopback only"
        found[int(container_port)] = int(host_port)
    return found


def test_compose_runs_three_valid_replicas_that_name_each_other(serve_config):
    services = compose()["services"]
    configs = {name: serve_config(service["command"]) for name, service in services.items()}
    assert sorted(configs) == ["r1", "r2", "r3"]
    for name, config in configs.items():
        assert config.id == name
        assert split_address(config.raft_address)[0] == services[name]["hostname"] == name
        own = {p.id: p for p in configs[name].peers}
        assert set(own) == set(configs) - {name}
        for peer_id, peer in own.items():
            assert peer.raft_address == configs[peer_id].raft_address
            # Where it calls the peer is where the peer says it is reached.
            assert peer.grpc_address == configs[peer_id].advertised_grpc_address
            grpc_port = split_address(configs[peer_id].grpc_address)[1]
            assert peer.grpc_address == f"{peer_id}:{grpc_port}"


def test_compose_replicas_require_certificates_and_roles(serve_config):
    """Nothing a replica would warn about: callers authenticate, with a role each."""
    for service in compose()["services"].values():
        config = serve_config(service["command"])
        assert config.tls and config.tls_client_ca_file and config.callers_file
        assert config.warnings() == []


def test_the_documented_certificates_serve_every_address_replicas_are_dialed_at(
    serve_config, tmp_path
):
    """The `regraft certs` commands in compose.yaml's comment make every file its
    secrets name, a replica certificate valid for the peers' and the published
    addresses, and callers with roles."""
    documented_certificates("compose/compose.yaml", tmp_path)
    document = compose()
    for secret in document["secrets"].values():
        if secret["file"] != "./secret":  # made with openssl
            assert (tmp_path / secret["file"]).is_file(), secret["file"]
    hosts = certificate_hosts(str(tmp_path / document["secrets"]["regraft-tls-cert"]["file"]))
    for service in document["services"].values():
        config = serve_config(service["command"])
        for peer in config.peers:
            assert covers(hosts, split_address(peer.grpc_address)[0]), (peer, hosts)
    for endpoint in DEFAULT_ENDPOINTS.split(","):
        assert covers(hosts, split_address(endpoint)[0]), (endpoint, hosts)
    callers = CallersFile(str(tmp_path / document["secrets"]["regraft-callers"]["file"]))
    roles = {name: c.role for name, c in callers.current().certificates.items()}
    assert roles == {"ops": "admin", "frontend": "registry"}


def test_compose_publishes_regraft_ups_ports(serve_config):
    """So `regraft status` and deploy/prometheus/prometheus.yml work unchanged."""
    services = compose()["services"]
    for up in local_cluster_configs("/tmp/unused", 7400, 3):
        config = serve_config(services[up.id]["command"])
        ports = published(services[up.id])
        assert ports[split_address(config.grpc_address)[1]] == split_address(up.grpc_address)[1]
        assert (
            ports[split_address(config.metrics_address)[1]] == split_address(up.metrics_address)[1]
        )
    hosts = [f"127.0.0.1:{published(s)[7401]}" for s in services.values()]
    assert ",".join(hosts) == DEFAULT_ENDPOINTS


def test_compose_mounts_what_the_replicas_use(serve_config):
    document = compose()
    for name, service in document["services"].items():
        config = serve_config(service["command"])
        (volume,) = service["volumes"]
        source, target = volume.split(":")
        assert source in document["volumes"]
        assert config.data_dir.startswith(target + "/"), name
        files = [
            config.secret_file,
            config.tls_cert_file,
            config.tls_key_file,
            config.tls_client_ca_file,
            config.callers_file,
        ]
        assert sorted(files) == sorted(f"/run/secrets/{secret}" for secret in service["secrets"])
        assert set(service["secrets"]) <= set(document["secrets"])
        probe = " ".join(service["healthcheck"]["test"])
        metrics_port = split_address(config.metrics_address)[1]
        assert f"http://127.0.0.1:{metrics_port}/readyz" in probe


def test_the_image_serves_the_ports_compose_and_kubernetes_use(serve_config):
    text = dockerfile()
    (exposed,) = re.findall(r"^EXPOSE (.+)$", text, re.M)
    config = serve_config(compose()["services"]["r1"]["command"])
    ports = {
        split_address(a)[1]
        for a in (config.grpc_address, config.raft_address, config.metrics_address)
    }
    assert {int(p) for p in exposed.split()} == ports
    assert 'ENTRYPOINT ["regraft"]' in text
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert "regraft" in project["scripts"]
    copied = set(re.findall(r"^COPY (\S+) ", text, re.M))
    packages = {"storage", "cluster", "regraft"}
    assert packages <= copied, f"the image misses {sorted(packages - copied)}"
    build = compose()["x-replica"]["build"]
    assert os.path.normpath(os.path.join(DEPLOY, "compose", build["context"])) == ROOT
    assert os.path.join(ROOT, build["dockerfile"]) == os.path.join(DEPLOY, "Dockerfile")


def test_the_systemd_unit_runs_the_example_configuration_where_it_may_write(serve_config):
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(os.path.join(DEPLOY, "systemd", "regraft.service"))
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert os.path.basename(argv[0]) == "regraft"
    config_path = argv[argv.index("--config") + 1]
    assert config_path == "/etc/regraft/regraft.toml"
    example = config_module.load(os.path.join(DEPLOY, "config", "replica.toml"))
    writable = service["ReadWritePaths"].split()
    assert any(example.data_dir.startswith(path + "/") for path in writable), writable
    assert f"/var/lib/{service['StateDirectory']}" in writable
    assert os.path.dirname(example.secret_file) == os.path.dirname(config_path)
    assert service["KillSignal"] == "SIGTERM"
    # The example's own flags parse and validate as `regraft serve` sees them.
    config = serve_config(["serve", "--config", os.path.join(DEPLOY, "config", "replica.toml")])
    assert config == example
