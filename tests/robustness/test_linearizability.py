"""The checker itself: hand-written histories with known answers, and generated ones."""

import math
import os
import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.robustness.history import (
    DELETE,
    DELETE_MANIFEST,
    FAIL,
    GET,
    LIST,
    OK,
    PUT,
    PUT_MANIFEST,
    UNKNOWN,
    Operation,
    load,
)
from tests.robustness.linearizability import check, step

HERE = os.path.dirname(os.path.abspath(__file__))
A, B, C = "sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64


def op(kind, call, ret, outcome=OK, key="t", client=0, **fields) -> Operation:
    return Operation(client, key, kind, call, ret, outcome, **fields)


def put(call, ret, value, previous=None, **fields):
    return op(PUT, call, ret, value=value, result=previous, **fields)


def get(call, ret, seen, **fields):
    return op(GET, call, ret, result=seen, **fields)


def refused(kind, call, ret, error, **fields):
    return op(kind, call, ret, FAIL, error=error, **fields)


# Manifests and listings: tags "x" and "y" of repository "r" (keys "r:x", "r:y").


def push(call, ret, value, tag="x", **fields):
    return op(PUT_MANIFEST, call, ret, key=f"r:{tag}", value=value, **fields)


def drop(call, ret, digest, lost, tag="x", **fields):
    """DeleteManifest of `digest`, written to `tag`; `lost`: the digest the tag lost."""
    return op(DELETE_MANIFEST, call, ret, key=f"r:{tag}", value=digest, result=lost, **fields)


def listing(call, ret, tags, **fields):
    return op(LIST, call, ret, key="r", tags=tags, **fields)


def on(tag, operation):
    operation.key = f"r:{tag}"
    return operation


def test_sequential_history_is_linearizable():
    history = [put(0, 1, A), get(2, 3, A), put(4, 5, B, A), get(6, 7, B)]
    assert check(history).linearizable


def test_stale_read_is_not():
    history = [put(0, 1, A), put(2, 3, B, A), get(4, 5, A)]
    verdict = check(history)
    assert not verdict.linearizable
    assert verdict.unplaced["t"][0].kind == GET


def test_read_of_a_value_never_written_is_not():
    assert not check([put(0, 1, A), get(2, 3, C)]).linearizable


def test_concurrent_read_may_see_either_value():
    for seen in (A, B):
        history = [put(0, 1, A), put(2, 6, B, A), get(3, 4, seen)]
        assert check(history).linearizable


def test_reads_must_agree_on_an_order():
    # Two reads during one write: once one saw the new value, a later one cannot
    # see the old one again.
    history = [put(0, 1, A), put(2, 10, B, A), get(3, 4, B), get(5, 6, A)]
    assert not check(history).linearizable


def test_two_compare_and_sets_from_the_same_value_cannot_both_succeed():
    history = [
        put(0, 1, A),
        put(2, 5, B, A, expected=A),
        put(3, 6, C, A, expected=A),
    ]
    assert not check(history).linearizable
    history[2] = refused(PUT, 3, 6, "FAILED_PRECONDITION", value=C, expected=A)
    assert check(history).linearizable


def test_compare_and_set_refused_although_the_value_matched_is_not():
    history = [put(0, 1, A), refused(PUT, 2, 3, "FAILED_PRECONDITION", value=B, expected=A)]
    assert not check(history).linearizable


def test_create_only_when_absent():
    assert check([put(0, 1, A, must_not_exist=True), get(2, 3, A)]).linearizable
    history = [put(0, 1, A), put(2, 3, B, A, must_not_exist=True)]
    assert not check(history).linearizable


def test_previous_digest_reported_by_a_write_is_checked():
    assert not check([put(0, 1, A), put(2, 3, B, previous=C)]).linearizable


def test_delete_outcomes():
    assert check([put(0, 1, A), op(DELETE, 2, 3, result=A), get(4, 5, None)]).linearizable
    assert check([refused(DELETE, 0, 1, "NOT_FOUND")]).linearizable
    assert not check([put(0, 1, A), refused(DELETE, 2, 3, "NOT_FOUND")]).linearizable
    history = [put(0, 1, A), refused(DELETE, 2, 3, "FAILED_PRECONDITION", expected=B)]
    assert check(history).linearizable
    history = [put(0, 1, A), refused(DELETE, 2, 3, "FAILED_PRECONDITION", expected=A)]
    assert not check(history).linearizable


