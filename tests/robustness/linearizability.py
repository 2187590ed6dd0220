"""A linearizability checker for tag registers: Wing & Gong's search, memoized as porcupine does.

The history is split per key (one repository:tag register each; registers are
independent, so the whole is linearizable exactly when every part is). For one key,
call and return events are put in a doubly linked list in time order (a call before a
return at the same instant: touching operations count as concurrent). The search
walks the list: a call may be linearized next if the model accepts it in the current
state; it is then lifted out of the list with its return. Reaching a return whose
operation is not linearized yet means the choice so far is wrong: backtrack. The
cache of (set of linearized operations, state) pairs already explored (porcupine's
memoization) keeps the search from exploring the same configuration twice.

An operation with an unknown outcome returns at +infinity: it may be linearized at
any point after its call, with its deterministic effect in the state at that point,
or after everything else (which is the same as never, since nothing observes it).
When it wrote a value that no other operation writes and that some operation saw
(a read, or the previous digest a write replaced), it must have taken effect before
the first of those returned: its return time becomes that one, which prunes the
search without changing the verdict. Unique values per write keep the search small:
an unknown write nobody saw can only be followed by refusals and other unknowns.

Manifests. PutManifest with a tag is an unconditional write of the tag. DeleteManifest
of a digest deletes the manifest and, in the same command, every tag pointing at it
(storage/registry.py, delete_manifest); it is refused with NOT_FOUND when the manifest
is not there. The workload keeps this a one-register operation: every write writes a
digest nobody wrote before, to one tag, so only that tag can ever point at it, and it
deletes a digest only once it saw it on a tag (so the manifest was stored) and only
once over the whole run (so nothing else deleted it). Then a DeleteManifest is, on
that tag's register: the tag loses the digest if it points at it (the answer lists the
tag), is left alone otherwise (the answer lists none), and is never refused.

Listings. ListTags reads the whole set of tags of a repository. The checker reads it
as one observation per tag register of that repository ("this tag exists", or "it
does not"), each of which must fit into that register's linearization within the
listing's interval. That is sound (a linearizable history passes: project its
linearization) and it catches what a stale or half-applied state would show: a tag
created before the listing was called and missing from it, a tag deleted before and
still listed, a tag that never existed, two listings that disagree on an order. It
does not prove that one instant fits every tag of one listing at once: that needs the
repository's tag set as one register, whose search over every tag's operations
together costs far more (test_linearizability.py keeps an example it accepts). A
listing is read in one LMDB read transaction (storage/registry.py), so one that mixes
two instants is the unlikely failure; one read at a stale instant is the likely one,
and the projections catch it.
"""

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field, replace

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
    WRITES,
    Operation,
)

State = str | None  # the digest a tag points at, or None when the tag does not exist
# A digest written but never observed (see _with_unseen_values_merged); no digest.
UNSEEN_VALUE = "<never observed>"


def step(state: State, op: Operation) -> tuple[bool, State]:
    """The register model: is `op` with its outcome possible in `state`, and what follows."""
    if op.kind == GET:
        # Unknown reads never reach the checker (check() drops them: no effect).
        return op.result == state, state
    if op.kind == LIST:
        # One tag's part of a listing (check() projects each listing onto every tag).
        listed = _tag_of(op.key) in (op.tags or [])
        return listed == (state is not None), state
    if op.kind == PUT_MANIFEST:
        # Unconditional; nothing refuses it here (blobs linked, tags mutable).
        return op.outcome != FAIL, op.value
    if op.kind == DELETE_MANIFEST:
        lost = op.value if state == op.value else None
        following = None if lost else state
        if op.outcome == OK:
            return op.result == lost, following
        # Never refused: the manifest exists until this, its only deletion (see above).
        return op.outcome != FAIL, following
    if op.kind == PUT:
        if op.must_not_exist:
            allowed = state is None
        elif op.expected is not None:
            allowed = state == op.expected
        else:
            allowed = True
        if op.outcome == OK:
            return allowed and op.result == state, op.value
        if op.outcome == FAIL:
            return op.error == "FAILED_PRECONDITION" and not allowed, state
        return True, op.value if allowed else state
    if op.kind == DELETE:
        if state is None:
            refusal = "NOT_FOUND"
        elif op.expected is not None and state != op.expected:
            refusal = "FAILED_PRECONDITION"
        else:
            refusal = ""
        if op.outcome == OK:
            return not refusal and op.result == state, None
        if op.outcome == FAIL:
            return op.error == refusal != "", state
        return True, state if refusal else None
    raise ValueError(f"unknown operation kind {op.kind!r}")


