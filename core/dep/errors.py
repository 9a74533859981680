"""Refusals of the device endpoints: Apple's bare error codes (DEP-API.md "Other errors")."""

from __future__ import annotations

from core.dep.auth import DepError


def refused(code: str, status: int = 400) -> DepError:
    """A refusal answered with `status` and the bare `code`."""
    return DepError(status, code, code.lower())
