"""Errors the storage layer reports to whoever called it.

Kept free of gRPC: cluster/ maps each kind to a status code. Every error names the
field or the value that was wrong, because the message reaches a human.
"""


class InvalidArgument(ValueError):
    """A request is malformed: a name, digest or manifest breaks its grammar."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class RegistryError(Exception):
    """A request that is well-formed but cannot be carried out in the current state.

    `oci_code` is the OCI distribution error code a front-end returns to its client.
    """

    def __init__(self, oci_code: str, message: str) -> None:
        super().__init__(message)
        self.oci_code = oci_code
        self.message = message


class NotFound(RegistryError):
    """The repository, manifest, tag or blob does not exist."""


class FailedPrecondition(RegistryError):
    """A referenced blob or manifest is missing, or a compare-and-set did not match."""
