"""How grpcio's C core runs in regraft's processes: imported before grpcio is.

The core reads GRPC_EXPERIMENTS once, when grpcio is first imported. Since grpcio
1.6x it serves TCP through its EventEngine by default: threads of the engine's own
read the sockets and hand each completion to the thread that polls the completion
queue, one more wake-up for every event. With the EventEngine listener and endpoints
off, the core's older iomgr path (epoll) has the polling thread read the socket
itself. Measured on 2 cores (docs/performance.md, Session 15): a bare server's CPU
per call 83-99 -> 64-67 us; a follower answering STALE reads at 128 callers, 4.5 ->
2.8 context switches and 261 -> 222 us per read.

GRPC_EXPERIMENTS set by the operator is kept as it is.
"""

import os

EXPERIMENTS = "-event_engine_listener,-event_engine_for_all_other_endpoints"

os.environ.setdefault("GRPC_EXPERIMENTS", EXPERIMENTS)
