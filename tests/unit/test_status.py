"""What `regraft status` and the readiness checks say about a cluster, from Status
answers and Raft states built by hand."""

import pytest

from cluster import cli
from cluster.replica import READY_MAX_LAG, readiness_problem
from regraft.v1 import cluster_pb2, record_pb2

GIB = 1 << 30


def member(id_: str, **fields) -> cluster_pb2.Member:
    return cluster_pb2.Member(
        id=id_, **{"raft_address": f"{id_}:7411", "reachable": True, **fields}
    )


def status(id_: str, role=cluster_pb2.FOLLOWER, leader="r1", **fields):
    base = {
        "term": 4,
        "commit_index": 500,
        "applied_index": 500,
        "disk_total_bytes": 100 * GIB,
        "disk_free_bytes": 60 * GIB,
        "db_used_bytes": GIB,
        "has_quorum": True,
        "state_hash": "ab" * 32,
    }
    return cluster_pb2.StatusResponse(id=id_, role=role, leader_id=leader, **{**base, **fields})


def leader(*members, **fields):
    return status(
        "r1",
        role=cluster_pb2.LEADER,
        members=[member("r1", is_self=True, is_leader=True), *members],
        **fields,
    )


def healthy_rows():
    return [
        ("h1:7401", leader(member("r2"), member("r3", lag=3)), None),
        ("h2:7401", status("r2"), None),
        ("h3:7401", status("r3", applied_index=497), None),
    ]


def test_a_healthy_cluster_has_no_problems_and_a_row_per_member():
    rows = healthy_rows()
    assert cli.status_problems(rows) == []
    lines = cli.status_table(rows).splitlines()
    assert lines[0].split() == [
        "ENDPOINT",
        "ID",
        "ROLE",
        "TERM",
        "LEADER",
        "COMMIT",
        "APPLIED",
        "LAG",
        "RAFT",
        "DISK",
        "HASH",
    ]
    assert lines[1].split()[:10] == [
        "h1:7401",
        "r1",
        "leader",
        "4",
        "r1",
        "500",
        "500",
        "0",
        "up",
        "40%",
    ]
    assert lines[2].split()[:10] == [
        "h2:7401",
        "r2",
        "follower",
        "4",
        "r1",
        "500",
        "500",
        "0",
        "up",
        "40%",
    ]
    assert lines[3].split()[:10] == [
        "h3:7401",
        "r3",
        "follower",
        "4",
        "r1",
        "500",
        "497",
        "3",
        "up",
        "40%",
    ]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (
            [("h1:7401", None, "connection refused"), *healthy_rows()[1:]],
            "h1:7401 is unreachable (connection refused)",
        ),
        ([("h2:7401", status("r2", leader=""), None)], "no leader"),
        (
            [*healthy_rows()[:2], ("h3:7401", status("r3", leader=""), None)],
            "r3 knows no leader while the others name r1",
        ),
        (
            [("h1:7401", None, "connection refused"), *healthy_rows()[1:]],
            "no reachable leader: the replicas name r1, which does not answer as leader",
        ),
        (
            [("h2:7401", status("r2", leader="r1"), None), ("h3", status("r3", leader="r3"), None)],
            "replicas disagree on the leader: ['r1', 'r3']",
        ),
        (
            [("h1:7401", leader(member("r2", reachable=False)), None)],
            "unreachable member: leader r1 cannot reach r2 (r2:7411)",
        ),
        (
            [("h1:7401", leader(member("r3", lag=cli.LAG_LIMIT + 1)), None)],
            f"lagging replica: r3 is {cli.LAG_LIMIT + 1} entries behind",
        ),
        (
            [("h2:7401", status("r2", commit_index=5000, applied_index=100), None)],
            "lagging replica: r2 has 4900 committed entries not applied",
        ),
        (
            [("h1:7401", leader(has_quorum=False), None)],
            "leader r1 cannot reach a majority of the members",
        ),
        (
            [("h2:7401", status("r2", disk_free_bytes=5 * GIB), None)],
            "disk almost full on r2: 95% of the filesystem used, 5.0 GiB left for the database "
            "(1.0 GiB in use)",
        ),
    ],
)
def test_each_problem_is_named(rows, expected):
    problems = cli.status_problems(rows)
    assert any(p.startswith(expected) for p in problems), problems


