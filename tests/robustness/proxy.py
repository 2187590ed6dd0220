"""TCP proxies on the Raft links between replicas, which the test tells to pass, delay,
blackhole or reset traffic, each direction on its own.

Why a proxy works with PySyncObj: it opens one TCP connection per pair of nodes,
initiated by the node whose address string is greater (TCPTransport._shouldConnect:
selfNode.address > node.address). The connecting node first sends its own address
(encrypted, after the key exchange), and the accepting node finds that address among
its configured peers. So for a pair X > Y, X's configuration lists Y at a proxy
address P (chosen to compare less than X, so that X still connects), and Y lists X
at X's real address, which it uses only to recognize X. regraft maps a leader's Raft
address to its gRPC endpoint through each replica's own configuration
(cluster/membership.py), so every replica still knows who leads.

A replica that joins later (a membership change) is known to the members by the
address it announced, from the log: it gets an address greater than all of theirs,
so that it connects to each of them, through proxies (interpose_joining). A learner
connects to every voter anyway (PySyncObj's read-only node), so this holds before and
after its promotion.

All links share one asyncio loop on one daemon thread; the test thread changes a
link's behaviour through thread-safe calls.
"""

import asyncio
import contextlib
import random
import socket
import threading
from dataclasses import dataclass, replace

from cluster.config import Peer
from tests.cluster.harness import free_port

_CHUNK = 1 << 16


@dataclass
class Behaviour:
    """What one direction of a link does to the bytes it carries."""

    delay: float = 0.0  # seconds added to every chunk
    jitter: float = 0.0  # up to this much more, at random (order is kept)
    blackhole: bool = False  # read and discard: the peer hears nothing
    reset_probability: float = 0.0  # per chunk: close the connection (a dropped link)


class Link:
    """One proxied Raft link: `source` connects through it to `target`."""

    def __init__(self, source: str, target: str, target_address: str):
        self.source = source  # replica ids
        self.target = target
        self.target_address = target_address
        self.forward = Behaviour()  # source -> target
        self.backward = Behaviour()  # target -> source
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.address = ""

    async def _start(self, below: str) -> None:
        listening = _socket_below(below)
        self.address = f"127.0.0.1:{listening.getsockname()[1]}"
        self._server = await asyncio.start_server(self._accept, sock=listening)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.target_address.rsplit(":", 1)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            self._pipe(reader, upstream_writer, lambda: self.forward),
            self._pipe(upstream_reader, writer, lambda: self.backward),
        )

    async def _pipe(self, reader, writer, behaviour) -> None:
        """Copy one direction, applying the behaviour current at each chunk."""
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                if chunk is None:
                    break
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        last_due = 0.0
        try:
            while chunk := await reader.read(_CHUNK):
                now = behaviour()
                if now.reset_probability and random.random() < now.reset_probability:
                    break
                if now.blackhole:
                    continue
                due = loop.time() + now.delay + random.random() * now.jitter
                last_due = max(last_due, due)
                queue.put_nowait((last_due, chunk))
                if sender.done():
                    break
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            queue.put_nowait((0.0, None))
            with contextlib.suppress(Exception):
                await sender
            self._close(writer)

    def _close(self, writer: asyncio.StreamWriter) -> None:
        self._writers.discard(writer)
        with contextlib.suppress(Exception):
            writer.transport.abort()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            self._close(writer)

    def set(self, forward: Behaviour | None = None, backward: Behaviour | None = None) -> None:
        """Change both directions (None: pass traffic unchanged)."""
        self.forward = forward or Behaviour()
        self.backward = backward or Behaviour()


def _socket_below(bound: str) -> socket.socket:
    """A listening socket on 127.0.0.1 whose "host:port" compares less than `bound`."""
    rng = random.Random()
    bound_port = int(bound.rsplit(":", 1)[1])
    for _ in range(1000):
        port = rng.randrange(10000, 60000)
        if not f"127.0.0.1:{port}" < bound or port == bound_port:
            continue
        listening = socket.socket()
        try:
            listening.bind(("127.0.0.1", port))
        except OSError:
            listening.close()
            continue
        listening.listen(16)
        listening.setblocking(False)
        return listening
    raise RuntimeError(f"no free port below {bound}")


class Network:
    """Proxies for every pair of replicas, and faults expressed over replica ids."""

    def __init__(self) -> None:
        self.links: list[Link] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxy", daemon=True)
        self._thread.start()

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def add_link(self, source: str, source_address: str, target: str, target_address: str):
        """A proxy that `source` (whose Raft address is greater) uses to reach `target`."""
        assert source_address > target_address
        link = Link(source, target, target_address)
        self.run(link._start(source_address))
        self.links.append(link)
        return link

    def interpose(self, replicas: list) -> None:
        """Route the Raft links of not yet started replicas (harness ReplicaProcess)
        through proxies, by giving each replica its own view of its peers' addresses."""
        real = {r.id: r.config.raft_address for r in replicas}
        for replica in replicas:
            peers = []
            for peer in replica.config.peers:
                address = peer.raft_address
                if real[replica.id] > real[peer.id]:
                    link = self.add_link(replica.id, real[replica.id], peer.id, real[peer.id])
                    address = link.address
                peers.append(Peer(peer.id, address, peer.grpc_address))
            replica.config = replace(replica.config, peers=peers)

    def interpose_joining(self, replica) -> None:
        """Route the Raft links of a replica about to join (harness new_member(), whose
        peers are the members at their real addresses) through proxies.

        The members learn its address from the log, not from a configuration this test
        could rewrite, so they must never be the side that connects: it gets a Raft
        address greater than every member's, and reaches each through a proxy.
        """
        real = [peer.raft_address for peer in replica.config.peers]
        above = max(int(address.rsplit(":", 1)[1]) for address in real)
        address = f"127.0.0.1:{free_port(above=above)}"
        assert all(address > peer for peer in real), (address, real)
        peers = []
        for peer in replica.config.peers:
            link = self.add_link(replica.id, address, peer.id, peer.raft_address)
            peers.append(Peer(peer.id, link.address, peer.grpc_address))
        replica.config = replace(replica.config, raft_address=address, peers=peers)

    def partition(self, *groups: set[str]) -> None:
        """Blackhole every link between different groups (both directions)."""
        group_of = {member: i for i, group in enumerate(groups) for member in group}
        for link in self.links:
            if group_of.get(link.source) != group_of.get(link.target):
                link.set(Behaviour(blackhole=True), Behaviour(blackhole=True))

    def degrade(self, rng: random.Random, delay: float, jitter: float, resets: float) -> None:
        """Every link delays both directions, and now and then drops its connection."""
        for link in self.links:
            link.set(*(Behaviour(rng.random() * delay, jitter, False, resets) for _ in "fb"))

    def heal(self) -> None:
        for link in self.links:
            link.set()

    def close(self) -> None:
        for link in self.links:
            with contextlib.suppress(Exception):
                self.run(link._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
