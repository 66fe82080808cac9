# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ProxyDHCP sockets: asyncio UDP endpoints on ports 67 and 4011 that hand every datagram to ``Dhcp4Proxy``.

All decisions live in ``policy.proxy`` and the Booter; this module only opens the ports.
"""

from __future__ import annotations

import socket

from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import DHCP_SERVER_PORT, PXE_PORT
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.udp import Endpoints, OnEvent, bound_udp_socket, start_endpoints
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.booter import Booter
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.proxy import Dhcp4Proxy
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire import dhcp4
from ansible_collections.nixie.provision.plugins.module_utils._errors import require_library


def _allow_broadcast(sock: socket.socket) -> None:
    # Port 67 is bound to 0.0.0.0 because clients without an address broadcast to it, and we answer them
    # by broadcast when they cannot take unicast yet.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)


async def start_proxydhcp(interface: str, booter: Booter, on_event: OnEvent) -> Endpoints:
    """Start ProxyDHCP on ``interface``; return the Endpoints to close.

    Listens on UDP 67 (0.0.0.0, bound to ``interface``) and UDP 4011 (``booter.server.ip``, which must be
    an address of ``interface``). ``on_event(mac, step, **fields)`` is called for every offer, ack and
    ignored PXE request (``contract.STEP_DHCP_*``). Raises PortBindError when either port cannot be opened.
    """
    require_library("scapy", dhcp4.SCAPY_IMPORT_ERROR)
    openers = [
        (DHCP_SERVER_PORT, lambda: bound_udp_socket(socket.AF_INET, DHCP_SERVER_PORT, dhcp4.ANY_ADDRESS, interface, _allow_broadcast)),
        (PXE_PORT, lambda: bound_udp_socket(socket.AF_INET, PXE_PORT, booter.server.ip, interface, _allow_broadcast)),
    ]
    return await start_endpoints(openers, Dhcp4Proxy(booter).handle, on_event, "ProxyDHCP")