@dataclass
class Verdict:
    linearizable: bool
    # Per key that failed: the operations no linearization could place (the longest
    # partial linearization found leaves these out), earliest return first.
    unplaced: dict[str, list[Operation]] = field(default_factory=dict)
    operations: int = 0

    def explain(self, limit: int = 8) -> str:
        lines = []
        for key, operations in self.unplaced.items():
            lines.append(f"key {key}: {len(operations)} operations cannot be placed, first:")
            lines += ["  " + op.describe() for op in operations[:limit]]
        return "\n".join(lines)


def check(history: list[Operation], initial: State = None) -> Verdict:
    """Is the history linearizable, every key starting in `initial`?"""
    by_key: dict[str, list[Operation]] = defaultdict(list)
    listings = []
    for op in history:
        if op.kind in (GET, LIST) and op.outcome == UNKNOWN:
            continue  # a read that did not answer changed nothing and observed nothing
        if op.kind == LIST:
            listings.append(op)
        else:
            by_key[op.key].append(op)
    # Every listing of a repository is projected onto every tag written or listed.
    tags_of: dict[str, set[str]] = defaultdict(set)
    for key in by_key:
        tags_of[_repository_of(key)].add(_tag_of(key))
    for listing in listings:
        tags_of[listing.key] |= set(listing.tags or [])
    for listing in listings:
        for tag in sorted(tags_of[listing.key]):
            by_key[f"{listing.key}:{tag}"].append(replace(listing, key=f"{listing.key}:{tag}"))
    verdict = Verdict(True, operations=sum(map(len, by_key.values())))
    for key, operations in sorted(by_key.items()):
        unplaced = check_register(operations, initial)
        if unplaced:
            verdict.linearizable = False
            verdict.unplaced[key] = unplaced
    return verdict


def _repository_of(key: str) -> str:
    return key.partition(":")[0]


def _tag_of(key: str) -> str:
    """The tag of a "repository:tag" key (tags cannot contain a colon)."""
    return key.partition(":")[2]


def _return_times(operations: list[Operation]) -> list[float]:
    """Return times for the search: unknown ones bounded by the first sight of their value."""
    writers: dict[str, int] = defaultdict(int)
    for op in operations:
        if op.kind in WRITES:
            writers[op.value] += 1
    first_seen: dict[str, float] = {}
    for op in operations:
        if op.outcome == OK and op.result is not None:
            first_seen[op.result] = min(op.ret, first_seen.get(op.result, math.inf))
    times = []
    for op in operations:
        if op.outcome != UNKNOWN:
            times.append(op.ret)
        elif op.kind in WRITES and writers[op.value] == 1:
            times.append(max(op.call, first_seen.get(op.value, math.inf)))
        else:
            times.append(math.inf)
    return times


def _with_unseen_values_merged(operations: list[Operation]) -> list[Operation]:
    """The operations as the model sees them: a written value that no operation ever
    compares the state with (no result, expected digest or deleted manifest is it)
    becomes UNSEEN. The model cannot tell two such values apart, and with one name
    for all of them the cache sees that states holding either are the same."""
    observed = {op.result for op in operations} | {op.expected for op in operations}
    observed |= {op.value for op in operations if op.kind == DELETE_MANIFEST}
    return [
        replace(op, value=UNSEEN_VALUE) if op.kind in WRITES and op.value not in observed else op
        for op in operations
    ]


