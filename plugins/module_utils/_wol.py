# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wake-on-LAN: build and send magic packets (6 x 0xFF, then the MAC 16 times) over UDP."""

from __future__ import annotations

import ipaddress
import socket
import time
import traceback

from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._mac import normalize_mac
from ansible_collections.nixie.provision.plugins.module_utils._netif import InterfaceError, interface_ipv4, require_interface

try:
    import wakeonlan
except ImportError:
    wakeonlan = None
    WAKEONLAN_IMPORT_ERROR = traceback.format_exc()
else:
    WAKEONLAN_IMPORT_ERROR = None


class WakeError(NixieError):
    """A magic packet could not be built or sent."""


def magic_packet(mac: str) -> bytes:
    """Return the 102-byte magic packet for ``mac`` (any form normalize_mac accepts)."""
    try:
        return wakeonlan.create_magic_packet(normalize_mac(mac))
    except ValueError as exc:
        raise WakeError("mac: %s" % exc) from None


def resolve_route(destination: str, interface: str | None = None) -> tuple[socket.AddressFamily, str, str | None]:
    """Return ``(address family, destination, source address or None)`` for sending to ``destination``.

    ``interface`` may be an interface name or one of this machine's addresses. For an IPv6 link-local or
    multicast destination (such as ff02::1) the interface name becomes its scope, since such an address
    means nothing without one.
    """
    try:
        target = ipaddress.ip_address(destination.split("%")[0])
    except ValueError:
        raise WakeError("broadcast: %r is not an IPv4 or IPv6 address" % destination) from None
    try:
        if target.version == 4:
            if not interface:
                return socket.AF_INET, destination, None
            try:
                return socket.AF_INET, destination, str(ipaddress.IPv4Address(interface))
            except ValueError:
                return socket.AF_INET, destination, interface_ipv4(interface)
        if interface and "%" not in destination and (target.is_link_local or target.is_multicast):
            require_interface(interface)
            destination = "%s%%%s" % (destination, interface)
    except InterfaceError as exc:
        raise WakeError("interface: %s" % exc) from None
    return socket.AF_INET6, destination, None


def send_wake(mac: str, destination: str = "255.255.255.255", port: int = 9, interface: str | None = None, count: int = 3, interval: float = 0.1,
              check_mode: bool = False) -> dict[str, object]:
    """Send ``count`` magic packets for ``mac``; return a description of what was (or would be) sent."""
    packet = magic_packet(mac)
    family, target, source = resolve_route(destination, interface)
    result = {
        "mac": normalize_mac(mac),
        "destination": target,
        "port": port,
        "source_address": source,
        "count": count,
        "magic_packet": packet.hex(),
        "packets_sent": 0,
    }
    if check_mode:
        return result
    for attempt in range(count):
        if attempt:
            # Spaced sends: a NIC that is still settling into its low-power state can miss the first one.
            time.sleep(interval)
        try:
            wakeonlan.send_magic_packet(result["mac"], ip_address=target, port=port, interface=source, address_family=family)
        except OSError as exc:
            raise WakeError("cannot send a magic packet to %s port %s%s: %s" % (
                target, port, " from %s" % source if source else "", exc.strerror or exc), **result) from None
        result["packets_sent"] += 1
    return result