def test_unknown_write_that_must_have_happened():
    history = [put(0, 1, A), put(2, math.inf, B, outcome=UNKNOWN), get(5, 6, B)]
    assert check(history).linearizable
    # It cannot take effect before it was called.
    history = [put(0, 1, A), get(2, 3, B), put(4, math.inf, B, outcome=UNKNOWN)]
    assert not check(history).linearizable


def test_unknown_write_that_may_not_have_happened():
    history = [put(0, 1, A), put(2, math.inf, B, outcome=UNKNOWN), get(5, 6, A), get(7, 8, A)]
    assert check(history).linearizable
    # Once seen, it cannot be unseen.
    history = [put(0, 1, A), put(2, math.inf, B, outcome=UNKNOWN), get(5, 6, B), get(7, 8, A)]
    assert not check(history).linearizable


def test_unknown_compare_and_set_takes_effect_only_when_it_matches():
    unknown = put(2, math.inf, C, outcome=UNKNOWN, expected=B)
    assert not check([put(0, 1, A), unknown, get(5, 6, C)]).linearizable
    assert check([put(0, 1, B), unknown, get(5, 6, C)]).linearizable


def test_unknown_reads_are_ignored():
    assert check([put(0, 1, A), get(2, math.inf, C, outcome=UNKNOWN)]).linearizable


def test_keys_are_independent():
    history = [put(0, 1, A, key="x"), put(0, 1, B, key="y"), get(2, 3, B, key="y")]
    assert check(history).linearizable
    history.append(get(4, 5, B, key="x"))
    verdict = check(history)
    assert not verdict.linearizable and list(verdict.unplaced) == ["x"]


def test_touching_operations_count_as_concurrent():
    assert check([put(0, 2, A), get(2, 3, None)]).linearizable


def test_step_refuses_unknown_kinds():
    try:
        step(None, op("scan", 0, 1))
    except ValueError:
        return
    raise AssertionError("an unknown kind was accepted")


def test_pushed_tag_is_listed_and_read():
    history = [push(0, 1, A), listing(2, 3, ["x"]), on("x", get(4, 5, A))]
    assert check(history).linearizable
    history.append(push(6, 7, B, tag="y"))
    history.append(listing(8, 9, ["x", "y"]))
    assert check(history).linearizable


def test_listing_without_a_tag_created_before_it_is_not():
    verdict = check([push(0, 1, A), listing(2, 3, [])])
    assert not verdict.linearizable and list(verdict.unplaced) == ["r:x"]


def test_listing_with_a_tag_deleted_before_it_is_not():
    history = [push(0, 1, A), on("x", op(DELETE, 2, 3, result=A)), listing(4, 5, ["x"])]
    assert not check(history).linearizable


def test_listing_a_tag_nobody_wrote_is_not():
    verdict = check([push(0, 1, A), listing(2, 3, ["x", "ghost"])])
    assert not verdict.linearizable and list(verdict.unplaced) == ["r:ghost"]


def test_listing_concurrent_with_a_push_may_show_either():
    for tags in (["x"], []):
        assert check([push(0, 5, A), listing(1, 2, tags)]).linearizable


def test_listings_must_agree_on_an_order():
    history = [push(0, 10, A), listing(1, 2, ["x"]), listing(3, 4, [])]
    assert not check(history).linearizable


def test_unknown_listings_are_ignored():
    assert check([push(0, 1, A), listing(2, math.inf, ["ghost"], outcome=UNKNOWN)]).linearizable


def test_a_listing_is_checked_per_tag_only():
    """Known limit (linearizability.py): y was deleted before x existed, so no instant
    had both, yet the listing's part on each tag fits that tag's history."""
    history = [
        push(0, 1, A, tag="y"),
        on("y", op(DELETE, 3, 4, result=A)),
        push(5, 6, B),
        listing(2, 10, ["x", "y"]),
    ]
    assert check(history).linearizable


def test_push_is_unconditional_and_never_refused():
    history = [push(0, 1, A), push(2, 3, B), on("x", get(4, 5, B))]
    assert check(history).linearizable
    assert not check([push(0, 1, A), refused(PUT_MANIFEST, 2, 3, "NOT_FOUND")]).linearizable


