# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""DHCPv4 as ProxyDHCP speaks it, as pure functions: bytes in, request values out, and reply bytes back.

A ProxyDHCP server sits beside the site's DHCP server: the site server hands out addresses, the proxy
only tells PXE firmware what to boot (PXE 2.1 spec; RFC 4578). Its offers therefore carry no address
(``yiaddr`` 0.0.0.0), echo option 60, and name the boot file. ``parse``, ``classify``, ``expects_answer``
and ``build_reply`` are the steps; ``policy.proxy`` runs them around ``Booter.decide``.

``parse`` is written by hand rather than with scapy: it sees every DHCP packet on the segment, most of
them not for us, and a fixed header plus a TLV walk costs microseconds where scapy costs ~450 µs. Its
only failure is ``MalformedPacket``. Replies are built by ``wire.bootp``, for the same reason: a rack
powering on sends thousands of DISCOVERs a second.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

from ansible_collections.nixie.provision.plugins.module_utils._errors import MalformedPacket
from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import DHCP_CLIENT_PORT, DHCP_SERVER_PORT, PXE_PORT
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import HTTP_CLIENT, PXE_CLIENT, BootSpec, Firmware, Reply, ServerAddress
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire.bootp import HEADER, HTYPE_ETHERNET, MAGIC_COOKIE, OPT_END, encode_reply

BOOTREQUEST = 1
DHCPDISCOVER = 1
DHCPOFFER = 2
DHCPREQUEST = 3
DHCPACK = 5

OPT_PAD = 0
OPT_MESSAGE_TYPE = 53
OPT_REQUESTED_ADDRESS = 50
OPT_SERVER_ID = 54
OPT_VENDOR_CLASS = 60
OPT_TFTP_SERVER_NAME = 66
OPT_BOOT_FILE = 67
OPT_VENDOR_SPECIFIC = 43
OPT_USER_CLASS = 77
OPT_RELAY_AGENT_INFO = 82
OPT_CLIENT_ARCH = 93
OPT_CLIENT_UUID = 97
OPT_IPXE_ENCAPSULATED = 175

BROADCAST_FLAG = 0x8000
ANY_ADDRESS = "0.0.0.0"
LIMITED_BROADCAST = "255.255.255.255"

# PXE option 43, sub-option 6 (PXE_DISCOVERY_CONTROL) = 8: "boot the file named in this offer; do not
# multicast/broadcast for boot servers or show a menu". Without it, PXE ROMs go looking for a boot server.
_PXE_DISCOVERY_CONTROL = bytes((6, 1, 8, OPT_END))
# iPXE option 175, sub-option 176 (no-pxedhcp) = 1: iPXE stops waiting ~2 s for further ProxyDHCP offers.
_IPXE_NO_PXEDHCP = bytes((176, 1, 1))


@dataclass(frozen=True)
class Request:
    """A parsed DHCP request. ``options`` maps option code to value (repeated options joined, RFC 3396).

    ``source`` is the UDP (address, port) it came from and ``local_port`` the port it arrived on
    (67 or 4011); both only decide where the reply goes.
    """

    xid: int
    flags: int
    ciaddr: str
    giaddr: str
    chaddr: bytes
    mac: str
    message_type: int
    options: Mapping[int, bytes] = field(repr=False)
    source: Optional[Tuple[str, int]] = None
    local_port: int = DHCP_SERVER_PORT


def _options(data: bytes) -> Dict[int, bytes]:
    parts = {}
    position = HEADER.size
    size = len(data)
    while position < size:
        code = data[position]
        if code == OPT_PAD:
            position += 1
            continue
        if code == OPT_END:
            break
        if position + 1 >= size:
            raise MalformedPacket("option %d has no length byte" % code)
        end = position + 2 + data[position + 1]
        if end > size:
            raise MalformedPacket("option %d runs past the end of the packet" % code)
        # RFC 3396: an option that appears more than once is one long option, split. Joined once at the
        # end, so a packet of thousands of 1-byte fragments costs linear, not quadratic, time.
        parts.setdefault(code, []).append(data[position + 2:end])
        position = end
    return {code: b"".join(values) for code, values in parts.items()}


