# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host's power settings (see ``settings``) opened into the driver they name, connected and logged in."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from ansible_collections.nixie.provision.plugins.module_utils._power import ipmi, redfish, wol
from ansible_collections.nixie.provision.plugins.module_utils._power.base import PowerDriver

IPMI_PORT = 623


def open_driver(settings: Mapping[str, Any], bmc_password: Optional[str], timeout: float = 60, mac: Optional[str] = None,
                broadcast: str = "255.255.255.255", wol_port: Optional[int] = None, interface: Optional[str] = None) -> PowerDriver:
    """The driver ``settings`` name, connected (and for a BMC logged in)."""
    if settings["driver"] == "redfish":
        return redfish.RedfishDriver(settings["address"], settings["username"], bmc_password, settings.get("system"),
                                     settings.get("port"), settings.get("validate_certs", True), settings.get("ca_path"), timeout)
    if settings["driver"] == "ipmi":
        return ipmi.IpmiDriver(settings["address"], settings["username"], bmc_password, settings.get("port") or IPMI_PORT)
    return wol.WolDriver(mac, broadcast, wol_port or 9, interface)