def test_deleting_the_manifest_deletes_its_tag():
    history = [push(0, 1, A), drop(2, 3, A, lost=A), on("x", get(4, 5, None)), listing(6, 7, [])]
    assert check(history).linearizable
    # The answer said no tag pointed at it, but x did.
    assert not check([push(0, 1, A), drop(2, 3, A, lost=None)]).linearizable
    # The tag is gone afterwards.
    assert not check([push(0, 1, A), drop(2, 3, A, lost=A), listing(4, 5, ["x"])]).linearizable


def test_deleting_a_manifest_the_tag_moved_away_from_leaves_the_tag():
    history = [push(0, 1, A), push(2, 3, B), drop(4, 5, A, lost=None), on("x", get(6, 7, B))]
    assert check(history).linearizable
    history[2] = drop(4, 5, A, lost=A)
    assert not check(history).linearizable


def test_deleting_a_manifest_is_never_refused_here():
    """The workload deletes a manifest it saw, once: NOT_FOUND would mean it vanished."""
    history = [push(0, 1, A), refused(DELETE_MANIFEST, 2, 3, "NOT_FOUND", value=A)]
    assert not check(history).linearizable


def test_unknown_manifest_deletion_may_or_may_not_have_happened():
    unknown = drop(2, math.inf, A, lost=None, outcome=UNKNOWN)
    for seen in (A, None):
        assert check([push(0, 1, A), unknown, on("x", get(5, 6, seen))]).linearizable
    # Once gone, the tag cannot come back: nobody writes A again.
    history = [push(0, 1, A), unknown, listing(5, 6, []), on("x", get(7, 8, A))]
    assert not check(history).linearizable


def test_unknown_push_that_must_have_happened():
    history = [push(0, 1, A), push(2, math.inf, B, outcome=UNKNOWN), listing(3, 4, ["x"])]
    history.append(on("x", get(5, 6, B)))
    assert check(history).linearizable
    history = [on("x", get(0, 1, B)), push(2, math.inf, B, outcome=UNKNOWN)]
    assert not check(history).linearizable


def test_kept_regression_history_is_rejected():
    """A stale read recorded from a synthetic run stays rejected (the file format too)."""
    history = load(os.path.join(HERE, "histories", "stale_read.json"))
    assert not check(history).linearizable
    history = [o for o in history if not (o.kind == GET and o.result == A)]
    assert check(history).linearizable


# -- generated histories ----------------------------------------------------------------