def test_replicas_of_another_cluster_are_named_not_dropped():
    """`regraft up` names every cluster's replicas r1..rN: an endpoint of a neighbouring
    cluster answered as r1 and was left out, and the table said healthy."""
    other = status(
        "r1",
        role=cluster_pb2.LEADER,
        members=[member("r1", is_self=True, is_leader=True, raft_address="h9:7411")],
    )
    rows = [*healthy_rows(), ("h9:7401", other, None), ("h8:7401", status("r7"), None)]
    problems = cli.status_problems(rows)
    assert (
        "two replicas answer as r1: h1:7401 (Raft r1:7411) and h9:7401 (Raft h9:7411); "
        "are the endpoints of one cluster?"
    ) in problems
    assert (
        "not members of leader r1's cluster: r7 (removed, or endpoints of another cluster)"
    ) in problems
    lines = cli.status_table(rows).splitlines()
    assert len(lines) == 1 + 5
    assert lines[4].split()[:2] == ["h9:7401", "r1"]
    assert lines[4].split()[7:9] == ["-", "-"]  # not the leader's r1: no lag, no link


def test_the_limits_are_not_problems_yet():
    rows = [
        ("h1:7401", leader(member("r2"), member("r3", lag=cli.LAG_LIMIT)), None),
        ("h2:7401", status("r2", disk_free_bytes=int(10.5 * GIB)), None),
    ]
    assert cli.status_problems(rows) == []


def test_a_replica_without_disk_figures_shows_none():
    rows = [("h1:7401", leader(disk_total_bytes=0, disk_free_bytes=0), None)]
    assert cli.status_problems(rows) == []
    assert cli.status_table(rows).splitlines()[1].split()[9] == "-"


def raft_state(**changes) -> dict:
    state = {"leader": "r1:7411", "has_quorum": True, "leader_commit_idx": 900}
    return {**state, "last_applied": 900, **changes}


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ({}, "starting"),
        (raft_state(leader=None), "no leader known"),
        (raft_state(has_quorum=False), "no quorum reachable"),
        (
            raft_state(leader_commit_idx=READY_MAX_LAG + 10, last_applied=9),
            f"{READY_MAX_LAG + 1} entries behind the leader's commit index",
        ),
    ],
)
def test_readiness_names_what_is_missing(state, problem):
    assert readiness_problem(state).startswith(problem)


def test_ready_within_the_lag_bound():
    assert readiness_problem(raft_state()) is None
    assert readiness_problem(raft_state(last_applied=900 - READY_MAX_LAG)) is None
    assert readiness_problem(raft_state(leader_commit_idx=None)) is None  # not heard yet


def test_an_unreachable_replica_keeps_the_table_narrow_and_says_why_once():
    rows = [("h1:7401", None, "Deadline Exceeded"), *healthy_rows()[1:]]
    table = cli.status_table(rows).splitlines()
    assert table[1].split() == ["h1:7401", "-", "unreachable"]
    assert len(table[1]) <= len(table[2])
    assert "Deadline Exceeded" not in "\n".join(table)
    assert "h1:7401 is unreachable (Deadline Exceeded)" in cli.status_problems(rows)


def test_a_learner_is_not_reported_down_its_own_status_gives_its_lag():
    """The leader keeps no Raft link to a learner (PySyncObj's read-only node), so it
    saw it as unreachable and 15 entries behind while it had applied everything."""
    learner = record_pb2.MemberRecord.LEARNER
    rows = [
        *healthy_rows()[:1],
        ("h4:7401", status("r4", applied_index=480), None),
    ]
    rows[0] = (
        "h1:7401",
        leader(member("r2"), member("r4", reachable=False, lag=500, membership=learner)),
        None,
    )
    assert cli.status_problems(rows) == []
    learner_row = cli.status_table(rows).splitlines()[2].split()
    assert learner_row[:3] == ["h4:7401", "r4", "learner"]
    assert learner_row[7:9] == ["20", "-"]  # LAG from its own applied index, no RAFT link
