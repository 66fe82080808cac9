# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Proxy DHCPv6 sockets: UDP 547 joined to ff02::1:2 on the boot interface, and UDP 4011 on the server's
IPv6 address, both handing every datagram to ``Dhcp6Proxy``.

All decisions live in ``policy.proxy`` and the Booter; this module only opens the ports.
"""

from __future__ import annotations

import socket
import struct
from typing import Callable, Mapping

from ansible_collections.nixie.provision.plugins.module_utils._netif import interface_mac
from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import DHCP6_SERVER_PORT, PXE_PORT
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.udp import Endpoints, OnEvent, Sender, bound_udp_socket, start_endpoints
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.booter import Booter
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.proxy import ClientMemo, Dhcp6Proxy
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire import dhcp6


def _v6_only(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


def _joining_servers_group(interface: str) -> Callable[[socket.socket], None]:
    def configure(sock):
        _v6_only(sock)
        # Clients solicit to the link-scoped All_DHCP_Relay_Agents_and_Servers group.
        index = socket.if_nametoindex(interface)
        group = socket.inet_pton(socket.AF_INET6, dhcp6.ALL_DHCP_RELAY_AGENTS_AND_SERVERS)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group + struct.pack("@I", index))
    return configure


async def start_proxydhcp6(interface: str, booter: Booter, on_event: OnEvent, boot_file_sizes: Mapping[str, int], memo: ClientMemo) -> Endpoints:
    """Start proxy DHCPv6 on ``interface``; return the Endpoints to close.

    ``booter.server.ip`` must be an IPv6 address of ``interface``: it goes into every boot URL and receives
    EDK2's port-4011 Requests. ``boot_file_sizes`` maps iPXE binary names to sizes (option 60); ``memo`` is
    the ClientMemo that learns which MAC each client address belongs to.
    ``on_event(mac, step, **fields)`` is called for every answer and every ignored boot request.
    Raises PortBindError when a port cannot be opened.
    """
    proxy = Dhcp6Proxy(booter, dhcp6.server_duid(interface_mac(interface)), memo, dict(boot_file_sizes))
    openers = [
        (DHCP6_SERVER_PORT, lambda: bound_udp_socket(socket.AF_INET6, DHCP6_SERVER_PORT, "::", interface, _joining_servers_group(interface))),
        (PXE_PORT, lambda: bound_udp_socket(socket.AF_INET6, PXE_PORT, booter.server.ip, interface, _v6_only)),
    ]
    return await start_endpoints(openers, proxy.handle, on_event, lambda: Sender("proxy DHCPv6"))
