"""Typed errors that carry the sentence a user sees."""

from __future__ import annotations


class MdmbotError(Exception):
    """Base of every error a user may see; `message` is shown as is, `field` names the input."""

    field: str | None = None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if field is not None:
            self.field = field


class InvalidName(MdmbotError):
    """A server name that breaks Apple's naming rules."""

    field = "name"


class DuplicateName(InvalidName):
    """A server name already taken (after normalisation)."""


class CertificateError(MdmbotError):
    """A file that is not an acceptable public key certificate."""

    field = "certificate"


class NotFound(MdmbotError):
    """A server, person or token that does not exist."""


class PermissionDenied(MdmbotError):
    """The acting user lacks the role the action needs."""


class InvalidInput(MdmbotError):
    """Any other refused input (bad role name, bad time, bad option)."""


class ConfigError(MdmbotError):
    """A missing or malformed setting."""


class DeliveryFailed(MdmbotError):
    """A token could not be delivered; `reference` lets an operator find the log line."""

    def __init__(self, message: str, *, reference: str) -> None:
        super().__init__(message)
        self.reference = reference

