"""The access model's operations (storage/access.py) on a real Store: cascades,
immutable tags, validation, refusals, listing, passwords."""

import pytest

from regraft.v1 import access_pb2, command_pb2, registry_pb2
from storage import access, commands, keys, names, registry, versions
from storage.errors import InvalidArgument
from storage.names import compute_digest
from tests.unit.test_storage import Replica, all_events, image, link, put_manifest, put_tag

pb = access_pb2
Result = command_pb2.Result
OK, NOT_FOUND, FAILED = Result.OK, Result.NOT_FOUND, Result.FAILED_PRECONDITION
RO, RW, ADMIN = pb.READ_ONLY, pb.READ_WRITE, pb.ADMIN
ACCESS_DBS = ("users", "orgs", "teams", "team_members", "org_owners", "user_links", "grants",
              "grant_index", "repo_settings")  # fmt: skip


# -- command builders (shared with test_access_model.py) -------------------------------


def user(name: str, admin: bool = False, password: str = "", request_id: str = ""):
    request = pb.CreateUserRequest(name=name, admin=admin, password=password, request_id=request_id)
    return commands.create_user(request)


def update_user(name: str, **fields):
    return commands.update_user(pb.UpdateUserRequest(name=name, **fields))


def org(name: str, description: str = ""):
    return commands.put_organization(
        pb.OrganizationRequest(name=name, description=description), True
    )


def team(organization: str, name: str):
    return commands.put_team(pb.TeamRequest(organization=organization, name=name), True)


def member(organization: str, team_name: str, user_name: str, present: bool = True):
    request = pb.TeamMemberRequest(organization=organization, team=team_name, user=user_name)
    return commands.set_team_member(request, present)


def owner(organization: str, user_name: str, present: bool = True):
    request = pb.OrganizationOwnerRequest(organization=organization, user=user_name)
    return commands.set_organization_owner(request, present)


def on_repo(name: str) -> pb.Scope:
    return pb.Scope(repository=name)


def on_org(name: str) -> pb.Scope:
    return pb.Scope(organization=name)


def to_user(name: str) -> pb.Subject:
    return pb.Subject(user=name)


def to_team(organization: str, name: str) -> pb.Subject:
    return pb.Subject(team=pb.TeamRef(organization=organization, name=name))


def grant(scope: pb.Scope, subject: pb.Subject, level: int):
    return commands.set_grant(
        pb.SetGrantRequest(grant=pb.Grant(scope=scope, subject=subject, level=level))
    )


def revoke(scope: pb.Scope, subject: pb.Subject):
    return commands.delete_grant(pb.DeleteGrantRequest(scope=scope, subject=subject))


def settings(repository: str, visibility=pb.PRIVATE, immutable=False, create_on_push=True):
    value = pb.RepositorySettings(
        visibility=visibility, immutable_tags=immutable, create_on_push=create_on_push
    )
    request = pb.SetRepositorySettingsRequest(repository=repository, settings=value)
    return commands.set_repository_settings(request)


def delete_user(name: str):
    return commands.delete_user(pb.DeleteUserRequest(name=name))


def delete_org(name: str):
    return commands.delete_organization(pb.DeleteOrganizationRequest(name=name))


def delete_team(organization: str, name: str):
    return commands.delete_team(pb.DeleteTeamRequest(organization=organization, name=name))


