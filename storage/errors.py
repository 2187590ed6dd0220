"""Errors the storage layer reports to whoever called it.

Kept free of gRPC: cluster/ maps each kind to a status code. Every error names the
field or the value that was wrong, because the message reaches a human.
"""

import functools
from collections.abc import Callable


class InvalidArgument(ValueError):
    """A request is malformed: a name, digest or manifest breaks its grammar.

    `code` is the OCI distribution error code for it, where there is one (set by the
    validator that refused it: `oci_code`); whatever is wrong inside a manifest makes
    the manifest invalid.
    """

    def __init__(self, field: str, message: str, code: str = "") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.code = code

    @property
    def oci_code(self) -> str:
        if self.field == "content" or self.field.startswith("content."):
            return "MANIFEST_INVALID"
        return self.code


def oci_code(code: str) -> Callable[[Callable], Callable]:
    """Give the InvalidArgument errors a validator raises this OCI code, unless a
    validator it called gave them one."""

    def decorate(validator: Callable) -> Callable:
        @functools.wraps(validator)
        def validate(*args, **kwargs):
            try:
                return validator(*args, **kwargs)
            except InvalidArgument as error:
                error.code = error.code or code
                raise

        return validate

    return decorate


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
