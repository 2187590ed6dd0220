"""The gRPC health service (grpc.health.v1), whose Watch holds no lock while it sends.

grpc_health's HealthServicer sends Watch's first answer, and every later status,
while holding its one lock, with grpcio's blocking send, which waits for grpcio's
serving thread to complete the send; that thread runs the close callbacks of
cancelled Watch calls, which take the same lock. A client opening Watch calls and
cancelling them hung a replica's whole gRPC API within a second, for good (a review
measured it after 8 to 23 such calls; a bare grpcio server with that servicer hangs
the same way), and a client that stops reading hung set(). Here each Watch is a
nonblocking.Call: a status change is handed to each watcher, which sends it when its
previous send has completed (only the latest status, as the protocol allows), and
nothing waits for a client while holding a lock.

Watch names a service from the client: at most MAX_WATCHES are open at once, a
quarter of them per caller (streams.Shares: the host it calls from, as health checks
carry no credentials; one more is refused with RESOURCE_EXHAUSTED), and a name is at
most MAX_SERVICE_NAME bytes, so open watches hold little memory whatever they name.
"""

import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cluster import auth, nonblocking, streams
from cluster.rpc import Counted

Status = health_pb2.HealthCheckResponse.ServingStatus
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
MAX_WATCHES = 1024
MAX_SERVICE_NAME = 256


class Health(health_pb2_grpc.HealthServicer):
    """Statuses by service name ("" is the whole server); counted like the API's calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statuses: dict[str, int] = {"": SERVING}
        self._watchers: dict[str, set[_Watcher]] = {}
        self._open = 0
        self._shares = streams.Shares(MAX_WATCHES, "health watch")
        self._version = 0  # of the statuses: a watcher skips what is older than it sent
        self._shutting_down = False

    def Check(self, request, context):
        with Counted("HealthCheck") as call:
            with self._lock:
                status = self._statuses.get(request.service)
            if status is None:
                call.code = grpc.StatusCode.NOT_FOUND
                context.abort(call.code, f"no service {request.service[:MAX_SERVICE_NAME]!r}")
            return health_pb2.HealthCheckResponse(status=status)

    def Watch(self, request, context, _send_response=None) -> None:
        """The service's status now, then each change, until the caller goes away."""
        counted = Counted("HealthWatch").start()
        service = request.service
        refusal = None
        if len(service.encode()) > MAX_SERVICE_NAME:
            refusal = (
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the service name is over {MAX_SERVICE_NAME} bytes",
            )
        watcher = _Watcher(nonblocking.Call(context), auth.caller_key(context))
        with self._lock:
            if refusal is None and self._open >= MAX_WATCHES:
                refusal = (
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"this replica already serves {MAX_WATCHES} health watches: use Check, "
                    "or another replica",
                )
            elif refusal is None and (over := self._shares.refusal(watcher.holder)):
                refusal = (grpc.StatusCode.RESOURCE_EXHAUSTED, over)
            if refusal is None:
                self._open += 1
                self._shares.take(watcher.holder)
                self._watchers.setdefault(service, set()).add(watcher)
                status = self._statuses.get(service, SERVICE_UNKNOWN)
                version = self._version
        if refusal is not None:
            counted.code = refusal[0]
            watcher.call.finish(*refusal)
            counted.end()
            return

        def closed() -> None:
            self._forget(service, watcher)
            if not watcher.call.statused:  # its caller left: cancelled, or out of time
                counted.code = grpc.StatusCode.CANCELLED
            counted.end()

        if not context.add_callback(closed):
            closed()  # already over
            return
        # Not under the lock: grpcio may run `closed` holding the call's own lock.
        watcher.post(status, version)

    Watch.experimental_non_blocking = True

    def set(self, service: str, status: int) -> None:
        """Set a service's status and tell its watchers; returns at once."""
        with self._lock:
            if self._shutting_down:
                return
            told = self._change(service, status)
        for watcher, version in told:
            watcher.post(status, version)

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING from now on; later set() calls are ignored."""
        with self._lock:  # one hold: a set() cannot slip in between
            self._shutting_down = True
            told = [
                t for service in list(self._statuses) for t in self._change(service, NOT_SERVING)
            ]
        for watcher, version in told:
            watcher.post(NOT_SERVING, version)

    def _change(self, service: str, status: int) -> list[tuple["_Watcher", int]]:
        """Record a status (lock held); the watchers to tell, with its version."""
        self._statuses[service] = status
        self._version += 1
        return [(watcher, self._version) for watcher in self._watchers.get(service, ())]

    def _forget(self, service: str, watcher: "_Watcher") -> None:
        with self._lock:
            watchers = self._watchers.get(service)
            if watchers is not None and watcher in watchers:
                watchers.discard(watcher)
                self._open -= 1
                self._shares.give_back(watcher.holder)
                if not watchers:
                    del self._watchers[service]


class _Watcher:
    """One Watch call: at most one send outstanding; a status posted meanwhile waits,
    replaced by any newer one, and one older than the last posted is dropped."""

    def __init__(self, call: nonblocking.Call, holder: str) -> None:
        self.call = call
        self.holder = holder  # its caller, for its share (auth.caller_key)
        self._lock = threading.Lock()
        self._sending = False
        self._waiting: int | None = None
        self._sent: int | None = None
        self._version = -1

    def post(self, status: int, version: int) -> None:
        with self._lock:
            if version <= self._version:
                return
            self._version = version
            if self._sending:
                self._waiting = status
                return
            if status == self._sent:
                return
            self._sending, self._sent = True, status
        self._send(status)

    def _send(self, status: int) -> None:
        data = health_pb2.HealthCheckResponse(status=status).SerializeToString()
        if not self.call.send(data, self._done):
            with self._lock:
                self._sending = False  # the call is over

    def _done(self) -> None:
        """On grpcio's serving thread, once the last send completed (or the call ended)."""
        with self._lock:
            status, self._waiting = self._waiting, None
            if status is None or status == self._sent:
                self._sending = False
                return
            self._sent = status
        self._send(status)
