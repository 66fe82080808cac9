# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hosts on another segment than the boot server, behind a router that relays their DHCP: how one is told apart, and
what the controller says when none of its DHCP reached the server.

Such a host's broadcasts end at its router. The site's router or switch relays them (``ip helper-address``) to the
servers it was told of; if Nixie's address is not among them, the site's DHCP server leases the machine an address
and Nixie hears nothing at all, which looks like a machine that never powered on unless the message says otherwise.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, List, Optional, Sequence


def routed_addresses(addresses: Iterable[Optional[str]], on_link: Sequence[ipaddress.IPv4Network]) -> List[str]:
    """Those of a host's IPv4 addresses (its static address, its Wake-on-LAN directed broadcast) on none of the boot
    server's ``on_link`` networks: a host with any sits behind a router. Empty, absent, IPv6 and limited-broadcast
    values say nothing about that and are left out."""
    routed = []
    for value in addresses:
        try:
            address = ipaddress.IPv4Address(str(value))
        except ValueError:
            continue
        if address != ipaddress.IPv4Address("255.255.255.255") and not any(address in network for network in on_link):
            routed.append(str(address))
    return routed


def relay_message(mac: str, server_address: str, timeout: int, routed: Sequence[str]) -> str:
    """Why a routed host (``routed``: its addresses from routed_addresses) whose DHCP never reached the boot server at
    ``server_address`` in ``timeout`` s did not boot."""
    return ("no DHCP request from %s reached the boot server; is the relay forwarding to %s? (nothing from it in %d s; %s is routed, "
            "not on the boot server's link)" % (mac, server_address, timeout, ", ".join(routed)))
