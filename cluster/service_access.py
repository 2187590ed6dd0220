"""The Access gRPC service: thin handlers over storage.commands, Raft and storage.access.

Writes: request -> storage.commands (validation, password hashing) -> Raft ->
storage.machine -> revision. Reads: a view as fresh as the request's ReadOptions ask
(cluster/reads.py) -> storage.access.
"""

import contextlib
import threading
from collections.abc import Callable, Iterator

from cluster import auth, rpc, workers
from cluster.raft import Raft
from cluster.reads import Reads
from regraft.v1 import access_pb2, access_pb2_grpc, command_pb2
from storage import access, commands, names, registry
from storage.errors import InvalidArgument

pb = access_pb2
# Password checks at once per replica: each takes argon2id's 64 MiB and a core for tens
# of milliseconds, so unbounded they would let callers exhaust memory and CPU. A few
# more may wait, briefly: waiting holds a server thread that unary calls need.
PASSWORD_CHECKS = 2
PASSWORD_WAITERS = 4
PASSWORD_WAIT = 1.0


def _account(value: str, field: str) -> str:
    return names.validate_account_name(value, field)


def _last(value: str) -> str:
    return _account(value, "last") if value else ""


def _by_caller(command: command_pb2.Command, context) -> command_pb2.Command:
    command.actor = auth.actor(context)  # who changed access, for the record
    return command


def _written(result: command_pb2.Result) -> pb.AccessWriteResponse:
    return pb.AccessWriteResponse(revision=result.revision)


