"""CheckAccess against a small reference model of the permission rules.

A hypothesis state machine creates and deletes users, organizations, teams,
memberships, owners, grants and repository settings through storage.commands and
storage.machine on a real Store, predicting each outcome from the model below, which
is written from the rules (README, "Access"), not from storage/access.py. After every
step nothing in LMDB dangles, and CheckAccess must agree with the model for any
subject, repository and actions.
"""

import shutil
import tempfile
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from regraft.v1 import access_pb2, command_pb2
from storage import access
from storage.errors import NotFound
from storage.names import compute_digest
from tests.unit import test_access as build
from tests.unit.test_storage import Replica, link

Result = command_pb2.Result
OK, NOT_FOUND, FAILED = Result.OK, Result.NOT_FOUND, Result.FAILED_PRECONDITION

USERS, ORGS = ["alice", "bob", "carol"], ["acme", "corp"]
NAMES = USERS + ORGS  # either may be a user or an organization
TEAMS = ["dev", "ops"]
REPOS = ["acme/app", "acme/web", "corp/app", "corp/web", "alice/app", "bob/x/y", "carol",
         "library/x"]  # fmt: skip
ACTIONS = ["pull", "push", "delete", "admin"]
NEEDS = {"pull": 1, "push": 2, "delete": 2, "admin": 3}
DEFAULT_SETTINGS = (False, True)  # (public, create_on_push)


@dataclass
class Model:
    users: dict = field(default_factory=dict)  # name -> {"active": bool, "admin": bool}
    orgs: set = field(default_factory=set)
    teams: dict = field(default_factory=dict)  # (org, team) -> set of users
    owners: dict = field(default_factory=dict)  # org -> set of users
    grants: dict = field(default_factory=dict)  # (scope, subject) -> level
    settings: dict = field(default_factory=dict)  # repository -> (public, create_on_push)
    created: set = field(default_factory=set)  # repositories with a blob

    def namespace_exists(self, repository: str) -> bool:
        namespace = repository.split("/")[0]
        return namespace in self.users or namespace in self.orgs

    def forget(self, doomed) -> None:
        self.grants = {k: v for k, v in self.grants.items() if not doomed(*k)}

    def forget_namespace(self, name: str) -> None:
        def inside(repository: str) -> bool:
            return repository.split("/")[0] == name

        self.forget(lambda scope, subject: scope[0] == "repo" and inside(scope[1]))
        self.settings = {r: s for r, s in self.settings.items() if not inside(r)}

    def level(self, subject: str, repository: str) -> int:
        namespace = repository.split("/")[0]
        public, _ = self.settings.get(repository, DEFAULT_SETTINGS)
        floor = 1 if public else 0
        if not subject:
            return floor
        user = self.users[subject]
        if not user["active"]:
            return 0
        if user["admin"] or namespace == subject or subject in self.owners.get(namespace, ()):
            return 3
        found = [floor]
        for (scope, holder), level in self.grants.items():
            on = scope in (("repo", repository), ("org", namespace))
            held = holder == ("user", subject) or (
                holder[0] == "team" and subject in self.teams.get(holder[1:], ())
            )
            if on and held:
                found.append(level)
        return max(found)

    def allowed(self, subject: str, repository: str, actions: list[str]) -> list[str]:
        level = self.level(subject, repository)
        _, create_on_push = self.settings.get(repository, DEFAULT_SETTINGS)
        creating = not create_on_push and repository not in self.created
        return [
            a for a in actions if level >= NEEDS[a] and not (a == "push" and creating and level < 3)
        ]


def scope_of(kind: str, name: str):
    return build.on_org(name) if kind == "org" else build.on_repo(name)


def subject_of(holder: tuple):
    return build.to_user(holder[1]) if holder[0] == "user" else build.to_team(*holder[1:])


