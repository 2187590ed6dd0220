"""`regraft up`'s refusals, which come before any replica starts, and the code its
replicas run."""

import os

import pytest

from cluster import cli
from cluster import config as config_module
from tests.cluster.harness import free_port_block
from tests.polling import wait_for


def run_before(data_dir: str, base_port: int, replicas: int) -> None:
    """What `regraft up` leaves in its data directory: each replica's configuration."""
    for config in cli.local_cluster_configs(data_dir, base_port, replicas):
        with open(os.path.join(data_dir, f"{config.id}.toml"), "w") as f:
            f.write(config_module.dump(config))


def up(capsys, *arguments: str) -> tuple[int, str]:
    code = cli.main(["up", *arguments])
    return code, capsys.readouterr().err


def test_a_data_directory_is_run_with_the_ports_and_replicas_it_was_started_with(tmp_path, capsys):
    data_dir = str(tmp_path / "data")
    run_before(data_dir, 42000, 3)
    for base, replicas in (("42100", "3"), ("42000", "5"), ("42000", "1")):
        arguments = ["--data-dir", data_dir, "--base-port", base, "--replicas", replicas]
        code, error = up(capsys, *arguments)
        assert code == 2
        assert f"{data_dir} holds a cluster that regraft up started with 3 replicas" in error
        assert "r1 on gRPC 127.0.0.1:42001 (--base-port 42000 --replicas 3)" in error
    same = cli.local_cluster_configs(data_dir, 42000, 3)
    cli._check_same_layout(os.path.abspath(data_dir), same)  # the same layout: no error


@pytest.mark.parametrize("base", ["65530", "65513", "0"])
def test_up_refuses_ports_past_65535_before_it_writes_anything(tmp_path, capsys, base):
    data_dir = tmp_path / "data"
    code, error = up(capsys, "--data-dir", str(data_dir), "--base-port", base)
    assert code == 2
    assert f"--base-port {base} with 3 replicas would use ports {int(base) + 1} to" in error
    assert not data_dir.exists()


@pytest.mark.parametrize("replicas", ["0", "10", "11"])
def test_up_runs_one_to_nine_replicas(tmp_path, capsys, replicas):
    """Replica N takes base+N, base+10+N and base+20+N: a tenth would share ports."""
    code, error = up(capsys, "--data-dir", str(tmp_path), "--replicas", replicas)
    assert code == 2
    assert f"--replicas must be between 1 and 9, got {replicas}" in error


def test_replicas_run_the_code_of_regraft_up_not_a_checkout_where_it_was_started(
    tmp_path, monkeypatch
):
    """`python -m` puts the current directory first on the path: started from a
    checkout of another release, the replicas ran that release's code."""
    other = tmp_path / "other-release"
    (other / "cluster").mkdir(parents=True)
    ran_other = tmp_path / "ran-the-other-release"
    (other / "cluster" / "__init__.py").write_text(
        f"open({str(ran_other)!r}, 'w').close()\nraise SystemExit(3)\n"
    )
    monkeypatch.chdir(other)
    (config,) = cli.local_cluster_configs(str(tmp_path / "data"), free_port_block(30), 1)
    log = tmp_path / "data" / f"{config.id}.log"
    process = cli._start_local(config)
    try:
        wait_for(
            lambda: ran_other.exists() or "serving gRPC" in log.read_text(),
            "the replica to start",
        )
        assert not ran_other.exists()
    finally:
        process.terminate()
        process.wait(timeout=30)
