# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every power driver offers, its errors, and the one shape of a boot override all drivers report."""

from __future__ import annotations

from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError

POWER_STATES = ("on", "off", "cycle", "boot", "status")
BOOT_DEVICES = ("network", "http", "disk")
# boot_once "none" clears a pending override instead of setting one.
NO_OVERRIDE = "none"
BOOT_MODES = ("uefi", "bios")
UNKNOWN = "unknown"


class PowerError(NixieError):
    """The BMC (or the network, for Wake-on-LAN) refused or failed a request; the message names the BMC."""


class PowerTimeout(PowerError):
    """The BMC accepted a request but did not report the new power state in time."""


def boot_override(device: str, once: bool, mode: str | None, target: str, http_boot_uri: str | None = None) -> dict:
    """A boot override as the module returns it, whichever protocol it came from.

    ``device`` is one of BOOT_DEVICES or ``other``; ``target`` keeps the BMC's own name for it (Redfish's
    ``Pxe``, IPMI's ``pxe``), so that a value this collection does not map is still shown.
    """
    return {"device": device, "once": once, "mode": mode, "target": target, "http_boot_uri": http_boot_uri}


class PowerDriver:
    """One machine's power control. Drivers raise PowerError (or another NixieError) for every failure.

    ``reports_power`` is False for a driver that cannot read the power state (Wake-on-LAN), whose
    ``power_state`` is then UNKNOWN and after whose commands nothing is awaited. ``warnings`` collects what
    the module should pass on to the user.
    """

    name = ""
    reports_power = True

    def __init__(self, address: str) -> None:
        self.address = address
        self.warnings: list[str] = []

    def power_state(self) -> str:
        """``on``, ``off``, a transitional state in lower case (``powering on``) or UNKNOWN."""
        raise NotImplementedError

    def boot_override(self) -> dict | None:
        """The pending boot override (see ``boot_override()``), or None when the BMC reports none."""
        raise NotImplementedError

    def boot_request(self, device: str, mode: str | None, http_boot_uri: str | None) -> dict | None:
        """The override that ``set_boot_once`` would set for ``device``, checked against what the BMC offers.

        Sends nothing, so that check mode can report it; None when the driver cannot set overrides but
        the machine boots from the network anyway (Wake-on-LAN).
        """
        raise NotImplementedError

    def set_boot_once(self, request: dict) -> None:
        """Set the override ``boot_request`` returned, for the next boot only."""
        raise NotImplementedError

    def clear_boot_override(self) -> None:
        """Cancel the pending override (``boot_override()`` then reports None)."""
        raise NotImplementedError

    def power_command(self, action: str) -> str:
        """The BMC's name for what carries out ``action`` (on, off or cycle), such as ``ForceRestart``."""
        raise NotImplementedError

    def send_power(self, command: str) -> None:
        """Send ``command`` (from ``power_command``) without waiting for its effect."""
        raise NotImplementedError

    def close(self) -> None:
        """Log out of the BMC; never raises."""
