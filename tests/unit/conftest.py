"""Shared fixtures for unit tests."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests import certs


@pytest.fixture
def now() -> datetime:
    """Return the fixed clock unit tests run at."""
    return certs.NOW


@pytest.fixture
def rsa_cert() -> certs.CertAndKey:
    """Return a self-signed 2048-bit RSA certificate with its key."""
    return certs.self_signed_rsa()
