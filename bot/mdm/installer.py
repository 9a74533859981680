"""The installer the process hands to core: each connection kind through its own client."""

from __future__ import annotations

from dataclasses import dataclass

from bot.mdm import command, fleet, nanodep
from bot.mdm.wire import Wire
from core.connections.links import ConnectionSpec, Installed, InstallError, TokenPush
from core.settings import Network, Settings


@dataclass(frozen=True)
class MdmInstaller:
    """Installs tokens into NanoDEP, Fleet, or through a command (core's `Installer`)."""

    timeout: float = 10.0
    ca_bundle: str | None = None
    allow_networks: tuple[Network, ...] = ()

    @property
    def deadline(self) -> float:
        """The most seconds one install or certificate fetch takes, all its requests together."""
        return self.timeout + command.GRACE

    def _wire(self, spec: ConnectionSpec) -> Wire:
        return Wire(spec.label(), self.timeout, self.ca_bundle, self.allow_networks)

    def check(self, spec: ConnectionSpec) -> ConnectionSpec:
        """A command connection's program, found and made absolute; other kinds unchanged."""
        return command.check(spec) if spec.kind == "command" else spec

    def fetch_certificate(self, spec: ConnectionSpec, server_name: str) -> bytes:
        """The MDM server's public key certificate."""
        if spec.kind == "nanodep":
            return nanodep.fetch_certificate(self._wire(spec), spec, server_name)
        if spec.kind == "fleet":
            return fleet.fetch_certificate(self._wire(spec), spec, server_name)
        raise InstallError(
            "A command connection cannot fetch the MDM server's certificate; give --cert FILE."
        )

    def install(self, spec: ConnectionSpec, push: TokenPush) -> Installed:
        """Upload the token: NanoDEP answers its expiry, Fleet its ABM token id and renew date."""
        if spec.kind == "nanodep":
            return nanodep.install(self._wire(spec), spec, push)
        if spec.kind == "fleet":
            return fleet.install(self._wire(spec), spec, push)
        command.install(spec, push, self.timeout)
        return Installed()


def installer_for(settings: Settings) -> MdmInstaller:
    """The installer with the operator's timeout and CA bundle."""
    bundle = str(settings.mdmbot_mdm_ca_bundle) if settings.mdmbot_mdm_ca_bundle else None
    return MdmInstaller(settings.mdmbot_mdm_timeout, bundle, settings.mdm_allow_networks)
