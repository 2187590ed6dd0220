"""Shared by the deploy/ checks: the files, and the /metrics text of a real replica."""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from cluster.client import STALE
from tests.cluster.harness import ROOT, LocalCluster, push

DEPLOY = os.path.join(ROOT, "deploy")
# Series Prometheus itself adds to every target; the code cannot export them.
PROMETHEUS_SERIES = {"up"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def require(binary: str) -> str:
    """The path of a Prometheus tool; fails (never skips) when it is missing."""
    path = shutil.which(binary)
    if path is None:
        pytest.fail(
            f"{binary} is not on PATH: install Debian's `prometheus` package "
            "(apt-get install prometheus; .ci/run does it)"
        )
    return path


def load_yaml(*path: str):
    with open(os.path.join(DEPLOY, *path)) as f:
        return yaml.safe_load(f)


def load_yaml_documents(*path: str) -> list:
    with open(os.path.join(DEPLOY, *path)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def exported_names(exposition: str) -> set[str]:
    """Every series name a scrape of this text can produce (samples or not yet)."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


_FUNCTIONS_AND_KEYWORDS = r"\b(?:by|without|on|ignoring|group_left|group_right|bool|offset)\b"


def metric_names(expression: str) -> set[str]:
    """Metric names a PromQL expression selects: its identifiers, leaving out
    functions, keywords, grouping labels, label matchers, ranges and strings."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # drop string literals
    text = re.sub(_FUNCTIONS_AND_KEYWORDS + r"\s*\([^)]*\)", "", text)  # by (...) lists
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "[]", text)  # range durations
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):
            continue  # a function call
        name = match.group()
        if re.fullmatch(_FUNCTIONS_AND_KEYWORDS, name):
            continue
        names.add(name)
    return names


@pytest.fixture(scope="session")
def exposition(tmp_path_factory) -> str:
    """/metrics of a real single-replica cluster after a write and a read."""
    local = LocalCluster(str(tmp_path_factory.mktemp("exposition")), size=1)
    try:
        local.start()
        (replica,) = local.replicas
        local.wait_for_leader()
        with local.client(timeout=30.0) as client:
            revision = push(client, "deploy/app", "v1", seed="deploy").revision
            client.list_tags("deploy/app")
            client.get_manifest("deploy/app", "v1", consistency=STALE, min_revision=revision)
        url = f"http://{replica.config.metrics_address}/metrics"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            if "regraft_has_leader 1.0" in text:
                return text
            time.sleep(0.2)
        raise AssertionError(f"{url} never showed regraft_has_leader 1 in 60s")
    finally:
        local.stop()


class _Captured(Exception):
    def __init__(self, config) -> None:
        super().__init__("captured")
        self.config = config


@pytest.fixture
def serve_config(monkeypatch):
    """The ReplicaConfig `regraft serve ARGS` would run with, validated, without
    starting anything: the real argument parsing of cluster/cli.py."""
    import cluster.replica
    from cluster import cli

    def capture(config):
        raise _Captured(config)

    monkeypatch.setattr(cluster.replica, "Replica", capture)

    def parse(argv: list[str]):
        assert argv[0] == "serve", f"expected `regraft serve ...`, got {argv}"
        with pytest.raises(_Captured) as captured:
            cli.main(argv)
        config = captured.value.config
        config.validate()
        return config

    return parse


def documented_certificates(path: str, directory, replace: dict[str, str] | None = None) -> None:
    """Run the `regraft certs` commands that the leading comment of deploy file `path`
    tells operators to run (shell redirections and all), in `directory`."""
    with open(os.path.join(DEPLOY, path)) as f:
        comment = "".join(line[1:].strip() + "\n" for line in f if line.startswith("#"))
    lines = comment.replace("\\\n", " ").splitlines()
    commands = [line for line in lines if line.startswith("regraft certs")]
    assert commands, f"{path} tells no `regraft certs` command"
    shim = directory / "bin" / "regraft"
    shim.parent.mkdir(parents=True)
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    shim.write_text(
        f"#!/bin/sh\nPYTHONPATH={shlex.quote(path)} exec {shlex.quote(sys.executable)} "
        '-m cluster.cli "$@"\n'
    )
    shim.chmod(0o755)
    script = "\n".join(commands)
    for old, new in (replace or {}).items():
        script = script.replace(old, new)
    subprocess.run(
        ["sh", "-e", "-c", script],
        cwd=directory,
        env={**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}"},
        check=True,
        timeout=60,
    )


def certificate_hosts(path: str) -> list[str]:
    """The DNS names and IP addresses a PEM certificate is valid for."""
    with open(path, "rb") as f:
        certificate = x509.load_pem_x509_certificate(f.read())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(value) for value in names.get_values_for_type(x509.DNSName)] + [
        str(value) for value in names.get_values_for_type(x509.IPAddress)
    ]


def covers(hosts: list[str], host: str) -> bool:
    """Whether a certificate for `hosts` verifies for `host`. A `*.` wildcard stands for
    one label, and only over two labels or more: grpcio refuses `*.regraft` for
    regraft-0.regraft ("Invalid toplevel subdomain", then "call host does not match
    SSL server name")."""
    first, _, rest = host.partition(".")
    return host in hosts or (bool(first) and "." in rest and f"*.{rest}" in hosts)
