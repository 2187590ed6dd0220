"""The access model: users, organizations, teams, grants, repository settings, CheckAccess.

Writes run inside the apply thread's Batch like storage/registry.py: each checks its
preconditions first and refuses by raising NotFound or FailedPrecondition. machine.py
applies every command in a nested transaction, so a cascade (deleting a user, team or
organization also deletes its memberships, grants, and its namespace's grants and
settings) lands whole or not at all, on every replica alike.

Keys (the databases are listed in storage/db.py; SEP never occurs in a name):

    subject   b"u" user | b"t" organization SEP team
    scope     b"r" repository | b"o" organization
    grants          scope SEP subject -> GrantRecord
    grant_index     subject SEP scope -> b""   (what a subject holds: cascades, listing)
    team_members    organization SEP team SEP user, org_owners  organization SEP user,
    user_links      user SEP (b"t" organization SEP team | b"o" organization), their reverse
"""

import functools
from typing import TYPE_CHECKING

import argon2

from regraft.v1 import access_pb2, command_pb2, record_pb2, registry_pb2
from storage import keys, names, registry, versions
from storage.db import Batch, View
from storage.errors import FailedPrecondition, NotFound

if TYPE_CHECKING:
    from storage.registry import Change

pb = access_pb2
Level = access_pb2.AccessLevel
SEP = keys.SEP
_TEAM, _ORG, _USER, _REPO = b"t", b"o", b"u", b"r"
# user_links kind -> the database that holds the forward relation.
_GROUPS = {_TEAM: "team_members", _ORG: "org_owners"}
LEVEL_NAMES = {Level.READ_ONLY: "read-only", Level.READ_WRITE: "read-write", Level.ADMIN: "admin"}
# The level each action needs (names.ACTIONS lists the actions).
REQUIRED = {
    "pull": Level.READ_ONLY,
    "push": Level.READ_WRITE,
    "delete": Level.READ_WRITE,
    "admin": Level.ADMIN,
}
_PASSWORDS = argon2.PasswordHasher()
# Repositories DeleteUser and DeleteOrganization look into (two lookups each) for
# content that a later namesake would own. Part of how machine version 9 applies
# them: changing it needs a new machine version (storage/versions.py).
MAX_REPOSITORIES_EXAMINED = 10_000


def hash_password(password: str, salt: bytes | None) -> str:
    """An argon2id hash of the password, for UserRecord.password_hash."""
    return _PASSWORDS.hash(password, salt=salt)


def _ok() -> command_pb2.Result:
    return command_pb2.Result()


# -- keys ---------------------------------------------------------------------------


def _join(*parts: str) -> bytes:
    return SEP.join(part.encode() for part in parts)


def _subject_key(subject: pb.Subject) -> bytes:
    if subject.WhichOneof("kind") == "team":
        return _TEAM + _join(subject.team.organization, subject.team.name)
    return _USER + subject.user.encode()


def _scope_key(scope: pb.Scope) -> bytes:
    if scope.WhichOneof("kind") == "organization":
        return _ORG + scope.organization.encode()
    return _REPO + scope.repository.encode()


def _subject(key: bytes) -> pb.Subject:
    if key[:1] == _TEAM:
        organization, team = key[1:].decode().split("\0")
        return pb.Subject(team=pb.TeamRef(organization=organization, name=team))
    return pb.Subject(user=key[1:].decode())


def _scope(key: bytes) -> pb.Scope:
    if key[:1] == _ORG:
        return pb.Scope(organization=key[1:].decode())
    return pb.Scope(repository=key[1:].decode())


def _describe(key: bytes) -> str:
    """A subject or scope key in words, for messages."""
    kind = {_USER: "user", _TEAM: "team", _ORG: "organization", _REPO: "repository"}[key[:1]]
    return f"{kind} {key[1:].decode().replace(chr(0), '/')!r}"


# -- existence ----------------------------------------------------------------------


def get_user(view: View, name: str) -> record_pb2.UserRecord:
    raw = view.get("users", name.encode())
    if raw is None:
        raise NotFound("USER_UNKNOWN", f"user {name!r} does not exist")
    return record_pb2.UserRecord.FromString(raw)


