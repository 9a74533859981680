"""Refusals of the device assignment service: Apple's bare error codes (DEP-API.md)."""

from __future__ import annotations


class DepError(Exception):
    """A refusal with its HTTP status, the bare code clients match on, and a metric reason."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(code)
        self.status, self.code, self.reason = status, code, reason


def refused(code: str, status: int = 400) -> DepError:
    """A refusal answered with `status` and the bare `code`."""
    return DepError(status, code, code.lower())
