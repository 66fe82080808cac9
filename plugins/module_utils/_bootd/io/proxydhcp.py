# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ProxyDHCP sockets: asyncio UDP endpoints on ports 67 and 4011 that hand every datagram to ``Dhcp4Proxy``.

All decisions live in ``policy.proxy`` and the Booter; this module only opens the ports and sends the replies.

A reply to a client's own address (its ``ciaddr``, or the source of a port-4011 request) never waits on ARP:
the kernel would hold it, and the port's socket with it, until ARP for that address gives up (seconds), and
anyone can name an address nobody has. The client's MAC is in the request, so such a reply goes out as a frame
to that MAC at once, as dnsmasq does by writing the MAC into the neighbour table first, but without teaching
the kernel anything a stranger said. Replies to relays (``giaddr``) and to other subnets go out through a raw
socket of their own, with a small send buffer, so that those waiting on ARP hold only each other up.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import DHCP_SERVER_PORT, PXE_PORT
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.udp import (
    SO_BINDTODEVICE, Endpoints, OnEvent, Sender, bound_udp_socket, start_endpoints,
)
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Reply
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.booter import Booter
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.proxy import Dhcp4Proxy
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire import dhcp4
from ansible_collections.nixie.provision.plugins.module_utils._netif import on_link_networks


# A rack powering on sends thousands of DISCOVERs within a second. The default buffer (about 200 KiB, some 250
# requests) overflows whenever the loop is busy elsewhere for a few tens of milliseconds; this one holds over a
# second of such a burst. Root may exceed net.core.rmem_max (SO_RCVBUFFORCE); anyone else gets up to it.
RECEIVE_BUFFER = 4 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def _allow_broadcast(sock: socket.socket) -> None:
    # Port 67 is bound to 0.0.0.0 because clients without an address broadcast to it, and we answer them
    # by broadcast when they cannot take unicast yet.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)


ETH_P_IP = 0x0800
# Room for a few dozen replies: enough for relays that answer ARP, and all a relay flood can hold up.
ROUTED_SEND_BUFFER = 64 * 1024
_IP_HEADER = struct.Struct("!BBHHHBBH4s4s")
_UDP_HEADER = struct.Struct("!HHHH")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_udp_packet(source: str, source_port: int, destination: str, destination_port: int, payload: bytes) -> bytes:
    """An IPv4 packet (DF, TTL 64) carrying ``payload`` in a UDP datagram, both checksums filled in."""
    src, dst = socket.inet_aton(source), socket.inet_aton(destination)
    length = _UDP_HEADER.size + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_UDP, length)
    udp_sum = _checksum(pseudo + _UDP_HEADER.pack(source_port, destination_port, length, 0) + payload) or 0xFFFF
    header = _IP_HEADER.pack(0x45, 0, _IP_HEADER.size + length, 0, 0x4000, 64, socket.IPPROTO_UDP, 0, src, dst)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + _UDP_HEADER.pack(source_port, destination_port, length, udp_sum) + payload


class LinkSender(Sender):
    """ProxyDHCP's Sender: broadcasts from the port's socket, replies to a client's own address as a frame to its MAC,
    anything else (relays, other subnets) through a raw socket with a send buffer of its own.

    ``server_ip`` is the replies' source address; the two extra sockets are opened here and closed by ``close``.
    """

    def __init__(self, interface: str, server_ip: str) -> None:
        super().__init__("ProxyDHCP")
        self._interface = interface
        self._server_ip = server_ip
        # Read once: a transient server's routes do not move under it, and a packet must not cost a file read.
        self._on_link = on_link_networks(interface)
        # Protocol 0 and IPPROTO_RAW: both sockets only send, the kernel hands them nothing it receives.
        self._frames = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
        self._routed = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        for sock in (self._frames, self._routed):
            sock.setblocking(False)
        self._frames.bind((interface, 0))
        self._routed.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
        self._routed.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, ROUTED_SEND_BUFFER)

    def send(self, sock: socket.socket, port: int, reply: Reply, mac: str) -> bool:
        address, destination_port = reply.destination
        if address == dhcp4.LIMITED_BROADCAST:
            return self.send_on(sock, port, reply.payload, reply.destination)
        packet = ip_udp_packet(self._server_ip, port, address, destination_port, reply.payload)
        if destination_port != DHCP_SERVER_PORT and any(ipaddress.IPv4Address(address) in network for network in self._on_link):
            return self.send_on(self._frames, port, packet, (self._interface, ETH_P_IP, 0, 0, bytes.fromhex(mac.replace(":", ""))))
        return self.send_on(self._routed, port, packet, (address, 0))

    def close(self) -> None:
        super().close()
        self._frames.close()
        self._routed.close()


async def start_proxydhcp(interface: str, booter: Booter, on_event: OnEvent) -> Endpoints:
    """Start ProxyDHCP on ``interface``; return the Endpoints to close.

    Listens on UDP 67 (0.0.0.0, bound to ``interface``) and UDP 4011 (``booter.server.ip``, which must be
    an address of ``interface``). ``on_event(mac, step, **fields)`` is called for every offer, ack and
    ignored PXE request (``contract.STEP_DHCP_*``). Raises PortBindError when either port cannot be opened.
    """
    openers = [
        (DHCP_SERVER_PORT, lambda: bound_udp_socket(socket.AF_INET, DHCP_SERVER_PORT, dhcp4.ANY_ADDRESS, interface, _allow_broadcast)),
        (PXE_PORT, lambda: bound_udp_socket(socket.AF_INET, PXE_PORT, booter.server.ip, interface, _allow_broadcast)),
    ]
    return await start_endpoints(openers, Dhcp4Proxy(booter).handle, on_event, lambda: LinkSender(interface, booter.server.ip))