def parse(data: bytes, source: Optional[Tuple[str, int]] = None, local_port: int = DHCP_SERVER_PORT) -> Optional[Request]:
    """Parse one UDP payload.

    Returns a Request for a DHCP BOOTREQUEST from an Ethernet client, None for anything well-formed
    that a ProxyDHCP server does not answer (replies, plain BOOTP, other hardware types), and raises
    MalformedPacket for anything else.
    """
    if len(data) < HEADER.size:
        raise MalformedPacket("%d bytes is shorter than a DHCP header" % len(data))
    op, htype, hlen, _hops, xid, _secs, flags, ciaddr, _yiaddr, _siaddr, giaddr, chaddr, _sname, _file, cookie = HEADER.unpack_from(data)
    if op != BOOTREQUEST or cookie != MAGIC_COOKIE or htype != HTYPE_ETHERNET or hlen != 6:
        return None
    options = _options(data)
    message_type = options.get(OPT_MESSAGE_TYPE)
    if message_type is None:
        return None
    if len(message_type) != 1:
        raise MalformedPacket("option 53 (message type) has %d bytes instead of 1" % len(message_type))
    return Request(
        xid=xid,
        flags=flags,
        ciaddr=socket.inet_ntoa(ciaddr),
        giaddr=socket.inet_ntoa(giaddr),
        chaddr=chaddr,
        mac=chaddr[:6].hex(":"),
        message_type=message_type[0],
        options=options,
        source=source,
        local_port=local_port,
    )


def _is_ipxe(options: Mapping[int, bytes]) -> bool:
    # iPXE sends user class "iPXE" (raw, not RFC 3004 length-prefixed) and its own option 175. Both are
    # also sent by QEMU's BIOS network ROM, which *is* iPXE, so that ROM gets the script straight away.
    return OPT_IPXE_ENCAPSULATED in options or b"iPXE" in options.get(OPT_USER_CLASS, b"")


def classify(request: Request) -> Optional[Firmware]:
    """Return the client's Firmware, or None when it is not a PXE or UEFI HTTP boot client."""
    vendor_class = request.options.get(OPT_VENDOR_CLASS, b"")
    if vendor_class.startswith(b"PXEClient"):
        kind = PXE_CLIENT
    elif vendor_class.startswith(b"HTTPClient"):
        kind = HTTP_CLIENT
    else:
        return None
    arch_option = request.options.get(OPT_CLIENT_ARCH, b"")
    if len(arch_option) >= 2:
        # RFC 4578: a list of 16-bit codes, the first being the one the client prefers.
        arch = int.from_bytes(arch_option[:2], "big")
    else:
        # Option 60 repeats it as "PXEClient:Arch:00007:UNDI:003000". With neither, the client predates
        # option 93, which only x86 BIOS PXE ROMs do; dnsmasq assumes the same.
        digits = vendor_class[len(kind) + 6:len(kind) + 11]
        arch = int(digits) if vendor_class[len(kind):len(kind) + 6] == b":Arch:" and digits.isdigit() else 0
    return Firmware(arch=arch, vendor_class=kind, is_ipxe=_is_ipxe(request.options))


def client_addresses(request: Request) -> List[str]:
    """The addresses ``request`` shows its client using or about to use.

    Option 50 of the REQUEST that takes the site server's lease (broadcast, so the proxy hears it, and sent by
    iPXE, EDK2 and the PXE ROMs alike), the ``ciaddr`` of a client that has one, and the source of a request
    that was not relayed (a relayed one comes from the relay).
    """
    found = []
    requested = request.options.get(OPT_REQUESTED_ADDRESS, b"")
    if len(requested) == 4:
        found.append(socket.inet_ntoa(requested))
    found.append(request.ciaddr)
    if request.source is not None and request.giaddr == ANY_ADDRESS:
        found.append(request.source[0])
    return [address for address in dict.fromkeys(found) if address not in (ANY_ADDRESS, LIMITED_BROADCAST)]


def relay_agent_info(request: Request) -> Optional[bytes]:
    """Option 82 as the relay of a relayed ``request`` added it, or None (not relayed, none added, or too long to echo)."""
    value = request.options.get(OPT_RELAY_AGENT_INFO)
    if request.giaddr == ANY_ADDRESS or value is None or len(value) > 255:
        return None
    return value


def circuit_id(request: Request) -> Optional[str]:
    """Sub-option 1 of a relayed request's option 82, the relay's name for the port the request came in on, printable."""
    value = relay_agent_info(request) or b""
    position = 0
    while position + 2 <= len(value):
        code, length = value[position], value[position + 1]
        if code == 1:
            return value[position + 2:position + 2 + length].decode("ascii", "backslashreplace")
        position += 2 + length
    return None


