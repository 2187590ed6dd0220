"""Versions of the state machine's apply behaviour.

Every replica must apply every entry the same way, but during a rolling upgrade
replicas run different code. So a change in what apply does is not switched on by
the new code itself: it waits until the cluster's machine version, kept in the state
and raised by a replicated command (SetMachineVersionOp), says so, and the leader
raises it only once every member reports code that supports it (cluster/membership.py).
Code never applies an entry while the version in force is newer than it supports: a
replica refuses to start (cluster/replica.py), or exits before the entry
(cluster/raft.py), since an entry applied the older way would stay so.
A new cluster starts at the version of the code that records its first members.

    1  up to 2026-11-26
    2  Access writes and changes of the cluster (members, retention, this version) are
       Watch events (ACCESS_CHANGE, CLUSTER_CHANGE); age-based event pruning keeps the
       last MIN_EVENT_REVISIONS revisions whatever the entry times say.
    3  Apply unchanged. Every member reads the replicas' batched messages, so they
       may send them (cluster/transport.py).
    4  Apply unchanged. Every member echoes the leader's heartbeat rounds and answers
       requests for a read index, so linearizable reads use them instead of barrier
       entries (cluster/readindex.py).
    5  Apply unchanged. Every member reads sealed peer messages (AES-GCM), so they
       are sent instead of Fernet tokens (cluster/cipher.py).
    6  SetMemberAddressOp: a member's gRPC address can change (each replica publishes
       the address it advertises, cluster/membership.py). Below 6 it is refused as the
       unknown operation older code sees in it.
    7  Apply unchanged. Every member answers PreVote questions, so a replica asks the
       voters before it raises its term to start an election (cluster/prevote.py).
    8  A manifest with a subject stores its descriptor (ReferrerRecord) in the
       referrers index, so that GetReferrers reads no manifest content; entries
       indexed before hold no value, and their manifest is read instead.
       DeleteManifest refuses a manifest with more than 1,000 tags (FAILED_PRECONDITION),
       so that one command's cascade stays bounded.
    9  DeleteUser and DeleteOrganization refuse (FAILED_PRECONDITION) while a repository
       of the namespace holds a manifest or a blob: a later user or organization of the
       same name would own it. They examine at most 10,000 repositories
       (access.MAX_REPOSITORIES_EXAMINED) and refuse a namespace with more.
"""

AUDIT_EVENTS = 2
BATCHED_PEER_MESSAGES = 3
READ_INDEX = 4
SEALED_PEER_MESSAGES = 5
MEMBER_ADDRESSES = 6
PRE_VOTE = 7
REFERRER_RECORDS = 8
BOUNDED_CASCADES = 8
NAMESPACE_CONTENT = 9
# The newest version this code can apply.
LATEST = 9


def too_new(in_force: int, supported: int) -> str:
    """Why a replica whose code supports `supported` must not apply the log any more."""
    return (
        f"the cluster applies machine version {in_force}, newer than this code supports "
        f"({supported}): it would apply entries differently from the other replicas; run "
        "the release the others run"
    )