def get_organization(view: View, name: str) -> record_pb2.OrganizationRecord:
    raw = view.get("orgs", name.encode())
    if raw is None:
        raise NotFound("ORGANIZATION_UNKNOWN", f"organization {name!r} does not exist")
    return record_pb2.OrganizationRecord.FromString(raw)


def get_team(view: View, organization: str, name: str) -> record_pb2.TeamRecord:
    get_organization(view, organization)
    raw = view.get("teams", _join(organization, name))
    if raw is None:
        raise NotFound(
            "TEAM_UNKNOWN", f"team {name!r} does not exist in organization {organization!r}"
        )
    return record_pb2.TeamRecord.FromString(raw)


def _refuse_taken(view: View, name: str) -> None:
    """Users and organizations are namespaces: one name, one owner."""
    for db, kind in (("users", "user"), ("orgs", "organization")):
        if view.get(db, name.encode()) is not None:
            raise FailedPrecondition(
                "NAME_TAKEN",
                f"{kind} {name!r} already exists (users and organizations share one namespace)",
            )


def _require_namespace(view: View, repository: str) -> None:
    namespace = names.namespace(repository)
    key = namespace.encode()
    if view.get("users", key) is None and view.get("orgs", key) is None:
        raise NotFound(
            "NAMESPACE_UNKNOWN",
            f"repository {repository!r} is in namespace {namespace!r}, "
            "which is neither a user nor an organization",
        )


def _existing_subject(view: View, subject: pb.Subject) -> bytes:
    """The subject's key; NotFound unless the user or team exists."""
    if subject.WhichOneof("kind") == "team":
        get_team(view, subject.team.organization, subject.team.name)
    else:
        get_user(view, subject.user)
    return _subject_key(subject)


def _existing_scope(view: View, scope: pb.Scope) -> bytes:
    """The scope's key; NotFound unless the organization or the repository's namespace exists."""
    if scope.WhichOneof("kind") == "organization":
        get_organization(view, scope.organization)
    else:
        _require_namespace(view, scope.repository)
    return _scope_key(scope)


# -- users, organizations, teams ----------------------------------------------------


def put_user(change: "Change", op: command_pb2.PutUserOp) -> command_pb2.Result:
    batch = change.batch
    if op.create:
        _refuse_taken(batch, op.name)
        record = record_pb2.UserRecord(active=True)
    else:
        record = get_user(batch, op.name)
    changed = []
    for field in ("active", "admin", "password_hash"):
        if op.HasField(field):
            setattr(record, field, getattr(op, field))
            changed.append(_user_change(field, getattr(op, field)))
    record.revision = change.revision
    batch.put("users", op.name.encode(), record.SerializeToString())
    target = _describe(_USER + op.name.encode())
    _audit(change, "CreateUser" if op.create else "UpdateUser", target, *changed)
    return _ok()


def _user_change(field: str, value: bool | str) -> str:
    """One changed field of a user, in words; never the password hash itself."""
    if field == "password_hash":
        return "password set" if value else "password removed"
    return f"{field}: {'yes' if value else 'no'}"


def _audit(change: "Change", operation: str, target: str, *details: str, repository=""):
    """The audit event of an Access write (Watch's ACCESS_CHANGE)."""
    if details:
        target = f"{target}: {', '.join(details)}"
    change.record(registry_pb2.ACCESS_CHANGE, operation, target, repository)


def put_organization(change: "Change", op: command_pb2.PutOrganizationOp) -> command_pb2.Result:
    batch = change.batch
    if op.create:
        _refuse_taken(batch, op.name)
    else:
        get_organization(batch, op.name)
    record = record_pb2.OrganizationRecord(description=op.description, revision=change.revision)
    batch.put("orgs", op.name.encode(), record.SerializeToString())
    operation = "CreateOrganization" if op.create else "UpdateOrganization"
    _audit(change, operation, _describe(_ORG + op.name.encode()))
    return _ok()


def put_team(change: "Change", op: command_pb2.PutTeamOp) -> command_pb2.Result:
    batch = change.batch
    key = _join(op.organization, op.name)
    if op.create:
        get_organization(batch, op.organization)
        if batch.get("teams", key) is not None:
            raise FailedPrecondition(
                "NAME_TAKEN",
                f"team {op.name!r} already exists in organization {op.organization!r}",
            )
    else:
        get_team(batch, op.organization, op.name)
    record = record_pb2.TeamRecord(description=op.description, revision=change.revision)
    batch.put("teams", key, record.SerializeToString())
    _audit(change, "CreateTeam" if op.create else "UpdateTeam", _describe(_TEAM + key))
    return _ok()


