# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Proxy DHCPv6 sockets: UDP 547 joined to ff02::1:2 on the boot interface, and UDP 4011 on the server's
IPv6 address, both handing every datagram to ``dhcp6``.

All decisions live in ``dhcp6.handle`` and the Booter; this module only receives, sends and reports.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
import struct

from ansible_collections.nixie.provision.plugins.module_utils._bootd import dhcp6
from ansible_collections.nixie.provision.plugins.module_utils._bootd.proxydhcp import SO_BINDTODEVICE, PortBindError

_LOG = logging.getLogger(__name__)
# ioctl(2) request that reads an interface's hardware address (linux/sockios.h). Unlike /sys/class/net, it
# answers for the network namespace of the calling thread.
_SIOCGIFHWADDR = 0x8927


def interface_mac(interface):
    """The MAC address of ``interface``, for the server DUID."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        answer = fcntl.ioctl(probe.fileno(), _SIOCGIFHWADDR, struct.pack("256s", interface.encode()[:15]))
    return answer[18:24].hex(":")


def _open_socket(port, address, interface, join_group):
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        # REUSEADDR: a restarted server must not wait for the old socket (see proxydhcp.py).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # Clients solicit to a link-scoped multicast group: the device binding keeps us to the boot network
        # and sends replies to link-local addresses out of that interface.
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
        if join_group:
            index = socket.if_nametoindex(interface)
            group = socket.inet_pton(socket.AF_INET6, dhcp6.ALL_DHCP_RELAY_AGENTS_AND_SERVERS)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group + struct.pack("@I", index))
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise PortBindError(port, address, interface, exc) from exc
    sock.setblocking(False)
    return sock


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, port, context, on_event):
        self._port = port
        self._context = context
        self._on_event = on_event
        self._transport = None

    def connection_made(self, transport):
        self._transport = transport

    def datagram_received(self, data, addr):
        booter, our_duid, memo, sizes = self._context
        outcome = dhcp6.handle(data, addr, self._port, booter, our_duid, memo, sizes)
        if outcome is None:
            return
        if outcome.reply is not None:
            # Reply before reporting: EDK2 retransmits its Solicit after ~1 s, the event log can wait.
            self._transport.sendto(outcome.reply.payload, outcome.reply.destination)
        self._on_event(outcome.mac, outcome.step, **outcome.fields)

    def error_received(self, exc):
        _LOG.warning("proxy DHCPv6 port %d: send failed: %s", self._port, exc)


class ProxyDHCP6:
    """The running proxy DHCPv6 endpoints; ``close()`` stops them."""

    def __init__(self, transports):
        self.transports = transports

    def close(self):
        for transport in self.transports:
            transport.close()


async def start_proxydhcp6(interface, booter, on_event, boot_file_sizes, memo):
    """Start proxy DHCPv6 on ``interface``; return a ProxyDHCP6 to close.

    ``booter.server.ip`` must be an IPv6 address of ``interface``: it goes into every boot URL and receives
    EDK2's port-4011 Requests. ``boot_file_sizes`` maps iPXE binary names to sizes (option 60); ``memo`` is
    the dhcp6.ClientMemo that learns which MAC each client address belongs to.
    ``on_event(mac, step, **fields)`` is called for every answer and every ignored boot request.
    Raises PortBindError when a port cannot be opened.
    """
    if not dhcp6.HAS_SCAPY:
        raise ImportError("proxy DHCPv6 needs scapy to build replies:\n" + dhcp6.SCAPY_IMPORT_ERROR)
    loop = asyncio.get_running_loop()
    context = (booter, dhcp6.server_duid(interface_mac(interface)), memo, dict(boot_file_sizes))
    sockets = []
    try:
        sockets.append((dhcp6.SERVER_PORT, _open_socket(dhcp6.SERVER_PORT, "::", interface, join_group=True)))
        sockets.append((dhcp6.PXE_PORT, _open_socket(dhcp6.PXE_PORT, booter.server.ip, interface, join_group=False)))
    except PortBindError:
        for _port, sock in sockets:
            sock.close()
        raise
    server = ProxyDHCP6([])
    try:
        for port, sock in sockets:
            transport, _protocol = await loop.create_datagram_endpoint(lambda port=port: _Endpoint(port, context, on_event), sock=sock)
            server.transports.append(transport)
    except BaseException:
        server.close()
        for _port, sock in sockets:
            sock.close()
        raise
    return server
