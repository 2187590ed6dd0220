"""deploy/grafana: the dashboard is valid JSON for Grafana and graphs only metrics
the code exports."""

import json
import os

from tests.deploy.conftest import DEPLOY, PROMETHEUS_SERIES, exported_names, metric_names


def dashboard() -> dict:
    with open(os.path.join(DEPLOY, "grafana", "regraft.json")) as f:
        return json.load(f)


def expressions(board: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard."""
    return [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def test_the_dashboard_is_well_formed():
    board = dashboard()
    assert board["uid"] and board["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {sorted(ids)}"
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]


def test_the_dashboard_uses_only_exported_metrics(exposition):
    exported = exported_names(exposition) | PROMETHEUS_SERIES
    used = set()
    for title, expression in expressions(dashboard()):
        names = metric_names(expression)
        assert names, f"panel {title!r}: no metric in {expression!r}"
        assert not names - exported, f"panel {title!r} uses {sorted(names - exported)}"
        used |= names
    # The dashboard covers each area of the metrics, not just a few of them.
    for metric in (
        "regraft_is_leader",
        "regraft_peer_lag_entries",
        "regraft_proposals_pending",
        "regraft_journal_fsync_duration_seconds_bucket",
        "regraft_grpc_request_duration_seconds_bucket",
        "regraft_snapshot_sent_bytes_total",
        "regraft_disk_free_bytes",
        "process_resident_memory_bytes",
    ):
        assert metric in used, f"the dashboard does not graph {metric}"