def dangling(view) -> list[str]:
    """Every relation or grant in LMDB whose other end is missing, or whose index entry
    (the reverse direction) is missing or extra. Empty when the model is consistent."""
    problems = []

    def exists(kind: bytes, name: bytes) -> bool:
        if kind in (b"u", b"o"):
            return view.get("users" if kind == b"u" else "orgs", name) is not None
        if kind == b"t":
            return view.get("teams", name) is not None
        namespace = name.split(b"/")[0]  # b"r": the repository's namespace
        return view.get("users", namespace) is not None or view.get("orgs", namespace) is not None

    grants = {key for key, _ in view.scan("grants", b"")}
    index = {key for key, _ in view.scan("grant_index", b"")}
    for key in grants:
        scope, subject = key.split(keys.SEP, 1)
        for part in (scope, subject):
            if not exists(part[:1], part[1:]):
                problems.append(f"grant {key!r}: {part!r} is missing")
        if subject + keys.SEP + scope not in index:
            problems.append(f"grant {key!r} is not in grant_index")
    for key in index:
        subject, _, scope = key.rpartition(keys.SEP)
        if scope + keys.SEP + subject not in grants:
            problems.append(f"grant_index {key!r} has no grant")
    links = {key for key, _ in view.scan("user_links", b"")}
    for db, kind in (("team_members", b"t"), ("org_owners", b"o")):
        for key, _ in view.scan(db, b""):
            group, _, name = key.rpartition(keys.SEP)
            if not exists(b"u", name) or not exists(kind, group):
                problems.append(f"{db} {key!r}: its user or group is missing")
            if name + keys.SEP + kind + group not in links:
                problems.append(f"{db} {key!r} is not in user_links")
            links.discard(name + keys.SEP + kind + group)
    problems += [f"user_links {key!r} has no forward entry" for key in links]
    for key, _ in view.scan("teams", b""):
        if not exists(b"o", key.split(keys.SEP)[0]):
            problems.append(f"team {key!r} has no organization")
    for key, _ in view.scan("repo_settings", b""):
        if not exists(b"r", key):
            problems.append(f"settings of {key!r} outlive its namespace")
    return problems


def records(view) -> int:
    return sum(view.count(db) for db in ACCESS_DBS)


@pytest.fixture
def replica(tmp_path):
    r = Replica(str(tmp_path / "db"))
    yield r
    r.store.close()


def populate(replica: Replica) -> None:
    """Two organizations with teams, members, owners, and every kind of grant."""
    replica.ok(
        user("alice"), user("bob"), user("carol"),
        org("acme"), org("corp"), team("acme", "dev"), team("acme", "ops"), team("corp", "dev"),
        member("acme", "dev", "alice"), member("acme", "dev", "bob"),
        member("acme", "ops", "bob"), member("corp", "dev", "alice"),
        owner("acme", "carol"), owner("corp", "bob"),
        grant(on_repo("acme/app"), to_team("acme", "dev"), RW),
        grant(on_org("acme"), to_team("acme", "ops"), RO),
        grant(on_repo("corp/lib"), to_team("corp", "dev"), ADMIN),
        grant(on_repo("acme/app"), to_user("bob"), ADMIN),
        grant(on_repo("corp/lib"), to_user("alice"), RO),
        grant(on_org("corp"), to_user("carol"), RW),
        grant(on_repo("alice/tool"), to_user("bob"), RW),
        user("dave"),
        settings("acme/app", pb.PUBLIC), settings("alice/tool"), settings("corp/lib"),
    )  # fmt: skip


def keys_mentioning(view, text: bytes) -> list[tuple[str, bytes]]:
    return [(db, key) for db in ACCESS_DBS for key, _ in view.scan(db, b"") if text in key]


# -- cascades -----------------------------------------------------------------------


def test_deleting_a_team_removes_its_members_and_grants(replica):
    populate(replica)
    replica.ok(delete_team("acme", "dev"))
    with replica.store.read() as view:
        assert dangling(view) == []
        assert keys_mentioning(view, b"acme\0dev") == []
        # Other teams named dev and the users themselves stay.
        assert view.get("teams", b"corp\0dev") is not None
        assert access.get_user(view, "alice").active
        assert access.check_access(view, "alice", "acme/app", ["pull"])[0] == RO  # public
        assert access.check_access(view, "bob", "acme/app", ["admin"])[0] == ADMIN


