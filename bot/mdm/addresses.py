"""Where mdmbot may connect: a host's addresses, resolved within the deadline and checked.

Loopback, private, link-local (cloud metadata services), shared, reserved and multicast addresses
are refused unless the operator's allowlist (MDMBOT_MDM_ALLOW_NETWORKS) names them. The caller
connects to the addresses returned here, never to the name again (no second resolution).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Sequence

from core.connections.links import InstallError
from core.settings import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def allowed(ip: Address, allow: Sequence[Network]) -> bool:
    """Whether mdmbot may connect to `ip`: a public unicast address, or one the operator allows."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip.version == net.version and ip in net for net in allow):
        return True
    return ip.is_global and not ip.is_multicast


def _kind(ip: Address) -> str:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for name, test in (
        ("a loopback", ip.is_loopback),
        ("a link-local (cloud metadata)", ip.is_link_local),
        ("a private", ip.is_private),
        ("a multicast", ip.is_multicast),
    ):
        if test:
            return name
    return "a reserved"


def resolve(
    what: str, host: str, port: int, allow: Sequence[Network], timeout: float
) -> list[tuple[Address, int]]:
    """The host's addresses mdmbot may connect to; InstallError when none is allowed."""
    found: list[list[tuple[Address, int]] | BaseException] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found.append([(ipaddress.ip_address(str(i[4][0]).split("%")[0]), port) for i in infos])
        except BaseException as exc:  # handed to the caller's thread
            found.append(exc)

    worker = threading.Thread(target=lookup, name="mdmbot-resolve", daemon=True)
    worker.start()
    worker.join(timeout)
    if not found:
        raise InstallError(f"{what} did not answer within the deadline (resolving {host}).")
    if isinstance(found[0], BaseException):
        reason = getattr(found[0], "strerror", None) or type(found[0]).__name__
        raise InstallError(f"Cannot reach {what} at {host}: {reason}.")
    addresses = list(dict.fromkeys(found[0]))
    usable = [a for a in addresses if allowed(a[0], allow)]
    if not usable:
        ip = addresses[0][0] if addresses else host
        kind = _kind(addresses[0][0]) if addresses else "an unknown"
        raise InstallError(
            f"mdmbot does not connect to {host} ({ip}): it is {kind} address. An operator can "
            "allow its network in MDMBOT_MDM_ALLOW_NETWORKS."
        )
    return usable
