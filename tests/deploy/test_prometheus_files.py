"""deploy/prometheus: the configurations load, the alert rules pass promtool and their
unit tests, and they speak only of metrics the code exports and targets it serves."""

import copy
import os
import re
import subprocess

import pytest
import yaml

from cluster.cli import local_cluster_configs
from tests.deploy.conftest import (
    DEPLOY,
    PROMETHEUS_SERIES,
    exported_names,
    load_yaml,
    load_yaml_documents,
    metric_names,
    require,
)

PROMETHEUS = os.path.join(DEPLOY, "prometheus")


def promtool(*args: str, cwd: str = PROMETHEUS) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def alert_rules() -> list[dict]:
    return [
        rule for group in load_yaml("prometheus", "alerts.yml")["groups"] for rule in group["rules"]
    ]


def test_promtool_checks_the_rules():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_alerts_pass():
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_static_configuration():
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_kubernetes_configuration_is_valid_apart_from_discovery(tmp_path):
    """Debian's promtool lacks Kubernetes discovery: check the rest of the job with the
    discovery swapped for a static target."""
    config = load_yaml("prometheus", "prometheus-kubernetes.yml")
    checked = copy.deepcopy(config)
    (job,) = checked["scrape_configs"]
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
    job["static_configs"] = [{"targets": ["127.0.0.1:7421"]}]
    checked["rule_files"] = [os.path.join(PROMETHEUS, f) for f in checked["rule_files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(checked))
    result = promtool("check", "config", "prometheus.yml", cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_kubernetes_job_keeps_the_statefulsets_pods_on_their_metrics_port():
    (job,) = load_yaml("prometheus", "prometheus-kubernetes.yml")["scrape_configs"]
    keep = {
        rule["source_labels"][0]: rule["regex"]
        for rule in job["relabel_configs"]
        if rule.get("action") == "keep"
    }
    (statefulset,) = [
        d for d in load_yaml_documents("kubernetes", "regraft.yaml") if d["kind"] == "StatefulSet"
    ]
    pod = statefulset["spec"]["template"]
    label = pod["metadata"]["labels"]["app.kubernetes.io/name"]
    assert keep["__meta_kubernetes_pod_label_app_kubernetes_io_name"] == label
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
    assert keep["__meta_kubernetes_pod_container_port_name"] in ports


def test_static_targets_are_regraft_ups_metrics_ports():
    config = load_yaml("prometheus", "prometheus.yml")
    (job,) = config["scrape_configs"]
    (static,) = job["static_configs"]
    expected = [c.metrics_address for c in local_cluster_configs("/tmp/unused", 7400, 3)]
    assert static["targets"] == expected


def test_both_configurations_load_the_alert_rules():
    for name in ("prometheus.yml", "prometheus-kubernetes.yml"):
        assert load_yaml("prometheus", name)["rule_files"] == ["alerts.yml"], name


def test_every_alert_the_issue_names_exists_with_summary_and_runbook():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert {
        "RegraftNoLeader",
        "RegraftInsufficientMembers",
        "RegraftFrequentLeaderChanges",
        "RegraftFailedProposals",
        "RegraftReplicaLagging",
        "RegraftSlowApply",
        "RegraftSlowFsync",
        "RegraftSlowGrpcRequests",
        "RegraftHighGrpcErrorRate",
        "RegraftDatabaseNearSizeLimit",
        "RegraftSnapshotFailures",
        "RegraftCallsHeldBack",
    } <= set(rules)
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["runbook"].strip(), name


def test_every_alert_is_tested_firing_and_silent():
    tests = load_yaml("prometheus", "alerts_test.yml")["tests"]
    firing, silent, healthy_series = set(), set(), set()
    for group in tests:
        for case in group["alert_rule_test"]:
            (firing if case["exp_alerts"] else silent).add(case["alertname"])
            fired = {tuple(sorted(a["exp_labels"].items())) for a in case["exp_alerts"]}
            # A group that fires for some of its series only has a healthy one too.
            if case["exp_alerts"] and len(group["input_series"]) > len(fired):
                healthy_series.add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"
    assert names - healthy_series == set(), "alerts without a healthy series beside"


def test_alerts_use_only_exported_metrics(exposition):
    exported = exported_names(exposition) | PROMETHEUS_SERIES
    for rule in alert_rules():
        unknown = metric_names(rule["expr"]) - exported
        assert not unknown, f"{rule['alert']} uses {sorted(unknown)}, not in /metrics"


@pytest.mark.parametrize("expression", ["regraft_no_such_metric > 0", "rate(nope_total[5m])"])
def test_the_metric_name_check_can_fail(exposition, expression):
    exported = exported_names(exposition) | PROMETHEUS_SERIES
    assert metric_names(expression) - exported


def test_alert_thresholds_match_status_and_readiness():
    """`regraft status`, /readyz and the alerts call the same replica lagging or full."""
    from cluster import cli, replica

    rules = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    (lag,) = re.findall(r"regraft_peer_lag_entries > (\d+)$", rules["RegraftReplicaLagging"])
    assert int(lag) == cli.LAG_LIMIT == replica.READY_MAX_LAG
    (unapplied,) = re.findall(
        r"regraft_commit_index - regraft_applied_index > (\d+)$",
        rules["RegraftReplicaNotApplying"],
    )
    assert int(unapplied) == cli.LAG_LIMIT
    (free,) = re.findall(
        r"regraft_disk_free_bytes / regraft_disk_total_bytes < ([\d.]+)$",
        rules["RegraftDatabaseNearSizeLimit"],
    )
    assert float(free) == pytest.approx(1 - cli.DISK_FULL_FRACTION)