class AccessService(access_pb2_grpc.AccessServicer):
    def __init__(self, raft: Raft, reads: Reads, leader_hint: Callable[[], str]) -> None:
        self._raft = raft
        self._reads = reads
        self.leader_hint = leader_hint
        self._password_checks = threading.BoundedSemaphore(PASSWORD_CHECKS)
        self._password_callers = threading.BoundedSemaphore(PASSWORD_CHECKS + PASSWORD_WAITERS)
        access.no_such_user_hash()

    def _view(self, read, context):
        return self._reads.view(read, rpc.timeout(context), context.is_active)

    # -- users --------------------------------------------------------------------------

    @rpc.write(_written)
    @rpc.pooled
    def CreateUser(self, request, context):
        with self._password_turn(context) if request.password else contextlib.nullcontext():
            return _by_caller(commands.create_user(request), context)

    @rpc.write(_written)
    @rpc.pooled
    def UpdateUser(self, request, context):
        with self._password_turn(context) if request.password else contextlib.nullcontext():
            return _by_caller(commands.update_user(request), context)

    @rpc.write(_written)
    def DeleteUser(self, request, context):
        return _by_caller(commands.delete_user(request), context)

    @rpc.read
    def GetUser(self, request, context):
        name = _account(request.name, "name")

        def answer(view):
            return pb.GetUserResponse(user=access.user_message(view, name), revision=view.revision)

        return request.read, answer

    @rpc.read
    def ListUsers(self, request, context):
        n, last = names.validate_page_size(request.n), _last(request.last)

        def answer(view):
            users, more = access.list_users(view, n, last)
            return pb.ListUsersResponse(users=users, revision=view.revision, more=more)

        return request.read, answer

    @rpc.handler
    def VerifyPassword(self, request, context):
        """ok=false alike for a wrong password and an unknown or inactive user."""
        name = _account(request.name, "name")
        with self._view(request.read, context) as view:
            stored, revision = access.password_hash_of(view, name), view.revision
        if len(request.password) > commands.MAX_PASSWORD_LENGTH:  # never set: no match
            return pb.VerifyPasswordResponse(ok=False, revision=revision)
        with self._password_turn(context):
            ok = access.verify_password(stored, request.password)
        return pb.VerifyPasswordResponse(ok=ok, revision=revision)

    @contextlib.contextmanager
    def _password_turn(self, context) -> Iterator[None]:
        """A turn at argon2id (a password checked or hashed), or RESOURCE_EXHAUSTED."""
        busy = rpc.Exhausted(
            f"{PASSWORD_CHECKS} password hashes are being computed on this replica and "
            f"{PASSWORD_WAITERS} more waiting: retry, or spread front-ends over the replicas"
        )
        if not self._password_callers.acquire(blocking=False):
            raise busy
        try:
            # Waiting for a turn, then argon2, which runs without the GIL.
            with workers.blocking():
                if not self._password_checks.acquire(
                    timeout=min(PASSWORD_WAIT, rpc.timeout(context))
                ):
                    raise busy
                try:
                    yield
                finally:
                    self._password_checks.release()
        finally:
            self._password_callers.release()

    # -- organizations ------------------------------------------------------------------

    @rpc.write(_written)
    def CreateOrganization(self, request, context):
        return _by_caller(commands.put_organization(request, create=True), context)

    @rpc.write(_written)
    def UpdateOrganization(self, request, context):
        return _by_caller(commands.put_organization(request, create=False), context)

    @rpc.write(_written)
    def DeleteOrganization(self, request, context):
        return _by_caller(commands.delete_organization(request), context)

    @rpc.read
    def GetOrganization(self, request, context):
        name = _account(request.name, "name")

        def answer(view):
            organization = access.organization_message(view, name)
            return pb.GetOrganizationResponse(organization=organization, revision=view.revision)

        return request.read, answer

    @rpc.read
    def ListOrganizations(self, request, context):
        n, last = names.validate_page_size(request.n), _last(request.last)

        def answer(view):
            found, more = access.list_organizations(view, n, last)
            return pb.ListOrganizationsResponse(
                organizations=found, revision=view.revision, more=more
            )

        return request.read, answer

    # -- teams and memberships ----------------------------------------------------------

    @rpc.write(_written)
    def CreateTeam(self, request, context):
        return _by_caller(commands.put_team(request, create=True), context)

    @rpc.write(_written)
    def UpdateTeam(self, request, context):
        return _by_caller(commands.put_team(request, create=False), context)

    @rpc.write(_written)
    def DeleteTeam(self, request, context):
        return _by_caller(commands.delete_team(request), context)

    @rpc.read
    def GetTeam(self, request, context):
        organization = _account(request.organization, "organization")
        name = _account(request.name, "name")

        def answer(view):
            team = access.team_message(view, organization, name)
            return pb.GetTeamResponse(team=team, revision=view.revision)

        return request.read, answer

    @rpc.read
    def ListTeams(self, request, context):
        organization = _account(request.organization, "organization")
        n, last = names.validate_page_size(request.n), _last(request.last)

        def answer(view):
            teams, more = access.list_teams(view, organization, n, last)
            return pb.ListTeamsResponse(teams=teams, revision=view.revision, more=more)

        return request.read, answer

    @rpc.write(_written)
    def AddTeamMember(self, request, context):
        return _by_caller(commands.set_team_member(request, member=True), context)

    @rpc.write(_written)
    def RemoveTeamMember(self, request, context):
        return _by_caller(commands.set_team_member(request, member=False), context)

    @rpc.read
    def ListTeamMembers(self, request, context):
        organization = _account(request.organization, "organization")
        team = _account(request.team, "team")
        n, last = names.validate_page_size(request.n), _last(request.last)

        def answer(view):
            users, more = access.list_team_members(view, organization, team, n, last)
            return pb.ListUserNamesResponse(users=users, revision=view.revision, more=more)

        return request.read, answer

    @rpc.write(_written)
    def AddOrganizationOwner(self, request, context):
        return _by_caller(commands.set_organization_owner(request, owner=True), context)

    @rpc.write(_written)
    def RemoveOrganizationOwner(self, request, context):
        return _by_caller(commands.set_organization_owner(request, owner=False), context)

    @rpc.read
    def ListOrganizationOwners(self, request, context):
        organization = _account(request.organization, "organization")
        n, last = names.validate_page_size(request.n), _last(request.last)

        def answer(view):
            users, more = access.list_organization_owners(view, organization, n, last)
            return pb.ListUserNamesResponse(users=users, revision=view.revision, more=more)

        return request.read, answer

    # -- grants and settings ------------------------------------------------------------

    @rpc.write(_written)
    def SetGrant(self, request, context):
        return _by_caller(commands.set_grant(request), context)

    @rpc.write(_written)
    def DeleteGrant(self, request, context):
        return _by_caller(commands.delete_grant(request), context)

    @rpc.read
    def ListGrants(self, request, context):
        chosen = request.WhichOneof("filter")
        if chosen is None:
            raise InvalidArgument(
                "filter", "set scope (a repository or an organization) or subject (a team or user)"
            )
        if chosen == "scope":
            target = commands.scope(request.scope)
        else:
            target = commands.subject(request.subject)
        n = names.validate_page_size(request.n)
        last = request.last if request.HasField("last") else None

        def answer(view):
            grants, more = access.list_grants(view, target, n, last)
            return pb.ListGrantsResponse(grants=grants, revision=view.revision, more=more)

        return request.read, answer

    @rpc.read
    def GetRepositorySettings(self, request, context):
        repository = names.validate_repository(request.repository)

        def answer(view):
            settings = registry.settings(view, repository)
            return pb.GetRepositorySettingsResponse(settings=settings, revision=view.revision)

        return request.read, answer

    @rpc.write(_written)
    def SetRepositorySettings(self, request, context):
        return _by_caller(commands.set_repository_settings(request), context)

    # -- decisions ----------------------------------------------------------------------

    @rpc.read
    def CheckAccess(self, request, context):
        subject = _account(request.subject, "subject") if request.subject else ""
        repository = names.validate_repository(request.repository)
        actions = names.validate_actions(request.actions)

        def answer(view):
            level, decisions = access.check_access(view, subject, repository, actions)
            return pb.CheckAccessResponse(
                allowed=[d.action for d in decisions if d.allowed],
                decisions=decisions,
                level=level,
                revision=view.revision,
            )

        return request.read, answer