def sequential_run(
    rng: random.Random, count: int, keys: int, unknown: float, overlap: float, unique: bool = True
) -> list[Operation]:
    """Operations applied one after another to a model, then given random overlapping
    intervals around their linearization points: linearizable by construction.

    Keys are tags of repository "r". Writes write fresh values (as the workload does)
    unless `unique` is False, when they pick among three; then manifests are neither
    pushed nor deleted (the model needs each digest on one tag only, as the workload
    does). A change with an unknown outcome took effect at its point, or never.
    """
    states: dict[str, str | None] = {}
    written: list[str] = [A, B, C]
    on_key: dict[str, list[str]] = {}  # digests written to each key, not deleted yet
    kinds = [GET, PUT, PUT, DELETE]
    if unique:
        kinds += [PUT_MANIFEST, DELETE_MANIFEST, LIST]
    history = []
    for point in range(count):
        key = f"r:k{rng.randrange(keys)}"
        state = states.get(key)
        kind = rng.choice(kinds)
        if kind == DELETE_MANIFEST and not on_key.get(key):
            kind = GET
        fields: dict = {}
        if kind in (PUT, PUT_MANIFEST):
            fields["value"] = f"v{point}" if unique else rng.choice(written)
            written.append(fields["value"])
            on_key.setdefault(key, []).append(fields["value"])
            mode = rng.randrange(3) if kind == PUT else 0
            if mode == 1:
                fields["expected"] = state if state and rng.random() < 0.6 else rng.choice(written)
            elif mode == 2:
                fields["must_not_exist"] = True
        elif kind == DELETE and rng.random() < 0.5:
            fields["expected"] = state if state and rng.random() < 0.6 else rng.choice(written)
        elif kind == DELETE_MANIFEST:
            fields["value"] = on_key[key].pop(rng.randrange(len(on_key[key])))
        elif kind == LIST:
            key = "r"
            fields["tags"] = sorted(k.partition(":")[2] for k, v in states.items() if v)
        candidate = Operation(0, key, kind, 0.0, 0.0, OK, **fields)
        candidate.result = state
        if kind == PUT_MANIFEST:
            candidate.result = None  # its answer does not say
        elif kind == DELETE_MANIFEST:
            candidate.result = state if state == candidate.value else None
        allowed, following = step(state, candidate) if kind != LIST else (True, state)
        if not allowed:  # the only refused ones: conditional writes
            refusal = "NOT_FOUND" if kind == DELETE and state is None else "FAILED_PRECONDITION"
            candidate.outcome, candidate.error = FAIL, refusal
            candidate.result, following = None, state
        if kind not in (GET, LIST) and rng.random() < unknown:
            candidate.outcome, candidate.error, candidate.result = UNKNOWN, "UNAVAILABLE", None
            if rng.random() < 0.5:
                following = state
        candidate.call = point - rng.random() * overlap
        candidate.ret = math.inf if candidate.outcome == UNKNOWN else point + rng.random() * overlap
        if kind != LIST:
            states[key] = following
        history.append(candidate)
    rng.shuffle(history)
    return history


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    unknown=st.sampled_from([0.0, 0.1, 0.3]),
    unique=st.booleans(),
)
def test_generated_linearizable_histories_are_accepted(seed, unknown, unique):
    history = sequential_run(random.Random(seed), 60, 2, unknown, overlap=3.0, unique=unique)
    assert check(history).linearizable


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), data=st.data())
def test_generated_sequential_histories_with_a_wrong_read_are_rejected(seed, data):
    """Without overlaps and unknowns the order is forced: any other read result is wrong."""
    history = sequential_run(random.Random(seed), 40, 1, 0.0, overlap=0.4)
    reads = [o for o in history if o.kind == GET]
    if not reads:
        return
    target = data.draw(st.sampled_from(reads))
    others = sorted({o.value for o in history if o.kind == PUT} - {target.result})
    target.result = data.draw(st.sampled_from([*others, None] if target.result else others))
    assert not check(history).linearizable


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32), data=st.data())
def test_generated_sequential_histories_with_a_wrong_listing_are_rejected(seed, data):
    """As above, for listings: a tag added to or left out of one is noticed."""
    history = sequential_run(random.Random(seed), 40, 2, 0.0, overlap=0.4)
    listings = [o for o in history if o.kind == LIST]
    if not listings:
        return
    target = data.draw(st.sampled_from(listings))
    flipped = data.draw(st.sampled_from(["k0", "k1", "ghost"]))
    target.tags = sorted(set(target.tags) ^ {flipped})
    assert not check(history).linearizable


def test_thousands_of_operations_per_key_in_seconds():
    """About 8 operations in flight per key and 2 % unknown outcomes: more than the
    short profile's workload sees (under 2 in flight per tag, about 1 % unknown)."""
    history = sequential_run(random.Random(6), 6000, 2, 0.02, overlap=4.0)
    started = time.monotonic()
    assert check(history).linearizable
    took = time.monotonic() - started
    print(f"checked {len(history)} operations on 2 keys in {took:.2f}s")
    assert took < 20.0


def full_disk_burst(deletes: int, pushes: int) -> list[Operation]:
    """Tag "x" at A, then a burst of overlapping writes that all end unknown (a full
    disk: the client cannot tell whether its retries got in), then B pushed and read."""
    history = [push(0.0, 0.1, A), get(0.2, 0.3, A, key="r:x")]
    for i in range(deletes):
        history.append(op(DELETE, 1.0 + i / 100, math.inf, UNKNOWN, key="r:x"))
    for i in range(pushes):
        history.append(push(1.0 + i / 100, math.inf, f"sha256:{i:064x}", outcome=UNKNOWN))
    history += [push(3.0, 3.1, B), get(3.2, 3.3, B, key="r:x"), listing(3.4, 3.5, ["x"])]
    return history


def test_a_burst_of_unknown_outcomes_is_checked_in_seconds():
    """Unknown deletes of one tag, and unknown pushes of digests nobody saw, are each
    alike to the model: the search tries one of each, not every subset in every order."""
    history = full_disk_burst(18, 9)
    started = time.monotonic()
    assert check(history).linearizable
    assert time.monotonic() - started < 20.0
    history.append(get(3.6, 3.7, A, key="r:x"))  # A came back: nobody wrote it again
    assert not check(history).linearizable
    assert time.monotonic() - started < 20.0