scopes = st.one_of(
    st.tuples(st.just("repo"), st.sampled_from(REPOS)),
    st.tuples(st.just("org"), st.sampled_from(NAMES)),
)
holders = st.one_of(
    st.tuples(st.just("user"), st.sampled_from(NAMES)),
    st.tuples(st.just("team"), st.sampled_from(NAMES), st.sampled_from(TEAMS)),
)
# Grants a team may hold: inside its organization.
team_grants = st.builds(
    lambda org, team, repo, whole: (
        ("org", org) if whole else ("repo", f"{org}/{repo}"),
        ("team", org, team),
    ),
    st.sampled_from(ORGS), st.sampled_from(TEAMS), st.sampled_from(["app", "web"]), st.booleans(),
)  # fmt: skip


class AccessMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="access-model-")
        self.replica = Replica(self.directory)
        self.model = Model()

    def teardown(self) -> None:
        self.replica.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    @initialize(
        admins=st.sets(st.sampled_from(USERS)),
        members=st.sets(st.tuples(st.sampled_from(ORGS), st.sampled_from(TEAMS),
                                  st.sampled_from(USERS))),
        owners=st.sets(st.tuples(st.sampled_from(ORGS), st.sampled_from(USERS)), max_size=2),
        grants=st.lists(st.tuples(scopes, holders, st.integers(1, 3)), max_size=6),
        team_grants=st.lists(st.tuples(team_grants, st.integers(1, 3)), max_size=6),
    )  # fmt: skip
    def world(self, admins, members, owners, grants, team_grants):
        """A populated start, so that the rules below meet teams, members and grants."""
        for name in USERS:
            self.create_user(name, name in admins)
        for org in ORGS:
            self.create_org(org)
            for team in TEAMS:
                self.create_team(org, team)
        for org, team, user in sorted(members):
            self.team_member(org, team, user, True)
        for org, user in sorted(owners):
            self.org_owner(org, user, True)
        for scope, holder, level in grants + [(*pair, level) for pair, level in team_grants]:
            self.set_grant(scope, holder, level)

    def expect(self, command, code: int) -> bool:
        (result,) = self.replica.apply(command)
        assert result.code == code, (command, result)
        return code == OK

    # -- accounts -------------------------------------------------------------------

    @rule(name=st.sampled_from(NAMES), admin=st.booleans())
    def create_user(self, name, admin):
        m = self.model
        taken = name in m.users or name in m.orgs
        if self.expect(build.user(name, admin=admin), FAILED if taken else OK):
            m.users[name] = {"active": True, "admin": admin}

    @rule(name=st.sampled_from(NAMES), active=st.booleans(), admin=st.booleans())
    def update_user(self, name, active, admin):
        known = name in self.model.users
        command = build.update_user(name, active=active, admin=admin)
        if self.expect(command, OK if known else NOT_FOUND):
            self.model.users[name] = {"active": active, "admin": admin}

    @rule(name=st.sampled_from(NAMES))
    def delete_user(self, name):
        m = self.model
        if not self.expect(build.delete_user(name), OK if name in m.users else NOT_FOUND):
            return
        del m.users[name]
        for members in [*m.teams.values(), *m.owners.values()]:
            members.discard(name)
        m.forget(lambda scope, subject: subject == ("user", name))
        m.forget_namespace(name)

    @rule(name=st.sampled_from(NAMES))
    def create_org(self, name):
        m = self.model
        taken = name in m.users or name in m.orgs
        if self.expect(build.org(name), FAILED if taken else OK):
            m.orgs.add(name)
            m.owners[name] = set()

    @rule(name=st.sampled_from(NAMES))
    def delete_org(self, name):
        m = self.model
        if not self.expect(build.delete_org(name), OK if name in m.orgs else NOT_FOUND):
            return
        m.orgs.discard(name)
        del m.owners[name]
        m.teams = {k: v for k, v in m.teams.items() if k[0] != name}
        m.forget(lambda scope, subject: scope == ("org", name) or subject[:2] == ("team", name))
        m.forget_namespace(name)

    @rule(org=st.sampled_from(NAMES), name=st.sampled_from(TEAMS))
    def create_team(self, org, name):
        m = self.model
        code = NOT_FOUND if org not in m.orgs else FAILED if (org, name) in m.teams else OK
        if self.expect(build.team(org, name), code):
            m.teams[(org, name)] = set()

    @rule(org=st.sampled_from(NAMES), name=st.sampled_from(TEAMS))
    def delete_team(self, org, name):
        m = self.model
        if self.expect(build.delete_team(org, name), OK if (org, name) in m.teams else NOT_FOUND):
            del m.teams[(org, name)]
            m.forget(lambda scope, subject: subject == ("team", org, name))

    # -- memberships ----------------------------------------------------------------

    @rule(org=st.sampled_from(NAMES), team=st.sampled_from(TEAMS), user=st.sampled_from(NAMES),
          present=st.booleans())  # fmt: skip
    def team_member(self, org, team, user, present):
        self._membership(self.model.teams.get((org, team)), user, present,
                         build.member(org, team, user, present))  # fmt: skip

    @rule(org=st.sampled_from(NAMES), user=st.sampled_from(NAMES), present=st.booleans())
    def org_owner(self, org, user, present):
        self._membership(self.model.owners.get(org), user, present, build.owner(org, user, present))

    def _membership(self, members: set | None, user: str, present: bool, command) -> None:
        missing = members is None or user not in self.model.users
        if missing or not (present or user in members):
            self.expect(command, NOT_FOUND)
            return
        self.expect(command, OK)
        (members.add if present else members.discard)(user)

    # -- grants and settings --------------------------------------------------------

    @rule(scope=scopes, holder=holders, level=st.integers(0, 3))
    def set_grant(self, scope, holder, level):
        m = self.model
        held = holder[1] in m.users if holder[0] == "user" else holder[1:] in m.teams
        on = scope[1] in m.orgs if scope[0] == "org" else m.namespace_exists(scope[1])
        inside = scope[1].split("/")[0]
        if not (held and on):
            code = NOT_FOUND
        elif holder[0] == "team" and inside != holder[1]:
            code = FAILED
        elif level == 0 and (scope, holder) not in m.grants:
            code = NOT_FOUND
        else:
            code = OK
        target, subject = scope_of(*scope), subject_of(holder)
        command = build.grant(target, subject, level) if level else build.revoke(target, subject)
        if self.expect(command, code):
            if level:
                m.grants[(scope, holder)] = level
            else:
                del m.grants[(scope, holder)]

    @rule(repository=st.sampled_from(REPOS), public=st.booleans(), create_on_push=st.booleans())
    def set_settings(self, repository, public, create_on_push):
        visibility = access_pb2.PUBLIC if public else access_pb2.PRIVATE
        command = build.settings(repository, visibility, create_on_push=create_on_push)
        known = self.model.namespace_exists(repository)
        if self.expect(command, OK if known else NOT_FOUND):
            self.model.settings[repository] = (public, create_on_push)

    @rule(repository=st.sampled_from(REPOS))
    def push(self, repository):
        self.expect(link(repository, compute_digest(b"layer")), OK)
        self.model.created.add(repository)

    # -- checks ---------------------------------------------------------------------

    @invariant()
    def access_agrees_with_the_model(self):
        with self.replica.store.read() as view:
            for subject in ["", *NAMES]:
                for repository in REPOS:
                    self._check(view, subject, repository)

    def _check(self, view, subject: str, repository: str) -> None:
        if subject and subject not in self.model.users:
            try:
                access.check_access(view, subject, repository, ACTIONS)
            except NotFound as e:
                assert repr(subject) in e.message
                return
            raise AssertionError(f"unknown user {subject!r} was not refused")
        level, decisions = access.check_access(view, subject, repository, ACTIONS)
        assert level == self.model.level(subject, repository), (subject, repository)
        allowed = [d.action for d in decisions if d.allowed]
        assert allowed == self.model.allowed(subject, repository, ACTIONS), decisions
        assert [d.action for d in decisions] == ACTIONS
        assert all(d.reason for d in decisions)

    @invariant()
    def nothing_dangles(self):
        with self.replica.store.read() as view:
            assert build.dangling(view) == []


TestAccessModel = AccessMachine.TestCase
TestAccessModel.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
