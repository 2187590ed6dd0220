"""What the deploy/ files say of each other: the repository paths their comments and
commands name exist, and Kubernetes runs the image that the Dockerfile and compose
build."""

import os
import re
import tomllib

from tests.cluster.harness import ROOT
from tests.deploy.conftest import DEPLOY, load_yaml, load_yaml_documents

_PATH = re.compile(r"(?<![\w/.])((?:deploy|docs|tests|cluster|storage)/[\w./-]*\w)")


def deploy_files() -> list[str]:
    return [
        os.path.join(directory, name) for directory, _, names in os.walk(DEPLOY) for name in names
    ]


def test_every_repository_path_a_deploy_file_names_exists():
    for path in deploy_files():
        with open(path) as f:
            named = set(_PATH.findall(f.read()))
        missing = sorted(p for p in named if not os.path.exists(os.path.join(ROOT, p)))
        assert not missing, f"{os.path.relpath(path, ROOT)} names {missing}: no such path"


def test_kubernetes_runs_the_image_the_dockerfile_and_compose_build():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    image = f"regraft:{version}"
    assert load_yaml("compose", "compose.yaml")["x-replica"]["image"] == image
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        assert re.search(rf"docker build -f deploy/Dockerfile -t {image} \.", f.read())
    (statefulset,) = [
        d for d in load_yaml_documents("kubernetes", "regraft.yaml") if d["kind"] == "StatefulSet"
    ]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image