def delete_user(change: "Change", op: command_pb2.DeleteUserOp) -> command_pb2.Result:
    """The user, its memberships, ownerships and grants, and its namespace's access."""
    batch = change.batch
    get_user(batch, op.name)
    _refuse_namespace_with_content(batch, "user", op.name)
    _audit(change, "DeleteUser", _describe(_USER + op.name.encode()))
    prefix = op.name.encode() + SEP
    for key, _ in list(batch.scan("user_links", prefix)):
        link = key[len(prefix) :]
        batch.delete(_GROUPS[link[:1]], link[1:] + SEP + op.name.encode())
        batch.delete("user_links", key)
    _drop_grants_of(change, "DeleteUser", _USER + op.name.encode())
    _drop_namespace(change, "DeleteUser", op.name)
    batch.delete("users", op.name.encode())
    return _ok()


def delete_team(change: "Change", op: command_pb2.DeleteTeamOp) -> command_pb2.Result:
    """The team, its memberships and its grants."""
    get_team(change.batch, op.organization, op.name)
    team = _join(op.organization, op.name)
    _audit(change, "DeleteTeam", _describe(_TEAM + team))
    _drop_team(change, "DeleteTeam", team)
    return _ok()


def delete_organization(
    change: "Change", op: command_pb2.DeleteOrganizationOp
) -> command_pb2.Result:
    """The organization, its teams, owners and grants, and its namespace's access."""
    batch = change.batch
    get_organization(batch, op.name)
    _refuse_namespace_with_content(batch, "organization", op.name)
    name = op.name.encode()
    _audit(change, "DeleteOrganization", _describe(_ORG + name))
    for key, _ in list(batch.scan("teams", name + SEP)):
        _drop_team(change, "DeleteOrganization", key)
    _drop_group(batch, _ORG, name)
    _drop_grants_on(change, "DeleteOrganization", _ORG + name + SEP)
    _drop_namespace(change, "DeleteOrganization", op.name)
    batch.delete("orgs", name)
    return _ok()


def _refuse_namespace_with_content(batch: Batch, kind: str, name: str) -> None:
    """A user or organization whose repositories hold manifests or blobs is not deleted:
    a later namesake would own them (ADMIN in its own namespace)."""
    if batch.machine_version < versions.NAMESPACE_CONTENT:
        return
    found, unexamined = registry.holding_content(batch, name, MAX_REPOSITORIES_EXAMINED)
    if found:
        raise FailedPrecondition(
            "DENIED",
            f"{kind} {name!r} still has repositories with manifests or blobs "
            f"({', '.join(map(repr, found))}): a later "
            f"{kind} or user named {name!r} would own them; delete their manifests and "
            "unlink their blobs first",
        )
    if unexamined:
        raise FailedPrecondition(
            "DENIED",
            f"{kind} {name!r} has more than {MAX_REPOSITORIES_EXAMINED} repositories, more "
            "than one command can check for content (repositories are never deleted, "
            "only emptied): it cannot be deleted",
        )


def _drop_team(change: "Change", cause: str, team: bytes) -> None:
    _drop_group(change.batch, _TEAM, team)
    _drop_grants_of(change, cause, _TEAM + team)
    change.batch.delete("teams", team)


def _drop_group(batch: Batch, kind: bytes, group: bytes) -> None:
    """Every member of a team or owner of an organization, in both directions."""
    prefix = group + SEP
    for key, _ in list(batch.scan(_GROUPS[kind], prefix)):
        batch.delete(_GROUPS[kind], key)
        batch.delete("user_links", key[len(prefix) :] + SEP + kind + group)


def _drop_grants_of(change: "Change", cause: str, subject: bytes) -> None:
    prefix = subject + SEP
    for key, _ in list(change.batch.scan("grant_index", prefix)):
        change.batch.delete("grant_index", key)
        _drop_grant(change, cause, key[len(prefix) :], subject)


