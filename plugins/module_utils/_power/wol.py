# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Wake-on-LAN driver: magic packets switch a machine on, and that is all it can do."""

from __future__ import annotations

from ansible_collections.nixie.provision.plugins.module_utils import _wol
from ansible_collections.nixie.provision.plugins.module_utils._power.base import UNKNOWN, PowerDriver, PowerError

MAGIC_PACKET = "magic packet"


class WolDriver(PowerDriver):
    """Wakes ``mac`` through ``destination``; it can read no state and set no boot override."""

    name = "wol"
    reports_power = False

    def __init__(self, mac: str, destination: str = "255.255.255.255", port: int = 9, interface: str | None = None) -> None:
        # Building the packet and the route now makes a bad MAC or interface fail in check mode too.
        _wol.magic_packet(mac)
        dummy_family, target, dummy_source = _wol.resolve_route(destination, interface)
        super().__init__(target)
        self._wake = (mac, destination, port, interface)

    def power_state(self) -> str:
        return UNKNOWN

    def boot_override(self) -> dict | None:
        return None

    def boot_request(self, device: str, mode: str | None, http_boot_uri: str | None) -> dict | None:
        if device != "network":
            raise PowerError("the wol driver cannot set a one-time boot from %s: Wake-on-LAN only switches a "
                             "machine on, which then boots in its own order; use the redfish or ipmi driver" % device)
        return None

    def set_boot_once(self, request: dict) -> None:
        raise PowerError("the wol driver cannot set a boot override")

    def clear_boot_override(self) -> None:
        raise PowerError("the wol driver has no boot override to clear")

    def power_command(self, action: str) -> str:
        if action != "on":
            raise PowerError("the wol driver cannot %s a machine: Wake-on-LAN only switches it on; use the "
                             "redfish or ipmi driver" % ("power-cycle" if action == "cycle" else "power off"))
        return MAGIC_PACKET

    def send_power(self, command: str) -> None:
        _wol.send_wake(*self._wake)
