"""Commands pointed at an address where no replica answers say so, and soon: not
after the minute a membership change may wait for an election."""

import socket
import time

from cluster import cli
from cluster.cli_members import _CHANGE_TIMEOUT


def nothing_listens() -> str:
    """A loopback address whose port was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_a_membership_command_gives_up_on_endpoints_nobody_answers(capsys):
    started = time.monotonic()
    code = cli.main(["leader", "transfer", "--endpoints", nothing_listens()])
    took = time.monotonic() - started
    assert code == 1
    assert took < _CHANGE_TIMEOUT / 2, f"gave up after {took:.1f} s"
    err = capsys.readouterr().err
    assert "regraft leader transfer: UNAVAILABLE: " in err  # the code, then the details
    assert "Connection refused" in err
    assert "no replica answered: check the endpoints" in err
    assert "--ca-file" in err  # a TLS replica spoken to in plaintext looks the same


def test_a_host_name_that_does_not_resolve_is_nobody_answering(capsys):
    """`regraft call` waited its whole 30 s for it, membership commands a minute."""
    started = time.monotonic()
    code = cli.main(["call", "--endpoints", "regraft-test.invalid:7401", "ListRepositories", "{}"])
    took = time.monotonic() - started
    assert code == 1
    assert took < 15, f"gave up after {took:.1f} s"
    err = capsys.readouterr().err
    assert "errors resolving regraft-test.invalid:7401" in err
    assert "no replica answered: check the endpoints" in err


def test_leader_transfer_takes_the_voter_as_an_argument_or_with_to(capsys):
    """`regraft leader transfer r3` was refused as an unrecognized argument."""
    assert cli.main(["leader", "transfer", "r3", "--to", "r2"]) == 2
    assert "two voters named: r3 and --to r2" in capsys.readouterr().err
    code = cli.main(["leader", "transfer", "r3", "--endpoints", nothing_listens()])
    assert code == 1  # parsed, then nobody answered
    assert "UNAVAILABLE" in capsys.readouterr().err