def _drop_grants_on(change: "Change", cause: str, prefix: bytes) -> None:
    """Every grant whose scope key + SEP starts with prefix."""
    for key, _ in list(change.batch.scan("grants", prefix)):
        scope, subject = key.split(SEP, 1)
        change.batch.delete("grant_index", subject + SEP + scope)
        _drop_grant(change, cause, scope, subject)


def _drop_grant(change: "Change", cause: str, scope: bytes, subject: bytes) -> None:
    """One grant removed by a cascade: an event of its own, so that a Watch of the
    repository's events sees its access change."""
    change.batch.delete("grants", scope + SEP + subject)
    repository = scope[1:].decode() if scope[:1] == _REPO else ""
    target = f"{_describe(subject)} on {_describe(scope)}"
    _audit(change, cause, target, "grant removed", repository=repository)


def _drop_namespace(change: "Change", cause: str, namespace: str) -> None:
    """Grants on and settings of the namespace's repositories: a later user or
    organization of the same name must not inherit them."""
    name = namespace.encode()
    _drop_grants_on(change, cause, _REPO + name + SEP)
    _drop_grants_on(change, cause, _REPO + name + b"/")
    settings = [name] if change.batch.get("repo_settings", name) is not None else []
    settings += [key for key, _ in change.batch.scan("repo_settings", name + b"/")]
    for key in settings:
        change.batch.delete("repo_settings", key)
        repository = key.decode()
        target = _describe(_REPO + key)
        _audit(change, cause, target, "settings removed", repository=repository)


# -- memberships --------------------------------------------------------------------


def set_team_member(change: "Change", op: command_pb2.SetTeamMemberOp) -> command_pb2.Result:
    get_team(change.batch, op.organization, op.team)
    team = _join(op.organization, op.team)
    _set_link(change.batch, _TEAM, team, op.user, op.member)
    operation = "AddTeamMember" if op.member else "RemoveTeamMember"
    _audit(change, operation, _describe(_TEAM + team), _describe(_USER + op.user.encode()))
    return _ok()


def set_organization_owner(
    change: "Change", op: command_pb2.SetOrganizationOwnerOp
) -> command_pb2.Result:
    get_organization(change.batch, op.organization)
    organization = op.organization.encode()
    _set_link(change.batch, _ORG, organization, op.user, op.owner)
    operation = "AddOrganizationOwner" if op.owner else "RemoveOrganizationOwner"
    _audit(change, operation, _describe(_ORG + organization), _describe(_USER + op.user.encode()))
    return _ok()


def _set_link(batch: Batch, kind: bytes, group: bytes, user: str, present: bool) -> None:
    get_user(batch, user)
    key = group + SEP + user.encode()
    reverse = user.encode() + SEP + kind + group
    if present:
        batch.put(_GROUPS[kind], key, b"")
        batch.put("user_links", reverse, b"")
    elif batch.delete(_GROUPS[kind], key):
        batch.delete("user_links", reverse)
    else:
        role = "a member of" if kind == _TEAM else "an owner of"
        raise NotFound("NOT_A_MEMBER", f"user {user!r} is not {role} {_describe(kind + group)}")


# -- grants and settings ------------------------------------------------------------


def set_grant(change: "Change", op: command_pb2.SetGrantOp) -> command_pb2.Result:
    """Create, change or (level unspecified) remove one grant."""
    batch = change.batch
    subject = _existing_subject(batch, op.subject)
    scope = _existing_scope(batch, op.scope)
    if subject[:1] == _TEAM:
        organization = op.subject.team.organization
        inside = (
            op.scope.organization
            if op.scope.WhichOneof("kind") == "organization"
            else names.namespace(op.scope.repository)
        )
        if inside != organization:
            raise FailedPrecondition(
                "SCOPE_MISMATCH",
                f"{_describe(subject)} may only be given access inside organization "
                f"{organization!r}, not on {_describe(scope)}",
            )
    key = scope + SEP + subject
    target = f"{_describe(subject)} on {_describe(scope)}"
    repository = op.scope.repository
    if op.level == Level.ACCESS_LEVEL_UNSPECIFIED:
        if not batch.delete("grants", key):
            raise NotFound(
                "GRANT_UNKNOWN", f"{_describe(subject)} has no grant on {_describe(scope)}"
            )
        batch.delete("grant_index", subject + SEP + scope)
        _audit(change, "DeleteGrant", target, repository=repository)
        return _ok()
    record = record_pb2.GrantRecord(level=op.level, revision=change.revision)
    batch.put("grants", key, record.SerializeToString())
    batch.put("grant_index", subject + SEP + scope, b"")
    level = LEVEL_NAMES.get(op.level, f"level {op.level}")
    _audit(change, "SetGrant", target, level, repository=repository)
    return _ok()