def test_deleting_a_user_removes_memberships_ownerships_grants_and_namespace(replica):
    populate(replica)
    replica.ok(delete_user("bob"))
    with replica.store.read() as view:
        assert dangling(view) == []
        assert keys_mentioning(view, b"bob") == []
    replica.ok(delete_user("alice"))
    with replica.store.read() as view:
        assert dangling(view) == []
        assert keys_mentioning(view, b"alice") == []
    # A new user of the same name inherits nothing.
    replica.ok(user("bob"))
    with replica.store.read() as view:
        assert access.check_access(view, "bob", "acme/app", ["pull"])[0] == RO  # public
        assert access.list_grants(view, to_user("bob"), 10, None) == ([], False)


def test_deleting_an_organization_removes_everything_of_it(replica):
    populate(replica)
    replica.ok(delete_org("acme"))
    with replica.store.read() as view:
        assert dangling(view) == []
        assert keys_mentioning(view, b"acme") == []
        assert registry.settings(view, "acme/app").visibility == pb.PRIVATE
        assert view.get("org_owners", b"corp\0bob") is not None
    replica.ok(delete_org("corp"), delete_user("alice"), delete_user("bob"), delete_user("carol"),
               delete_user("dave"))  # fmt: skip
    with replica.store.read() as view:
        assert records(view) == 0


def test_a_namespace_whose_repositories_hold_content_is_not_deleted(replica, monkeypatch):
    """A user created with a deleted organization's name owned its private images."""
    replica.ok(commands.set_machine_version(versions.NAMESPACE_CONTENT))
    layer = compute_digest(b"layer")
    unlink = commands.unlink_blob(
        registry_pb2.UnlinkBlobRequest(repository="acme/app", digest=layer)
    )
    replica.ok(org("acme"), user("alice"), link("acme/app", layer), link("alice", layer))
    before = replica.state_hash()
    refused = replica.apply(delete_org("acme"), delete_user("alice"))
    assert [r.code for r in refused] == [FAILED, FAILED] and replica.state_hash() == before
    assert "organization 'acme' still has repositories with manifests or blobs ('acme/app')" in (
        refused[0].message
    )
    assert "('alice')" in refused[1].message  # the repository named as the namespace
    replica.ok(unlink, delete_org("acme"), user("acme"))
    with replica.store.read() as view:
        assert registry.exists(view, "acme/app")  # emptied, never deleted
    # Past the repositories one command examines, refused without looking further.
    monkeypatch.setattr(access, "MAX_REPOSITORIES_EXAMINED", 1)
    replica.ok(link("acme/web", layer))
    replica.ok(
        commands.unlink_blob(registry_pb2.UnlinkBlobRequest(repository="acme/web", digest=layer))
    )
    [over] = replica.apply(delete_user("acme"))
    assert over.code == FAILED and "more than 1 repositories" in over.message


def test_namespaces_with_content_were_deleted_before_machine_version_9(replica):
    replica.ok(commands.set_machine_version(versions.NAMESPACE_CONTENT - 1))
    replica.ok(org("acme"), link("acme/app", compute_digest(b"layer")), delete_org("acme"))


def test_a_refused_command_changes_nothing(replica):
    populate(replica)
    before = replica.state_hash()
    refused = replica.apply(
        user("acme"),  # an organization's name
        org("alice"),  # a user's name
        team("acme", "dev"),  # exists
        team("nope", "dev"),
        member("acme", "nope", "alice"),
        member("acme", "dev", "nobody"),
        member("acme", "ops", "alice", present=False),
        owner("acme", "alice", present=False),
        grant(on_repo("corp/app"), to_team("acme", "dev"), RO),  # outside the team's org
        grant(on_repo("alice/app"), to_team("acme", "dev"), RO),
        grant(on_repo("nobody/app"), to_user("alice"), RO),
        grant(on_org("nope"), to_user("alice"), RO),
        grant(on_repo("acme/app"), to_user("nobody"), RO),
        revoke(on_repo("acme/web"), to_user("alice")),
        settings("library/nginx"),
        delete_user("nobody"), delete_org("nope"), delete_team("acme", "nope"),
        update_user("nobody", admin=True),
    )  # fmt: skip
    codes = [r.code for r in refused]
    assert codes == [FAILED, FAILED, FAILED] + [NOT_FOUND] * 5 + [FAILED, FAILED] + [NOT_FOUND] * 9
    assert replica.state_hash() == before
    messages = [r.message for r in refused]
    assert "acme" in messages[0] and "already exists" in messages[0]
    assert "'acme/dev'" in messages[8] and "'corp/app'" in messages[8]
    assert "'nobody'" in messages[5] and "'nope'" in messages[4]


