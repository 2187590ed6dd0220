"""`regraft member list` shows the leader's view: only the leader knows each member's
lag and which voters answer it."""

from types import SimpleNamespace

import grpc
import pytest

from cluster import cli, cli_members
from regraft.v1 import cluster_pb2, record_pb2

VOTER = record_pb2.MemberRecord.VOTER


def members(me: str, lag: int) -> cluster_pb2.ListMembersResponse:
    """r1..r3 as `me` sees them, r2 leading."""
    return cluster_pb2.ListMembersResponse(
        members=[
            cluster_pb2.Member(
                id=f"r{i}",
                raft_address=f"127.0.0.1:741{i}",
                grpc_address=f"127.0.0.1:740{i}",
                reachable=True,
                lag=lag if me == "r2" else 0,
                is_self=f"r{i}" == me,
                is_leader=i == 2,
                membership=VOTER,
            )
            for i in (1, 2, 3)
        ]
    )


class Unreachable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE


@pytest.fixture
def asked(monkeypatch) -> SimpleNamespace:
    """The endpoints each ListMembers went to (`calls`), and who answers (`answers`):
    r1, a follower, and r2, the leader."""
    asked = SimpleNamespace(
        calls=[], answers={"127.0.0.1:7401": members("r1", 0), "127.0.0.1:7402": members("r2", 7)}
    )

    def call_leader(endpoints, method, request, timeout=0, credentials=None):
        asked.calls.append(endpoints)
        if endpoints not in asked.answers:
            raise Unreachable()
        return asked.answers[endpoints]

    monkeypatch.setattr(cli_members, "call_leader", call_leader)
    return asked


def test_a_follower_answering_first_hands_over_to_the_leader(asked, capsys):
    assert cli.main(["member", "list", "--endpoints", "127.0.0.1:7401"]) == 0
    assert asked.calls == ["127.0.0.1:7401", "127.0.0.1:7402"]
    out, err = capsys.readouterr()
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["7", "7", "7"]
    assert err == ""


def test_without_the_leader_the_lag_is_unknown_and_the_view_is_named(asked, capsys):
    del asked.answers["127.0.0.1:7402"]
    assert cli.main(["member", "list", "--endpoints", "127.0.0.1:7401"]) == 0
    out, err = capsys.readouterr()
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["?", "?", "?"]
    assert "as r1 sees them: not the leader" in err
