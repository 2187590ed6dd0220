"""regraft's tests. grpcio's core is set up first as in regraft's own processes
(cluster/grpc_core.py), so that servers run in the tests' process too take the path
the replicas take."""

from cluster import grpc_core  # noqa: F401