# -- immutable tags -----------------------------------------------------------------


def test_immutable_tags_cannot_move(replica):
    config = compute_digest(b"config")
    first, second = image(config), image(config, annotations={"v": "2"})
    d1, d2 = compute_digest(first), compute_digest(second)
    replica.ok(org("acme"), link("acme/app", config), put_manifest("acme/app", "v1", first))
    replica.ok(settings("acme/app", immutable=True))
    before = replica.state_hash()
    moved, pushed = replica.apply(
        put_tag("acme/app", "v1", d1[:-1] + "0"), put_manifest("acme/app", "v1", second)
    )
    assert moved.code == NOT_FOUND  # the usual checks come first
    assert pushed.code == FAILED and pushed.oci_code == "DENIED"
    assert replica.state_hash() == before  # not even the second manifest was stored
    replica.ok(put_manifest("acme/app", d2, second))
    for result in replica.apply(
        put_tag("acme/app", "v1", d2), put_manifest("acme/app", "v1", second)
    ):
        assert result.code == FAILED and result.oci_code == "DENIED"
        assert "'v1'" in result.message and "'acme/app'" in result.message
        assert d1 in result.message and d2 in result.message
    # Setting a tag to where it points, and new tags, are fine.
    replica.ok(
        put_manifest("acme/app", "v1", first),
        put_tag("acme/app", "v1", d1),
        put_manifest("acme/app", "v2", second),
    )
    # Deleting a tag (then pushing it again) would move it too: refused.
    before = replica.state_hash()
    untag = commands.delete_tag(registry_pb2.DeleteTagRequest(repository="acme/app", tag="v1"))
    unpush = commands.delete_manifest(
        registry_pb2.DeleteManifestRequest(repository="acme/app", digest=d2)
    )
    for result in replica.apply(untag, unpush):
        assert result.code == FAILED and result.oci_code == "DENIED"
        assert "'acme/app'" in result.message and "immutable" in result.message
    assert replica.state_hash() == before
    replica.ok(settings("acme/app", immutable=False), put_tag("acme/app", "v1", d2))
    replica.ok(untag)


# -- validation ---------------------------------------------------------------------

BAD_NAMES = ["", "a", "A1", "ab/c", "-ab", "ab-", "a" * 64, "ab\x00c", "ab\n", "ab c", "ab:c",
             "é1"]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_names_are_refused_naming_field_and_value(bad):
    cases = [
        (lambda: user(bad), "name"),
        (lambda: org(bad), "name"),
        (lambda: team(bad, "dev"), "organization"),
        (lambda: team("acme", bad), "name"),
        (lambda: member("acme", "dev", bad), "user"),
        (lambda: grant(on_repo("acme/app"), to_team("acme", bad), RO), "grant.subject.team.name"),
        (lambda: grant(on_org(bad), to_user("alice"), RO), "grant.scope.organization"),
    ]
    for make, field in cases:
        with pytest.raises(InvalidArgument) as caught:
            make()
        assert caught.value.field == field
        assert repr(bad) in str(caught.value)


