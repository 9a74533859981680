"""Apple School Manager roles and what each may do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.errors import InvalidInput, PermissionDenied


class Role(StrEnum):
    """The roles that may link MDM servers (Apple: "Link to a third-party MDM server")."""

    ADMINISTRATOR = "Administrator"
    SITE_MANAGER = "Site Manager"
    DEVICE_ENROLLMENT_MANAGER = "Device Enrollment Manager"


class Permission(StrEnum):
    """Actions guarded by a role."""

    VIEW = "view"
    MANAGE_SERVERS = "manage servers"
    MANAGE_ROLES = "manage roles"
    MANAGE_DEVICES = "manage devices"
    RELEASE_DEVICES = "release devices"
    MANAGE_API_ACCOUNTS = "manage API accounts"


_GRANTS: dict[Role, frozenset[Permission]] = {
    Role.ADMINISTRATOR: frozenset(Permission),
    Role.SITE_MANAGER: frozenset(
        {Permission.VIEW, Permission.MANAGE_SERVERS, Permission.MANAGE_DEVICES}
    ),
    Role.DEVICE_ENROLLMENT_MANAGER: frozenset(
        {Permission.VIEW, Permission.MANAGE_SERVERS, Permission.MANAGE_DEVICES}
    ),
}

_ALIASES = {
    "administrator": Role.ADMINISTRATOR,
    "admin": Role.ADMINISTRATOR,
    "site manager": Role.SITE_MANAGER,
    "site-manager": Role.SITE_MANAGER,
    "sitemanager": Role.SITE_MANAGER,
    "device enrollment manager": Role.DEVICE_ENROLLMENT_MANAGER,
    "device-enrollment-manager": Role.DEVICE_ENROLLMENT_MANAGER,
    "device enrolment manager": Role.DEVICE_ENROLLMENT_MANAGER,
    "dem": Role.DEVICE_ENROLLMENT_MANAGER,
}


def parse_role(text: str) -> Role:
    """The role named by `text` (case and dashes ignored, "admin" and "DEM" accepted)."""
    key = " ".join(text.strip().lower().replace("_", " ").split())
    role = _ALIASES.get(key) or _ALIASES.get(key.replace(" ", "-"))
    if role is None:
        choices = ", ".join(r.value for r in Role)
        raise InvalidInput(f"“{text.strip()}” is not a role. Choose one of: {choices}.")
    return role


def allows(role: Role | None, permission: Permission) -> bool:
    """Whether `role` grants `permission`."""
    return role is not None and permission in _GRANTS[role]


@dataclass(frozen=True)
class Actor:
    """Who is acting: a Slack user (role looked up), a trusted operator on the command line, or
    an API account of the served School Manager API (`user_id` its client id; an Administrator)."""

    user_id: str
    operator: bool = False
    api: bool = False

    @property
    def label(self) -> str:
        """How the actor is named in the audit log."""
        if self.api:
            return f"api:{self.user_id}"
        return f"operator:{self.user_id}" if self.operator else self.user_id


def require(actor: Actor, role: Role | None, permission: Permission) -> None:
    """Raise PermissionDenied unless the actor may do `permission`."""
    if actor.operator or allows(role, permission):
        return
    if permission is Permission.MANAGE_ROLES:
        raise PermissionDenied("Only an Administrator can grant or revoke roles.")
    if permission is Permission.RELEASE_DEVICES:
        raise PermissionDenied("Only an Administrator can release devices.")
    if permission is Permission.MANAGE_API_ACCOUNTS:
        raise PermissionDenied("Only an Administrator can create, list or revoke API accounts.")
    raise PermissionDenied(
        "You need the Administrator, Site Manager or Device Enrollment Manager role in mdmbot "
        "to do this. Ask an Administrator to run `/mdm grant`."
    )
