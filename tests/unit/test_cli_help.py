"""What `regraft` says about itself: its version, and each command's own options."""

import pytest

from cluster import cli
from cluster.service_cluster import VERSION
from storage import versions


def run(capsys, *arguments: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ended:
        cli.main(list(arguments))
    out, err = capsys.readouterr()
    return ended.value.code, out, err


def test_version_names_the_formats_it_reads(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert (
        out.startswith(f"regraft {VERSION} ") and f"machine versions up to {versions.LATEST}" in out
    )


def test_backup_verify_has_its_own_help_and_needs_a_file(capsys):
    """It showed backup's --endpoint and --out, which verify ignores."""
    code, out, _ = run(capsys, "backup", "verify", "--help")
    assert code == 0 and "usage: regraft backup verify [-h] file" in out
    assert "--endpoint" not in out and "--out" not in out
    code, _, err = run(capsys, "backup", "verify")
    assert code == 2 and "the following arguments are required: file" in err


def test_up_states_its_defaults(capsys):
    code, out, _ = run(capsys, "up", "--help")
    assert code == 0
    for default in ("(default: regraft-data)", "(default: 7400)", "1 to 9 (default: 3)"):
        assert default in " ".join(out.split()), default