def expects_answer(request: Request, server_ip: str) -> bool:
    """Whether a ProxyDHCP server at ``server_ip`` answers ``request`` at all (given a PXE client)."""
    if request.local_port == PXE_PORT:
        # Port 4011 only carries requests meant for us: the PXE boot-server request after a proxy offer.
        return request.message_type == DHCPREQUEST
    if request.message_type == DHCPDISCOVER:
        return True
    # A broadcast REQUEST naming another server (option 54) is the client accepting the site DHCP
    # server's lease. An ACK from us with yiaddr 0.0.0.0 would race the real one, so only requests
    # naming us are answered.
    return request.message_type == DHCPREQUEST and request.options.get(OPT_SERVER_ID) == socket.inet_aton(server_ip)


# How a reply travels (reply_route): back to a port-4011 request's source, through the relay of a relayed request,
# broadcast, or unicast to the client's own address.
ROUTE_SOURCE = "source"
ROUTE_RELAY = "relay"
ROUTE_BROADCAST = "broadcast"
ROUTE_CLIENT = "client"
ROUTES = (ROUTE_SOURCE, ROUTE_RELAY, ROUTE_BROADCAST, ROUTE_CLIENT)


def reply_route(request: Request) -> Tuple[str, Tuple[str, int]]:
    """How the reply to ``request`` travels (one of the ROUTE_* names) and where it goes, as (address, port)."""
    if request.local_port == PXE_PORT and request.source is not None:
        return ROUTE_SOURCE, request.source
    if request.giaddr != ANY_ADDRESS:
        # Relayed (RFC 1542): the relay agent listens on the server port and forwards to the client.
        return ROUTE_RELAY, (request.giaddr, DHCP_SERVER_PORT)
    if request.flags & BROADCAST_FLAG or request.ciaddr == ANY_ADDRESS:
        # Without an address the client cannot receive unicast, and a proxy has no yiaddr to ARP for
        # (which is how dnsmasq unicasts to iPXE, which leaves the broadcast flag clear).
        return ROUTE_BROADCAST, (LIMITED_BROADCAST, DHCP_CLIENT_PORT)
    return ROUTE_CLIENT, (request.ciaddr, DHCP_CLIENT_PORT)


def reply_destination(request: Request) -> Tuple[str, int]:
    """Where the reply to ``request`` goes, as (address, port)."""
    return reply_route(request)[1]


def build_reply(request: Request, spec: BootSpec, server: ServerAddress) -> Reply:
    """Build the proxy reply telling ``request``'s client to boot ``spec``; return a Reply.

    A DISCOVER gets an OFFER, anything else an ACK. ``server`` is the ServerAddress: its IP becomes
    siaddr, the server identifier and the TFTP server name.
    """
    message_type = DHCPOFFER if request.message_type == DHCPDISCOVER else DHCPACK
    server_id = socket.inet_aton(server.ip)
    boot_file = spec.boot_file.encode("ascii")
    options = [
        (OPT_MESSAGE_TYPE, bytes((message_type,))),
        (OPT_SERVER_ID, server_id),
        (OPT_VENDOR_CLASS, spec.vendor_class.encode("ascii")),
        (OPT_TFTP_SERVER_NAME, server.ip.encode("ascii")),
        (OPT_BOOT_FILE, boot_file),
    ]
    if spec.vendor_class == PXE_CLIENT:
        options.append((OPT_VENDOR_SPECIFIC, _PXE_DISCOVERY_CONTROL))
    uuid = request.options.get(OPT_CLIENT_UUID)
    if uuid is not None and len(uuid) <= 255:
        # PXE 2.1: a server answering a client that sent its UUID must send it back, or some ROMs
        # discard the offer.
        options.append((OPT_CLIENT_UUID, uuid))
    if _is_ipxe(request.options):
        options.append((OPT_IPXE_ENCAPSULATED, _IPXE_NO_PXEDHCP))
    agent_info = relay_agent_info(request)
    if agent_info is not None:
        # RFC 3046 2.2: a server echoes the relay's option 82 in every reply; relays that check it (ISC dhcrelay -a,
        # switches with "information check") drop a reply whose option 82 is not what they sent.
        options.append((OPT_RELAY_AGENT_INFO, agent_info))
    payload = encode_reply(
        xid=request.xid,
        flags=request.flags & BROADCAST_FLAG,
        # RFC 2131 table 3: an ACK repeats the client's ciaddr, an OFFER leaves it 0.
        ciaddr=request.ciaddr if message_type == DHCPACK else ANY_ADDRESS,
        siaddr=server.ip,
        giaddr=request.giaddr,
        chaddr=request.chaddr,
        boot_file=boot_file,
        options=options,
    )
    return Reply(payload=payload, destination=reply_destination(request), message_type=message_type)
