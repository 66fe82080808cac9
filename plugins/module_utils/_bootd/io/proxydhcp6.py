# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Proxy DHCPv6 sockets: UDP 547 joined to ff02::1:2 on the boot interface, and UDP 4011 on the server's
IPv6 address, both handing every datagram to ``dhcp6``.

All decisions live in ``dhcp6.handle`` and the Booter; this module only receives, sends and reports.
"""

from __future__ import annotations

import socket
import struct

from ansible_collections.nixie.provision.plugins.module_utils._netif import interface_mac
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire import dhcp6
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.proxydhcp import bound_udp_socket, start_endpoints


def _v6_only(sock):
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


def _joining_servers_group(interface):
    def configure(sock):
        _v6_only(sock)
        # Clients solicit to the link-scoped All_DHCP_Relay_Agents_and_Servers group.
        index = socket.if_nametoindex(interface)
        group = socket.inet_pton(socket.AF_INET6, dhcp6.ALL_DHCP_RELAY_AGENTS_AND_SERVERS)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group + struct.pack("@I", index))
    return configure


async def start_proxydhcp6(interface, booter, on_event, boot_file_sizes, memo):
    """Start proxy DHCPv6 on ``interface``; return a proxydhcp.ProxyDHCP to close.

    ``booter.server.ip`` must be an IPv6 address of ``interface``: it goes into every boot URL and receives
    EDK2's port-4011 Requests. ``boot_file_sizes`` maps iPXE binary names to sizes (option 60); ``memo`` is
    the dhcp6.ClientMemo that learns which MAC each client address belongs to.
    ``on_event(mac, step, **fields)`` is called for every answer and every ignored boot request.
    Raises PortBindError when a port cannot be opened.
    """
    if not dhcp6.HAS_SCAPY:
        raise ImportError("proxy DHCPv6 needs scapy to build replies:\n" + dhcp6.SCAPY_IMPORT_ERROR)
    our_duid = dhcp6.server_duid(interface_mac(interface))
    sizes = dict(boot_file_sizes)
    openers = [
        (dhcp6.SERVER_PORT, lambda: bound_udp_socket(socket.AF_INET6, dhcp6.SERVER_PORT, "::", interface, _joining_servers_group(interface))),
        (dhcp6.PXE_PORT, lambda: bound_udp_socket(socket.AF_INET6, dhcp6.PXE_PORT, booter.server.ip, interface, _v6_only)),
    ]
    return await start_endpoints(openers, lambda data, addr, port: dhcp6.handle(data, addr, port, booter, our_duid, memo, sizes),
                                 on_event, "proxy DHCPv6")
