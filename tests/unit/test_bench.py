"""regraft bench: its etcd requests in etcd's wire format (etcdserverpb, rpc.proto), and
its flags."""

import pytest

from cluster import bench, cli


def test_etcd_requests_carry_etcds_field_numbers():
    # PutRequest: key = 1, value = 2 (length-delimited: tag (n << 3) | 2).
    assert bench.EtcdPut(key=b"k", value=b"v").SerializeToString() == b"\x0a\x01k\x12\x01v"
    # RangeRequest: key = 1; serializable = 7 (varint: tag 7 << 3 = 0x38).
    request = bench.EtcdRange(key=b"k", serializable=True)
    assert request.SerializeToString() == b"\x0a\x01k\x38\x01"


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--ops", "write,frobnicate"], "--ops frobnicate: use write, read-stale"),
        (["--concurrency", "x"], "argument --concurrency: 'x' is not a number"),
        (["--concurrency", "1,0"], "argument --concurrency: 0 is not above 0"),
        (["--duration", "-1"], "argument --duration: -1 is not above 0"),
        (["--processes", "0"], "argument --processes: 0 is not above 0"),
    ],
)
def test_bad_bench_flags_are_refused_before_anything_runs(flags, says, capsys):
    try:
        code = cli.main(["bench", "--endpoints", "127.0.0.1:1", *flags])
    except SystemExit as e:  # argparse's refusal
        code = e.code
    assert code == 2
    assert says in capsys.readouterr().err


def test_a_result_line_says_what_the_callers_cost():
    row = {
        "target": "etcd",
        "op": "read-stale",
        "concurrency": 128,
        "ops": 70000,
        "errors": 0,
        "ops_per_second": 8750.0,
        "p50_ms": 12.2,
        "p99_ms": 40.1,
        "client_cpu_us_per_op": 146,
    }
    line = bench.format_result(row)
    assert line.startswith("etcd read-stale")
    assert "8750.0 ops/s" in line and "client CPU 146 us/op" in line
    assert "errors 0  client CPU" in line
    # Errors come with their codes (a failover: which ones, how many).
    failed = {**row, "errors": 15, "errors_by_code": {"UNAVAILABLE": 12, "DEADLINE_EXCEEDED": 3}}
    assert "errors 15 (UNAVAILABLE 12, DEADLINE_EXCEEDED 3)  client" in bench.format_result(failed)
