"""The unary call pool (cluster/workers.py): few calls run at once, waiting calls
give their turn away, and a call that blocks without saying so stalls nobody."""

import concurrent.futures
import threading
import time

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import streams, workers
from cluster.workers import Workers

LIVENESS = 10.0  # generous: only a hang fails


@pytest.fixture
def pools():
    made = []

    def make(*args, **kwargs) -> Workers:
        pool = Workers(*args, **kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.shutdown(wait=True, cancel_futures=True)


def test_results_and_exceptions_reach_the_futures(pools):
    pool = pools(4, 2)

    def fail():
        raise ValueError("bad value 7")

    assert pool.submit(lambda a, b=0: a + b, 2, b=3).result(LIVENESS) == 5
    with pytest.raises(ValueError, match="bad value 7"):
        pool.submit(fail).result(LIVENESS)


def test_only_running_calls_start_at_once(pools):
    pool = pools(8, 2, stall=60)  # no watchdog within the test
    release = threading.Event()
    two_started = threading.Barrier(3)
    started = []

    def call(i: int) -> None:
        started.append(i)
        if i < 2:
            two_started.wait(LIVENESS)
        release.wait(LIVENESS)

    futures = [pool.submit(call, i) for i in range(5)]
    two_started.wait(LIVENESS)
    # The first two run; the other three stay queued, however long they wait.
    done, _ = concurrent.futures.wait(futures, timeout=0.3)
    assert not done and sorted(started) == [0, 1]
    release.set()
    concurrent.futures.wait(futures, timeout=LIVENESS)
    assert all(f.done() for f in futures) and sorted(started) == [0, 1, 2, 3, 4]


def test_a_waiting_call_gives_its_turn_away(pools):
    pool = pools(8, 1, stall=60)
    release = threading.Event()

    def wait():
        with workers.blocking():
            release.wait(LIVENESS)
        return "waited"

    waiting = pool.submit(wait)
    assert pool.submit(lambda: "quick").result(LIVENESS) == "quick"
    assert not waiting.done()
    release.set()
    assert waiting.result(LIVENESS) == "waited"


def test_a_call_blocking_unannounced_does_not_stall_the_others(pools):
    pool = pools(8, 1, stall=0.05)
    release = threading.Event()
    stuck = pool.submit(release.wait, LIVENESS)  # holds the only turn, says nothing
    assert pool.submit(lambda: "through").result(LIVENESS) == "through"
    release.set()
    assert stuck.result(LIVENESS) is True


def test_calls_stuck_unannounced_stop_counting_against_the_limit(pools):
    """Two calls blocked without blocking() (a client holding back its request's
    message, say) leave the others a full turn, not one call per stall."""
    pool = pools(8, 2, stall=0.05)
    release = threading.Event()
    stuck = [pool.submit(release.wait, LIVENESS) for _ in range(2)]
    started = time.monotonic()
    quick = [pool.submit(lambda: None) for _ in range(200)]
    concurrent.futures.wait(quick, timeout=LIVENESS)
    # One call per 50 ms would take 10 s.
    assert all(f.done() for f in quick) and time.monotonic() - started < LIVENESS / 2
    release.set()
    assert all(f.result(LIVENESS) for f in stuck)


def test_a_wait_inside_a_wait_gives_the_turn_away_once(pools):
    """A membership change waits, and proposes inside its wait: the turn it gave away
    is not given away twice (two calls would then run where one may)."""
    pool = pools(8, 1, stall=60)
    release = threading.Event()

    def nested():
        with workers.blocking(), workers.blocking():
            release.wait(LIVENESS)

    waiting = pool.submit(nested)
    together = threading.Barrier(2)
    pair = [pool.submit(together.wait, 0.5) for _ in range(2)]
    # One turn: the two never run at once, so the barrier breaks.
    with pytest.raises(threading.BrokenBarrierError):
        pair[0].result(LIVENESS)
    release.set()
    waiting.result(LIVENESS)


def test_shutdown_ends_every_thread_even_over_the_limit(pools):
    pool = pools(4, 1, stall=60)
    resume, finish = threading.Event(), threading.Event()

    def waits():
        with workers.blocking():
            resume.wait(LIVENESS)

    first = pool.submit(waits)  # gives its turn away...
    second = pool.submit(finish.wait, LIVENESS)  # ...to this one
    third = pool.submit(lambda: "third")  # queued
    ending = threading.Thread(target=pool.shutdown)  # waits for every thread
    ending.start()
    while True:  # until the pool is closed: quick calls queued meanwhile run too
        try:
            pool.submit(lambda: None)
        except RuntimeError:
            break
    resume.set()  # the first comes back over the limit, with calls queued
    first.result(LIVENESS)
    finish.set()
    assert second.result(LIVENESS) is True and third.result(LIVENESS) == "third"
    ending.join(LIVENESS)
    assert not ending.is_alive(), "a pool thread was left parked"


def test_calls_beyond_the_threads_wait_for_one(pools):
    pool = pools(2, 2, stall=0.01)
    release = threading.Event()

    def wait():
        with workers.blocking():
            return release.wait(LIVENESS)

    held = [pool.submit(wait) for _ in range(2)]
    third = pool.submit(lambda: "third")
    done, _ = concurrent.futures.wait([third], timeout=0.3)
    assert not done  # two threads, both in a call
    release.set()
    assert third.result(LIVENESS) == "third"
    assert all(f.result(LIVENESS) for f in held)


def test_shutdown_runs_what_is_queued_then_refuses(pools):
    pool = pools(1, 1, stall=60)
    release = threading.Event()
    first = pool.submit(release.wait, LIVENESS)
    queued = pool.submit(lambda: "queued")
    cancelled_pool = pools(1, 1, stall=60)
    cancelled_pool.submit(release.wait, LIVENESS)
    dropped = cancelled_pool.submit(lambda: "dropped")
    cancelled_pool.shutdown(wait=False, cancel_futures=True)
    assert dropped.cancelled()
    release.set()
    pool.shutdown(wait=True)
    assert first.result(0) is True and queued.result(0) == "queued"
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)