def test_other_bad_input_is_refused():
    good = [user("ab"), user("a" * 63), org("a.b_c__d--e"), user("0x")]
    assert all(command.WhichOneof("op") for command in good)
    assert set(access.REQUIRED) == set(names.ACTIONS)
    assert names.validate_actions(("push", "pull")) == ["push", "pull"]
    for actions, named in [
        (["pull", "*"], "'*'"),
        (["pull"] * 690_000, "690000 actions named"),  # each would be answered
        (["pull", "push", "delete", "admin", "pull"], "5 actions named"),
        (["push", "push"], "named twice: push, push"),
    ]:
        with pytest.raises(InvalidArgument) as caught:
            names.validate_actions(actions)
        assert caught.value.field == "actions" and named in str(caught.value)
    for make, field in [
        (lambda: grant(on_repo("acme/app"), to_user("alice"), 0), "grant.level"),
        (lambda: grant(on_repo("acme/app"), to_user("alice"), 9), "grant.level"),
        (lambda: grant(pb.Scope(), to_user("alice"), RO), "grant.scope"),
        (lambda: grant(on_repo("Acme"), to_user("alice"), RO), "grant.scope.repository"),
        (lambda: revoke(on_repo("acme/app"), pb.Subject()), "subject"),
        (lambda: settings("acme/app", visibility=7), "settings.visibility"),
        (lambda: settings("acme//app"), "repository"),
        (lambda: org("acme", "a\x07bell"), "description"),
        (lambda: org("acme", "x" * 256), "description"),
    ]:
        with pytest.raises(InvalidArgument) as caught:
            make()
        assert caught.value.field == field


def test_passwords_are_hashed_and_never_shown(replica):
    secret = "correct horse"
    with pytest.raises(InvalidArgument) as caught:
        user("alice", password="short!")
    assert caught.value.field == "password" and "short!" not in str(caught.value)
    command = user("alice", password=secret, request_id="create-alice")
    assert secret not in str(command) and command.put_user.password_hash.startswith("$argon2id$")
    # A retry under the same request id is the same command: not refused as a different one.
    assert user("alice", password=secret, request_id="create-alice") == command
    assert user("alice", password=secret) != user("alice", password=secret)
    replica.ok(command, command, user("bob"))

    def verify(name: str, password: str) -> bool:
        with replica.store.read() as view:
            stored = access.password_hash_of(view, name)
        return access.verify_password(stored, password)

    assert verify("alice", secret)
    assert not verify("alice", secret + "!")
    assert not verify("bob", "")  # no password set
    # An unknown user is not an error: the same "no" as a wrong password.
    assert not verify("nobody", secret)
    assert not access.verify_password("not a hash", secret)
    with replica.store.read() as view:
        assert access.user_message(view, "alice").has_password
    replica.ok(update_user("alice", active=False))
    assert not verify("alice", secret)
    replica.ok(update_user("alice", active=True, password=""))
    with replica.store.read() as view:
        assert access.user_message(view, "alice") == pb.User(name="alice", active=True)


# -- reads --------------------------------------------------------------------------


def test_listing_pages(replica):
    populate(replica)
    with replica.store.read() as view:
        users, more = access.list_users(view, 2, "")
        assert [u.name for u in users] == ["alice", "bob"] and more
        users, more = access.list_users(view, 2, "bob")
        assert [u.name for u in users] == ["carol", "dave"] and not more
        teams, more = access.list_teams(view, "acme", 1, "dev")
        assert [t.name for t in teams] == ["ops"] and not more
        assert access.list_team_members(view, "acme", "dev", 5, "") == (["alice", "bob"], False)
        assert access.list_organization_owners(view, "acme", 5, "") == (["carol"], False)
        on_app, more = access.list_grants(view, on_repo("acme/app"), 1, None)
        assert [(g.subject, g.level) for g in on_app] == [(to_team("acme", "dev"), RW)] and more
        on_app, more = access.list_grants(view, on_repo("acme/app"), 5, on_app[0])
        assert [(g.subject, g.level) for g in on_app] == [(to_user("bob"), ADMIN)] and not more
        held, more = access.list_grants(view, to_user("bob"), 5, None)
        assert [g.scope for g in held] == [on_repo("acme/app"), on_repo("alice/tool")]
        orgs, _ = access.list_organizations(view, 5, "")
        assert [o.name for o in orgs] == ["acme", "corp"]