def check_register(operations: list[Operation], initial: State = None) -> list[Operation]:
    """Search for a linearization of one register's history.

    Returns [] when there is one; otherwise the operations left out of the longest
    partial linearization found, in return order (the first is usually the culprit).
    """
    count = len(operations)
    if not count:
        return []
    returns = _return_times(operations)
    model = _with_unseen_values_merged(operations)
    events = []
    for index, (op, ret) in enumerate(zip(operations, returns, strict=True)):
        events.append((op.call, 0, index))
        events.append((ret, 1, index))
    events.sort()
    # Nodes 0 .. 2*count-1 are events in time order; node `head` is the sentinel.
    head = 2 * count
    nil = -1
    nxt = [nil] * (head + 1)
    prv = [nil] * (head + 1)
    op_of = [0] * head
    is_call = [False] * head
    match = [nil] * head
    call_node = {}
    for node, (_, kind, index) in enumerate(events):
        op_of[node] = index
        is_call[node] = kind == 0
        if kind == 0:
            call_node[index] = node
        else:
            match[call_node[index]] = node
    order = [head, *range(head)]
    for a, b in itertools.pairwise(order):
        nxt[a], prv[b] = b, a

    def lift(node: int) -> None:
        for n in (node, match[node]):
            nxt[prv[n]] = nxt[n]
            if nxt[n] != nil:
                prv[nxt[n]] = prv[n]

    def unlift(node: int) -> None:
        for n in (match[node], node):
            nxt[prv[n]] = n
            if nxt[n] != nil:
                prv[nxt[n]] = n

    # Operations that may stay unlinearized to the end (unknown, never seen). Having one
    # of them still unplaced is never worse than having placed it, so a configuration
    # is pruned when one with the same placed definite operations, the same state and
    # a subset of its placed unknown ones was explored: porcupine's cache, made to see
    # that placing an unknown write and then an unknown delete changed nothing.
    open_ended = sum(1 << i for i, ret in enumerate(returns) if math.isinf(ret))
    definite = ~open_ended
    # Done once every other operation is placed: the open-ended ones may come after
    # everything, where they change nothing anyone saw.
    everything_definite = ((1 << count) - 1) & definite
    unknown = [op.outcome == UNKNOWN for op in operations]
    # Open-ended operations alike in everything the model reads (unknown deletes of
    # one tag, unknown pushes of values nobody saw) are interchangeable once called:
    # each stays placeable to the end, so placing one rather than another changes
    # nothing. Only the first is tried: tens of them (a full disk) would otherwise
    # make the search exponential.
    twins = [
        (op.kind, op.value, op.expected, op.must_not_exist) if math.isinf(ret) else None
        for op, ret in zip(model, returns, strict=True)
    ]

    def options() -> list[int]:
        """The calls before the first return: what may be linearized next. Known
        outcomes first: an unknown write is tried only when they cannot go on."""
        known, maybe = [], []
        tried = set()
        node = nxt[head]
        while node != nil and is_call[node]:
            index = op_of[node]
            if not unknown[index]:
                known.append(node)
            elif twins[index] is None or twins[index] not in tried:
                tried.add(twins[index])
                maybe.append(node)
            node = nxt[node]
        return known + maybe

    state: State = initial
    linearized = 0
    best = 0
    cache: dict[tuple[int, State], list[int]] = defaultdict(list)
    stack: list[tuple[list[int], int, State, int, int]] = []
    choices, position = options(), 0
    while linearized & everything_definite != everything_definite:
        while position < len(choices):
            node = choices[position]
            position += 1
            index = op_of[node]
            allowed, following = step(state, model[index])
            if not allowed:
                continue
            candidate = linearized | (1 << index)
            seen = cache[(candidate & definite, following)]
            placed = candidate & open_ended
            if seen and (placed in seen or any(earlier & ~placed == 0 for earlier in seen)):
                continue
            seen.append(placed)
            stack.append((choices, position, state, linearized, node))
            state, linearized = following, candidate
            if linearized.bit_count() > best.bit_count():
                best = linearized
            lift(node)
            choices, position = options(), 0
            break
        else:
            if not stack:
                left = [op for i, op in enumerate(operations) if not best >> i & 1]
                return sorted(left, key=lambda op: (op.ret, op.call))
            choices, position, state, linearized, node = stack.pop()
            unlift(node)
    return []