def set_repository_settings(
    change: "Change", op: command_pb2.SetRepositorySettingsOp
) -> command_pb2.Result:
    _require_namespace(change.batch, op.repository)
    record = record_pb2.RepositorySettingsRecord(settings=op.settings, revision=change.revision)
    change.batch.put("repo_settings", op.repository.encode(), record.SerializeToString())
    settings = op.settings
    _audit(
        change,
        "SetRepositorySettings",
        _describe(_REPO + op.repository.encode()),
        pb.Visibility.Name(settings.visibility).lower(),
        f"immutable tags: {'yes' if settings.immutable_tags else 'no'}",
        f"create on push: {'yes' if settings.create_on_push else 'no'}",
        repository=op.repository,
    )
    return _ok()


# -- reads --------------------------------------------------------------------------


def user_message(view: View, name: str) -> pb.User:
    record = get_user(view, name)
    return pb.User(
        name=name, active=record.active, admin=record.admin, has_password=bool(record.password_hash)
    )


def list_users(view: View, n: int, last: str) -> tuple[list[pb.User], bool]:
    found, more = registry.page(view.scan("users", b"", last.encode()), n, bytes.decode)
    return [user_message(view, name) for name in found], more


def password_hash_of(view: View, name: str) -> str:
    """The hash a password is checked against: empty when the user is unknown, inactive
    or has no password (verify_password then says no, after the same work)."""
    raw = view.get("users", name.encode())
    if raw is None:
        return ""
    record = record_pb2.UserRecord.FromString(raw)
    return record.password_hash if record.active else ""


@functools.cache
def no_such_user_hash() -> str:
    """The dummy hash unknown users are checked against; computed once (at start-up,
    by the Access service, so that even the first check costs the same)."""
    return hash_password("regraft: no password here", salt=b"regraft-no-salt!")


def verify_password(password_hash: str, password: str) -> bool:
    """Whether the password matches the hash (argon2id, about 64 MiB and tens of ms).

    Without a hash it verifies against a dummy one, so that neither the answer nor its
    time tells a caller whether the user exists. Not under a read transaction: that
    would pin LMDB pages for the length of the hashing.
    """
    try:
        matched = _PASSWORDS.verify(password_hash or no_such_user_hash(), password)
        return matched and bool(password_hash)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


def organization_message(view: View, name: str) -> pb.Organization:
    return pb.Organization(name=name, description=get_organization(view, name).description)


def list_organizations(view: View, n: int, last: str) -> tuple[list[pb.Organization], bool]:
    found, more = registry.page(view.scan("orgs", b"", last.encode()), n, bytes.decode)
    return [organization_message(view, name) for name in found], more


def team_message(view: View, organization: str, name: str) -> pb.Team:
    record = get_team(view, organization, name)
    return pb.Team(organization=organization, name=name, description=record.description)


def list_teams(view: View, organization: str, n: int, last: str) -> tuple[list[pb.Team], bool]:
    get_organization(view, organization)
    prefix = organization.encode() + SEP
    found, more = registry.page(
        view.scan("teams", prefix, last.encode()), n, lambda k: k[len(prefix) :].decode()
    )
    return [team_message(view, organization, name) for name in found], more


def list_team_members(
    view: View, organization: str, team: str, n: int, last: str
) -> tuple[list[str], bool]:
    get_team(view, organization, team)
    return _list_group(view, _TEAM, _join(organization, team), n, last)


def list_organization_owners(
    view: View, organization: str, n: int, last: str
) -> tuple[list[str], bool]:
    get_organization(view, organization)
    return _list_group(view, _ORG, organization.encode(), n, last)


