"""regraft bench's etcd requests: etcd's wire format (etcdserverpb, rpc.proto)."""

from cluster import bench


def test_etcd_requests_carry_etcds_field_numbers():
    # PutRequest: key = 1, value = 2 (length-delimited: tag (n << 3) | 2).
    assert bench.EtcdPut(key=b"k", value=b"v").SerializeToString() == b"\x0a\x01k\x12\x01v"
    # RangeRequest: key = 1; serializable = 7 (varint: tag 7 << 3 = 0x38).
    request = bench.EtcdRange(key=b"k", serializable=True)
    assert request.SerializeToString() == b"\x0a\x01k\x38\x01"