def test_blocking_elsewhere_is_harmless():
    with workers.blocking():
        pass


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="between 1 and threads \\(2\\), not 3"):
        Workers(2, 3)


@settings(max_examples=25, deadline=None)
@given(
    calls=st.lists(st.booleans(), min_size=1, max_size=40),
    running=st.integers(1, 3),
    threads=st.integers(3, 6),
)
def test_every_call_runs_and_never_more_than_running_at_once(calls, running, threads):
    """Random mixes of quick calls and calls that wait (announced): all finish, and the
    calls running outside a wait never exceed `running`."""
    pool = Workers(threads, running, stall=60)
    lock = threading.Lock()
    active, most = [0], [0]
    release = threading.Event()

    def call(i: int, waits: bool) -> int:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.002)  # overlap with the calls around it
        if waits:
            with lock:
                active[0] -= 1
            with workers.blocking():
                release.wait(LIVENESS)
        else:
            with lock:
                active[0] -= 1
        return i

    try:
        futures = [pool.submit(call, i, waits) for i, waits in enumerate(calls)]
        release.set()
        assert [f.result(LIVENESS) for f in futures] == list(range(len(calls)))
        assert most[0] <= running
    finally:
        pool.shutdown(wait=True)


def test_streams_run_on_the_pool_their_cap_names():
    """grpcio honours a handler's own pool only if it is a ThreadPoolExecutor: else a
    stream silently takes a thread of the unary pool for as long as it lasts."""
    unary, stream = Workers(2, 1), Workers(2, 2, name="grpc-stream")
    server = grpc.server(unary, interceptors=[streams.StreamCaps(stream)])
    here = threading.current_thread
    handler = grpc.method_handlers_generic_handler(
        "test.Threads",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(lambda _, __: here().name.encode()),
            "Stream": grpc.unary_stream_rpc_method_handler(
                lambda _, __: iter([here().name.encode()])
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert channel.unary_unary("/test.Threads/Unary")(b"", timeout=LIVENESS) == b"grpc_0"
            names = list(channel.unary_stream("/test.Threads/Stream")(b"", timeout=LIVENESS))
            assert names == [b"grpc-stream_0"]
    finally:
        server.stop(None).wait()
        unary.shutdown()
        stream.shutdown()
    with pytest.raises(TypeError, match="threads must be a ThreadPoolExecutor, not Executor"):
        streams.StreamCaps(concurrent.futures.Executor())


def test_streams_past_their_cap_are_refused_at_once_not_queued():
    """A stream that holds a thread (Backup) is refused over streams.CAP, with the
    method named, and admitted again once one ends."""
    unary, stream = Workers(2, 1), Workers(streams.STREAM_THREADS, streams.STREAM_THREADS)
    server = grpc.server(unary, interceptors=[streams.StreamCaps(stream)])
    release = threading.Event()

    def hold(_, context):
        yield b"started"
        release.wait(LIVENESS)

    handler = grpc.method_handlers_generic_handler(
        "test.Streams", {"Hold": grpc.unary_stream_rpc_method_handler(hold)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_stream("/test.Streams/Hold")
            held = [call(b"", timeout=LIVENESS) for _ in range(streams.CAP)]
            assert [next(h) for h in held] == [b"started"] * streams.CAP
            with pytest.raises(grpc.RpcError) as refused:
                next(call(b"", timeout=LIVENESS))
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"already serves {streams.CAP} /test.Streams/Hold streams" in (
                refused.value.details()
            )
            release.set()
            assert [list(h) for h in held] == [[]] * streams.CAP
            assert list(call(b"", timeout=LIVENESS)) == [b"started"]
    finally:
        release.set()
        server.stop(None).wait()
        unary.shutdown()
        stream.shutdown()
