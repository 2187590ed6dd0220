"""The Registry gRPC service: thin handlers over commands, Raft, and reads.

Writes: request -> storage.commands (validation) -> Raft -> storage.machine -> result.
Reads: a view as fresh as the request's ReadOptions ask -> storage.registry.
"""

from collections.abc import Callable

from cluster import auth, rpc
from cluster.raft import Raft
from cluster.reads import Reads
from cluster.watches import Watches
from regraft.v1 import registry_pb2, registry_pb2_grpc
from storage import commands, names, registry

pb = registry_pb2


class RegistryService(registry_pb2_grpc.RegistryServicer):
    def __init__(
        self, raft: Raft, reads: Reads, leader_hint: Callable[[], str], watches: Watches
    ) -> None:
        self._raft = raft
        self._reads = reads
        self.leader_hint = leader_hint
        self._watches = watches

    # -- manifests ----------------------------------------------------------------------

    @rpc.write(lambda r: pb.PutManifestResponse(digest=r.digest, revision=r.revision))
    def PutManifest(self, request, context):
        return commands.put_manifest(request, auth.actor(context))

    @rpc.read
    def GetManifest(self, request, context):
        names.validate_repository(request.repository)
        reference = names.validate_reference(request.reference)
        by_digest = names.is_digest_reference(reference)

        def answer(view):
            digest, record = registry.get_manifest(view, request.repository, reference, by_digest)
            return pb.GetManifestResponse(
                digest=digest,
                media_type=record.media_type,
                content=record.content,
                revision=view.revision,
            )

        return request.read, answer

    @rpc.write(
        lambda r: pb.DeleteManifestResponse(revision=r.revision, deleted_tags=r.deleted_tags)
    )
    def DeleteManifest(self, request, context):
        return commands.delete_manifest(request, auth.actor(context))

    # -- tags ---------------------------------------------------------------------------

    @rpc.write(lambda r: pb.PutTagResponse(revision=r.revision, previous_digest=r.previous_digest))
    def PutTag(self, request, context):
        return commands.put_tag(request, auth.actor(context))

    @rpc.write(lambda r: pb.DeleteTagResponse(revision=r.revision, digest=r.digest))
    def DeleteTag(self, request, context):
        return commands.delete_tag(request, auth.actor(context))

    @rpc.read
    def ListTags(self, request, context):
        names.validate_repository(request.repository)
        n = names.validate_page_size(request.n)
        if request.last:
            names.validate_tag(request.last, "last")
        if request.digest:
            names.validate_digest(request.digest)

        def answer(view):
            tags, more = registry.list_tags(
                view, request.repository, n, request.last, request.digest
            )
            return pb.ListTagsResponse(tags=tags, revision=view.revision, more=more)

        return request.read, answer

    @rpc.read
    def ListRepositories(self, request, context):
        n = names.validate_page_size(request.n)
        if request.last:
            names.validate_repository(request.last, "last")

        def answer(view):
            repositories, more = registry.list_repositories(view, n, request.last)
            return pb.ListRepositoriesResponse(
                repositories=repositories, revision=view.revision, more=more
            )

        return request.read, answer

    @rpc.read
    def GetReferrers(self, request, context):
        names.validate_repository(request.repository)
        names.validate_digest(request.digest)
        names.validate_media_type(request.artifact_type, "artifact_type")
        n = names.validate_page_size(request.n) if request.n else names.MAX_PAGE_SIZE
        if request.last:
            names.validate_digest(request.last, "last")

        def answer(view):
            page = registry.get_referrers(
                view, request.repository, request.digest, request.artifact_type, n, request.last
            )
            return pb.GetReferrersResponse(
                manifests=page.descriptors, revision=view.revision, more=page.more, last=page.last
            )

        return request.read, answer

    # -- blobs --------------------------------------------------------------------------

    @rpc.write(lambda r: pb.LinkBlobResponse(revision=r.revision))
    def LinkBlob(self, request, context):
        return commands.link_blob(request, auth.actor(context))

    @rpc.read
    def StatBlob(self, request, context):
        names.validate_repository(request.repository)
        names.validate_digest(request.digest)

        def answer(view):
            blob = registry.stat_blob(view, request.repository, request.digest)
            return pb.StatBlobResponse(
                digest=request.digest,
                size=blob.size,
                media_type=blob.media_type,
                revision=view.revision,
            )

        return request.read, answer

    @rpc.write(lambda r: pb.UnlinkBlobResponse(revision=r.revision))
    def UnlinkBlob(self, request, context):
        return commands.unlink_blob(request, auth.actor(context))

    @rpc.write(
        lambda r: pb.MountBlobResponse(size=r.size, media_type=r.media_type, revision=r.revision)
    )
    def MountBlob(self, request, context):
        return commands.mount_blob(request, auth.actor(context))

    # -- history ------------------------------------------------------------------------

    def Watch(self, request, context, send_response_callback=None) -> None:
        """Stream events from `from_revision` on, until `to_revision` or until the
        caller goes away: grpcio runs this without a thread (non-blocking), and the
        stream goes on without one (cluster/watches.py)."""
        self._watches.open(request, context)

    Watch.experimental_non_blocking = True