def _list_group(view: View, kind: bytes, group: bytes, n: int, last: str) -> tuple[list[str], bool]:
    prefix = group + SEP
    records = view.scan(_GROUPS[kind], prefix, last.encode())
    return registry.page(records, n, lambda k: k[len(prefix) :].decode())


def list_grants(
    view: View, target: pb.Scope | pb.Subject, n: int, last: pb.Grant | None
) -> tuple[list[pb.Grant], bool]:
    """The grants on a scope (in subject order) or of a subject (in scope order)."""
    if isinstance(target, pb.Scope):
        scope = _existing_scope(view, target)
        after = _subject_key(last.subject) if last else b""
        records = view.scan("grants", scope + SEP, after)
        pairs, more = registry.page(records, n, lambda k: (scope, k[len(scope) + 1 :]))
    else:
        subject = _existing_subject(view, target)
        after = _scope_key(last.scope) if last else b""
        records = view.scan("grant_index", subject + SEP, after)
        pairs, more = registry.page(records, n, lambda k: (k[len(subject) + 1 :], subject))
    grants = []
    for scope, subject in pairs:
        record = record_pb2.GrantRecord.FromString(view.get("grants", scope + SEP + subject))
        grants.append(pb.Grant(scope=_scope(scope), subject=_subject(subject), level=record.level))
    return grants, more


# -- CheckAccess --------------------------------------------------------------------


def effective_level(view: View, user: str, repository: str) -> tuple[int, str]:
    """The highest level the rules give `user` ("": anonymous) on a repository, and why.

    Rules: an inactive user gets nothing; a system admin, the user whose namespace the
    repository is in, and an owner of its organization get ADMIN; otherwise the highest
    of the user's grants and its teams' grants, on the repository or its organization;
    and anyone gets at least READ_ONLY on a public repository.
    """
    none = Level.ACCESS_LEVEL_UNSPECIFIED
    if registry.settings(view, repository).visibility == pb.PUBLIC:
        best = (Level.READ_ONLY, f"repository {repository!r} is public")
    elif user:
        best = (none, f"no grant gives user {user!r} access")
    else:
        best = (none, "anonymous callers may pull public repositories only")
    if not user:
        return best
    record = get_user(view, user)
    namespace = names.namespace(repository)
    if not record.active:
        return none, f"user {user!r} is inactive"
    if record.admin:
        return Level.ADMIN, f"user {user!r} is a system admin"
    if namespace == user:
        return Level.ADMIN, f"repository {repository!r} is in user {user!r}'s own namespace"
    if view.get("org_owners", _join(namespace, user)) is not None:
        return Level.ADMIN, f"user {user!r} owns organization {namespace!r}"
    links = user.encode() + SEP
    teams = view.scan("user_links", links + _TEAM + namespace.encode() + SEP)
    subjects = [_USER + user.encode()] + [key[len(links) :] for key, _ in teams]
    for subject in subjects:
        for scope in (_REPO + repository.encode(), _ORG + namespace.encode()):
            raw = view.get("grants", scope + SEP + subject)
            level = record_pb2.GrantRecord.FromString(raw).level if raw else 0
            if level > best[0]:
                best = (
                    level,
                    f"{LEVEL_NAMES[level]} on {_describe(scope)} granted to {_describe(subject)}",
                )
    return best


def check_access(
    view: View, user: str, repository: str, actions: list[str]
) -> tuple[int, list[pb.AccessDecision]]:
    """The user's level on the repository and a decision, with its reason, per action.

    With create_on_push off, a push that would create the repository (it has no
    manifest or blob yet) needs ADMIN rather than READ_WRITE.
    """
    level, why = effective_level(view, user, repository)
    guarded = not registry.settings(view, repository).create_on_push
    creating = guarded and not registry.exists(view, repository)
    decisions = []
    for action in actions:
        needed = REQUIRED[action]
        allowed, reason = True, why
        if level < needed:
            allowed, reason = False, f"{action} needs {LEVEL_NAMES[needed]} access: {why}"
        elif action == "push" and creating and level < Level.ADMIN:
            allowed = False
            reason = (
                f"repository {repository!r} does not exist yet and its create_on_push is off: "
                f"only its admins may create it ({why})"
            )
        decisions.append(pb.AccessDecision(action=action, allowed=allowed, reason=reason))
    return level, decisions