def test_check_access_explains_itself(replica):
    populate(replica)
    replica.ok(update_user("dave", admin=True))
    with replica.store.read() as view:

        def check(subject, repository, actions=("pull", "push", "delete", "admin")):
            level, decisions = access.check_access(view, subject, repository, list(actions))
            return level, {d.action: (d.allowed, d.reason) for d in decisions}

        level, found = check("", "acme/app")
        assert level == RO and found["pull"] == (True, "repository 'acme/app' is public")
        assert not found["push"][0] and "read-write" in found["push"][1]
        level, found = check("", "corp/lib")
        assert level == 0 and "anonymous" in found["pull"][1]
        level, found = check("alice", "acme/app")
        assert level == RW and "team 'acme/dev'" in found["push"][1]
        assert not found["admin"][0]
        assert check("carol", "acme/web")[1]["admin"] == (
            True,
            "user 'carol' owns organization 'acme'",
        )
        assert check("dave", "corp/lib")[0] == ADMIN
        assert check("alice", "alice/tool")[0] == ADMIN
        assert check("bob", "acme/web")[0] == RO  # ops: read-only on every acme repository
        with pytest.raises(access.NotFound):
            check("nobody", "acme/app")
    # create_on_push off: read-write may push to it once it exists, only admins create it.
    replica.ok(
        settings("acme/new", create_on_push=False), grant(on_org("acme"), to_user("alice"), RW)
    )
    with replica.store.read() as view:
        level, decisions = access.check_access(view, "alice", "acme/new", ["pull", "push"])
        assert [d.allowed for d in decisions] == [True, False]
        assert "create_on_push" in decisions[1].reason
        assert access.check_access(view, "carol", "acme/new", ["push"])[1][0].allowed
    replica.ok(link("acme/new", compute_digest(b"layer")))
    with replica.store.read() as view:
        assert access.check_access(view, "alice", "acme/new", ["push"])[1][0].allowed


