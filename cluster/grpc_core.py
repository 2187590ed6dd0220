"""How grpcio's C core runs in regraft's processes: imported before grpcio is.

The core reads GRPC_EXPERIMENTS once, when grpcio is first imported. Since grpcio
1.6x it serves TCP through its EventEngine by default: threads of the engine's own
read the sockets and hand each completion to the thread that polls the completion
queue, one more wake-up for every event. Its older iomgr path (epoll) has the
polling thread read the sockets itself, which costs less CPU per call.

A replica's server stays on the EventEngine (its listener is not switched off): on
the epoll path its one serving thread also accepts connections, and one connection
sending calls as fast as a process can kept it from accepting others for up to 19 s
(cluster/DESIGN.md, Session 19). Clients, which only connect to replicas, run on the
epoll path (-event_engine_client; -event_engine_for_all_other_endpoints for the
endpoints the core creates itself): the bench client's CPU per STALE read, sequential,
302 -> 243 us (docs/performance.md, Session 19).

GRPC_EXPERIMENTS set by the operator is kept as it is.
"""

import os

EXPERIMENTS = "-event_engine_client,-event_engine_for_all_other_endpoints"

os.environ.setdefault("GRPC_EXPERIMENTS", EXPERIMENTS)
