"""When the leader promotes a learner: only once it receives the log, runs code new
enough, and is close behind. The cluster tests cover the first two on real processes;
a learner far behind yet answering is hard to arrange there, so all three are here."""

import contextlib
from types import SimpleNamespace

import pytest

from cluster.membership import PROMOTE_MAX_LAG, Changes
from regraft.v1 import cluster_pb2
from storage.errors import FailedPrecondition
from storage.members import Member


def changes(commit: int, learner_applied: int, learner_supports: int = 2, in_force: int = 2):
    """Changes on a leader at `commit`, asking a learner that applied `learner_applied`."""

    @contextlib.contextmanager
    def read():
        yield SimpleNamespace(machine_version=in_force)

    raft = SimpleNamespace(status=lambda: {"commit_idx": commit}, store=SimpleNamespace(read=read))
    learner_status = cluster_pb2.StatusResponse(
        applied_index=learner_applied, supported_machine_version=learner_supports
    )
    members = SimpleNamespace(status_of=lambda member, timeout: learner_status)
    return Changes(raft, members)


LEARNER = Member(id="r4", grpc_address="127.0.0.1:7404", added_at=100)


def refusal(check: Changes) -> FailedPrecondition:
    with pytest.raises(FailedPrecondition) as caught:
        check._require_caught_up(LEARNER)
    return caught.value


def test_a_learner_close_behind_may_be_promoted():
    changes(commit=5000, learner_applied=5000 - PROMOTE_MAX_LAG)._require_caught_up(LEARNER)


def test_a_learner_far_behind_is_refused_with_how_far():
    error = refusal(changes(commit=5000, learner_applied=5000 - PROMOTE_MAX_LAG - 1))
    assert error.oci_code == "LEARNER_BEHIND"
    assert f"{PROMOTE_MAX_LAG + 1} entries behind the commit index 5000" in error.message
    assert "promote it again" in error.message


def test_a_learner_that_never_received_the_entry_adding_it_is_refused():
    error = refusal(changes(commit=150, learner_applied=99))
    assert error.oci_code == "LEARNER_BEHIND"
    assert "not yet the entry that added it (100)" in error.message


def test_a_learner_running_older_code_is_refused():
    error = refusal(changes(commit=150, learner_applied=150, learner_supports=1, in_force=2))
    assert error.oci_code == "LEARNER_TOO_OLD"
    assert "supports machine version 1" in error.message


def test_a_learner_too_old_to_read_the_log_is_told_to_upgrade_not_to_check_its_flags():
    """From machine version 5 an older learner cannot read the sealed peer messages,
    so it never receives the entry that added it: the version is why."""
    error = refusal(changes(commit=150, learner_applied=0, learner_supports=4, in_force=5))
    assert error.oci_code == "LEARNER_TOO_OLD"
    assert "upgrade it first" in error.message


def test_a_voter_is_removed_under_the_address_raft_knows_it_by():
    """The member table says one address, this replica's configuration another (the
    one in Raft's voter set): PySyncObj would refuse to remove the first."""
    removed = []
    raft = SimpleNamespace(
        status=lambda: {"self": "10.0.0.1:7411", "peers": {"r3.internal:7411": True}},
        change_voters=lambda add, address, timeout: (
            removed.append((add, address)) or SimpleNamespace(result=lambda timeout: None)
        ),
    )
    members = SimpleNamespace(local_raft_address=lambda member: "r3.internal:7411")
    voter = Member(id="r3", raft_address="10.0.0.3:7411")
    Changes(raft, members)._change_voters(False, voter, 5.0)
    Changes(raft, members)._change_voters(True, voter, 5.0)
    assert removed == [(False, "r3.internal:7411"), (True, "10.0.0.3:7411")]
