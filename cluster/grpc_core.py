"""How grpcio's C core runs in regraft's processes: imported before grpcio is.

The core reads GRPC_EXPERIMENTS once, when grpcio is first imported. Since grpcio
1.6x it serves TCP through its EventEngine by default: threads of the engine's own
read the sockets and hand each completion to the thread that polls the completion
queue, one more wake-up for every event. Its older iomgr path (epoll) has the
polling thread read the sockets itself, which costs less CPU per call.

A replica's server stays on the EventEngine (its listener is not switched off): on
the epoll path its one serving thread also accepts connections, and one connection
sending calls as fast as a process can kept it from accepting others for up to 19 s
(cluster/DESIGN.md, Session 19). Clients stay there too: on the epoll path
(-event_engine_client) a bench client spent less CPU per call, but `regraft up`,
which starts replicas as subprocesses while its own client polls them, once did not
find its leader within 15 s, and took 18 s to stop after restarting a killed
replica (tests/cluster/test_up.py: 24 s instead of 6 s; grpc's fork handling on
that path is the suspect, not confirmed). What is switched off is the
EventEngine for the endpoints the core creates itself, outside the listener and the
client's connector: the setting regraft was tested with since Session 19; with it,
servers' and clients' sockets are read on EventEngine threads (strace).

GRPC_EXPERIMENTS set by the operator is kept as it is.
"""

import os

EXPERIMENTS = "-event_engine_for_all_other_endpoints"

os.environ.setdefault("GRPC_EXPERIMENTS", EXPERIMENTS)
