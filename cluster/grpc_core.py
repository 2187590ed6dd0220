"""How grpcio's C core runs in regraft's processes: imported before grpcio is.

The core reads GRPC_EXPERIMENTS once, when grpcio is first imported. Since grpcio
1.6x it serves TCP through its EventEngine by default: threads of the engine's own
read the sockets and hand each completion to the thread that polls the completion
queue, one more wake-up for every event. Its older iomgr path (epoll) has the
polling thread read the sockets itself, which costs less (docs/performance.md,
Session 15) but lets one connection that sends as fast as it can keep that thread
from accepting anyone else: new clients of a replica flooded with calls on one
connection waited for 2 to 19 s, until the flood ended (cluster/DESIGN.md, Session
19). So a replica's server, whose connections anyone may open, keeps the EventEngine
listener (the default) and its connections; the endpoints of clients, which only
connect to replicas, run on the epoll path (-event_engine_for_all_other_endpoints).

GRPC_EXPERIMENTS set by the operator is kept as it is.
"""

import os

EXPERIMENTS = "-event_engine_for_all_other_endpoints"

os.environ.setdefault("GRPC_EXPERIMENTS", EXPERIMENTS)
