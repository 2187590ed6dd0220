"""A real Prometheus (Debian's `prometheus` package) scrapes a live 3-replica cluster
with deploy/prometheus/alerts.yml loaded: it sees one leader, and after the leader is
killed the survivors report a new one and count the change. The dashboard's queries
and the alert rules evaluate without errors on the real series."""

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

from tests.cluster.harness import ROOT, free_port
from tests.deploy.conftest import require

BOUND = 60.0  # seconds: liveness bounds only; scrapes and evaluations run every second


class Prometheus:
    """One prometheus process with its own configuration, port and storage."""

    def __init__(self, directory: str, targets: list[str]) -> None:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")],
            "scrape_configs": [{"job_name": "regraft", "static_configs": [{"targets": targets}]}],
        }
        config_path = os.path.join(directory, "prometheus.yml")
        with open(config_path, "w") as f:
            yaml.safe_dump(config, f)
        self.address = f"127.0.0.1:{free_port()}"
        self._log_path = os.path.join(directory, "prometheus.log")
        with open(self._log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    require("prometheus"),
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={os.path.join(directory, 'data')}",
                    f"--web.listen-address={self.address}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def get(self, path: str, **params) -> dict:
        url = f"http://{self.address}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"prometheus refused {params}: {e.read().decode()}") from None
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expression: str) -> dict[str, float]:
        """{instance (or "" when aggregated away): value} of an instant vector query."""
        result = self.get("/api/v1/query", query=expression)["result"]
        return {r["metric"].get("instance", ""): float(r["value"][1]) for r in result}

    def wait_ready(self) -> None:
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"prometheus exited:\n{self.log()}"
            try:
                with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready in {BOUND}s:\n{self.log()}")

    def wait_until(self, what: str, check) -> None:
        """Poll `check()` (True when satisfied) until the bound; name `what` on failure."""
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.5)
        raise AssertionError(f"prometheus never saw {what} within {BOUND}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def log(self) -> str:
        with open(self._log_path, errors="replace") as f:
            return f.read()[-4000:]


@pytest.fixture
def prometheus_of(tmp_path):
    """Start a Prometheus scraping the given replicas; stopped (by PID) afterwards."""
    started = []

    def start(replicas) -> Prometheus:
        directory = tmp_path / f"prometheus{len(started)}"
        directory.mkdir()
        server = Prometheus(str(directory), [r.config.metrics_address for r in replicas])
        started.append(server)
        server.wait_ready()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def test_prometheus_sees_one_leader_and_the_failover(cluster, prometheus_of):
    prometheus = prometheus_of(cluster.replicas)
    instance = {r.config.metrics_address: r for r in cluster.replicas}
    prometheus.wait_until(
        "three replicas up", lambda: prometheus.query('count(up{job="regraft"} == 1)') == {"": 3}
    )
    prometheus.wait_until(
        "exactly one leader", lambda: prometheus.query("sum(regraft_is_leader)") == {"": 1}
    )
    (leader_instance,) = prometheus.query("regraft_is_leader == 1")
    leader = instance[leader_instance]
    assert leader is cluster.wait_for_leader()
    survivors = [r for r in cluster.replicas if r is not leader]
    before = prometheus.query("regraft_leader_changes_seen_total")
    assert set(before) == set(instance)

    leader.kill()
    on_survivors = f'{{instance!="{leader_instance}"}}'

    def failed_over() -> bool:
        has_leader = prometheus.query(f"regraft_has_leader{on_survivors}")
        changes = prometheus.query(f"regraft_leader_changes_seen_total{on_survivors}")
        leaders = prometheus.query(f"sum(regraft_is_leader{on_survivors})")
        return (
            has_leader == {r.config.metrics_address: 1 for r in survivors}
            and len(changes) == len(survivors)
            and all(changes[i] > before[i] for i in changes)
            and leaders == {"": 1}
        )

    prometheus.wait_until("a new leader on both survivors", failed_over)
    assert prometheus.query(f'up{{instance="{leader_instance}"}}') == {leader_instance: 0}

    # The survivors' Raft links to the dead leader are down: the alert is pending.
    def unreachable_alerted() -> bool:
        alerts = prometheus.get("/api/v1/alerts")["alerts"]
        peers = {
            a["labels"].get("peer")
            for a in alerts
            if a["labels"]["alertname"] == "RegraftMemberUnreachable"
        }
        return peers == {leader.id}

    prometheus.wait_until("RegraftMemberUnreachable for the killed replica", unreachable_alerted)


def test_alert_rules_and_dashboard_queries_evaluate_on_real_series(cluster, prometheus_of):
    prometheus = prometheus_of(cluster.replicas)
    prometheus.wait_until(
        "the replicas' Raft state", lambda: prometheus.query("sum(regraft_has_leader)") == {"": 3}
    )
    rules = []

    def evaluated() -> bool:
        groups = prometheus.get("/api/v1/rules")["groups"]
        rules[:] = [rule for group in groups for rule in group["rules"]]
        return bool(rules) and all(rule["health"] != "unknown" for rule in rules)

    prometheus.wait_until("every alert rule evaluated", evaluated)
    broken = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert not broken, broken
    with open(os.path.join(ROOT, "deploy", "grafana", "regraft.json")) as f:
        board = json.load(f)
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expression = (
                target["expr"]
                .replace("$__rate_interval", "1m")
                .replace("$job", ".*")
                .replace("$instance", ".*")
            )
            prometheus.get("/api/v1/query", query=expression)  # fails on an error