def test_every_access_write_is_an_audit_event(replica):
    """Watch doubles as the audit log: who changed which account, team, grant or
    setting, in words; never the password hash."""
    writes = [
        (user("alice", password="correct horse battery"), "CreateUser",
         "user 'alice': admin: no, password set", ""),
        (org("acme"), "CreateOrganization", "organization 'acme'", ""),
        (team("acme", "dev"), "CreateTeam", "team 'acme/dev'", ""),
        (member("acme", "dev", "alice"), "AddTeamMember", "team 'acme/dev': user 'alice'", ""),
        (owner("acme", "alice"), "AddOrganizationOwner", "organization 'acme': user 'alice'", ""),
        (grant(on_repo("acme/app"), to_team("acme", "dev"), RW), "SetGrant",
         "team 'acme/dev' on repository 'acme/app': read-write", "acme/app"),
        (settings("acme/app", pb.PUBLIC, immutable=True), "SetRepositorySettings",
         "repository 'acme/app': public, immutable tags: yes, create on push: yes", "acme/app"),
        (update_user("alice", admin=True, password=""), "UpdateUser",
         "user 'alice': admin: yes, password removed", ""),
        (revoke(on_repo("acme/app"), to_team("acme", "dev")), "DeleteGrant",
         "team 'acme/dev' on repository 'acme/app'", "acme/app"),
        (member("acme", "dev", "alice", False), "RemoveTeamMember",
         "team 'acme/dev': user 'alice'", ""),
        (delete_team("acme", "dev"), "DeleteTeam", "team 'acme/dev'", ""),
        (delete_org("acme"), "DeleteOrganization", "organization 'acme'", ""),
        (delete_user("alice"), "DeleteUser", "user 'alice'", ""),
    ]  # fmt: skip
    replica.ok(commands.set_machine_version(versions.AUDIT_EVENTS))
    since = replica.index + 1
    for i, (command, *_) in enumerate(writes):
        command.actor = f"cert:admin-{i}"
        command.time_ms = 1_800_000_000_000 + i
        replica.ok(command)
    # A refused write changes nothing, so it is no event.
    assert replica.apply(delete_user("alice"))[0].code == NOT_FOUND
    with replica.store.read() as view:
        found = [e for e in all_events(view) if e.revision >= since]
    # Deleting the organization also removed the settings of its repository: an event
    # of its own, about that repository, right after the deletion's.
    cascade = ("DeleteOrganization", "repository 'acme/app': settings removed", "acme/app")
    expected = [(operation, target, repository) for _, operation, target, repository in writes]
    expected.insert(12, cascade)
    assert [(e.operation, e.target, e.repository) for e in found] == expected
    assert {e.kind for e in found} == {registry_pb2.ACCESS_CHANGE}
    actors = [(f"cert:admin-{i}", 1_800_000_000_000 + i) for i in range(len(writes))]
    actors.insert(12, actors[11])
    assert [(e.actor, e.time_ms) for e in found] == actors
    assert not any(b"argon2" in e.SerializeToString() for e in found)
    # Watch's repository filter sees the events about its repositories only.
    with replica.store.read() as view:
        about_app, _ = registry.events(view, 0, "acme/app", 100)
    assert [e.operation for e in about_app] == [
        "SetGrant", "SetRepositorySettings", "DeleteGrant", "DeleteOrganization"
    ]  # fmt: skip


def test_grants_removed_by_a_deletion_are_events_of_their_repositories(replica):
    replica.ok(commands.set_machine_version(versions.AUDIT_EVENTS))
    replica.ok(user("dave"), org("corp"), team("corp", "ops"), member("corp", "ops", "dave"))
    replica.ok(
        grant(on_repo("corp/api"), to_team("corp", "ops"), ADMIN),
        grant(on_org("corp"), to_team("corp", "ops"), RO),
        grant(on_repo("dave/tool"), to_user("dave"), RW),
    )
    since = replica.index + 1
    replica.ok(delete_team("corp", "ops"))
    with replica.store.read() as view:
        found = [(e.operation, e.target, e.repository) for e in all_events(view)
                 if e.revision >= since]  # fmt: skip
    assert found == [
        ("DeleteTeam", "team 'corp/ops'", ""),
        ("DeleteTeam", "team 'corp/ops' on organization 'corp': grant removed", ""),
        ("DeleteTeam", "team 'corp/ops' on repository 'corp/api': grant removed", "corp/api"),
    ]


def test_audit_events_wait_for_the_machine_version(replica):
    """A rolling upgrade: until every replica runs code that writes these events, none
    does (storage/versions.py); then all do, from the same entry on."""
    replica.ok(org("before"))
    with replica.store.read() as view:
        assert view.machine_version == 1 and all_events(view) == []
    [raised] = replica.ok(commands.set_machine_version(versions.AUDIT_EVENTS))
    replica.ok(org("after"))
    with replica.store.read() as view:
        assert view.machine_version == versions.AUDIT_EVENTS
        found = [(e.revision, e.operation, e.target) for e in all_events(view)]
    assert found == [
        (raised.revision, "SetMachineVersion", "machine version 1 -> 2"),
        (raised.revision + 1, "CreateOrganization", "organization 'after'"),
    ]
    # Never lowered; a version this code does not know is refused before the log.
    [again] = replica.ok(commands.set_machine_version(1))
    assert "already 2" in again.message
    with pytest.raises(InvalidArgument) as unknown:
        commands.set_machine_version(versions.LATEST + 1)
    assert unknown.value.field == "version"
