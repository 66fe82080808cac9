# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""DHCPv6 as a boot proxy speaks it, as pure functions: bytes in, request values out, and reply bytes back.

The site's DHCPv6 server hands out addresses; Nixie only tells boot firmware what to boot (RFC 5970 options
59 and 60). Its answers carry no IA_NA, so the site server stays authoritative. ``parse``, ``classify``,
``expects_answer`` and ``build_reply`` are the steps; ``policy.proxy`` runs them around ``Booter.decide``.

What EDK2's PXEv6 client (NetworkPkg/UefiPxeBcDxe/PxeBcDhcp6.c, OVMF 2022.11) accepts as a proxy offer:
an Advertise with its transaction id, its client id echoed and any server id (Dhcp6Dxe drops it otherwise),
no IA_NA, no failing status code, and a vendor class option of enterprise 343 whose first class string
starts with "PXEClient". EDK2 files that as a "ProxyBinl" offer: after leasing an address from the site
server it parses the host out of the offer's option 59 (``tftp://[address]/file``, nothing else) and sends
a Request, holding the offer's server id, from its new address to that host's UDP port 4011; only the Reply
to that Request (which must hold option 59) is what it boots from. Option 60's first parameter, when
present, must be the boot file size in 512-byte blocks as 1-5 decimal digits, or the boot aborts.
EDK2's HTTPv6 client (HttpBootDhcp6.c) takes an Advertise without IA_NA whose vendor class reads
"HTTPClient" and whose option 59 is an http:// URL, and fetches it directly.

iPXE (user class "iPXE", DUID-LL) is answered with the URL of its script, but only takes it where the site's
router advertisements send it to stateless DHCPv6 (Information-request): in stateful mode iPXE ignores
every Advertise without an address and keeps only the options of the server that leased it one.

``parse`` walks the options by hand, as dhcp4 does: every client's Solicit on the link reaches us. Its only
failure is ``MalformedPacket``. Replies are built with ``struct`` too: scapy's layers would cost the server
about 35 MiB of memory for the few packets a boot needs.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

from ansible_collections.nixie.provision.plugins.module_utils._errors import MalformedPacket
from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import DHCP6_CLIENT_PORT, DHCP6_SERVER_PORT, PXE_PORT
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import HTTP_CLIENT, PXE_CLIENT, BootSpec, Firmware, Reply
from ansible_collections.nixie.provision.plugins.module_utils._mac import mac_bytes

ALL_DHCP_RELAY_AGENTS_AND_SERVERS = "ff02::1:2"

SOLICIT = 1
ADVERTISE = 2
REQUEST = 3
CONFIRM = 4
RENEW = 5
REBIND = 6
REPLY = 7
RELEASE = 8
DECLINE = 9
INFORMATION_REQUEST = 11
# Messages a client sends to servers directly; relay and server messages are never answered.
CLIENT_MESSAGES = frozenset((SOLICIT, REQUEST, CONFIRM, RENEW, REBIND, RELEASE, DECLINE, INFORMATION_REQUEST))

OPT_CLIENTID = 1
OPT_SERVERID = 2
OPT_IA_NA = 3
OPT_IAADDR = 5
OPT_USER_CLASS = 15
OPT_VENDOR_CLASS = 16
OPT_BOOTFILE_URL = 59
OPT_BOOTFILE_PARAM = 60
OPT_CLIENT_ARCH = 61

DUID_LLT = 1
DUID_LL = 3
HTYPE_ETHERNET = 1
# IANA enterprise number of Intel, under which PXE and UEFI put their "PXEClient"/"HTTPClient" classes.
ENTERPRISE_PXE = 343
# PxeBcExtractBootFileParam reads at most 5 digits into a UINT16 count of 512-byte blocks.
_MAX_BOOT_FILE_BLOCKS = 0xFFFF
_BLOCK = 512

_HEADER = struct.Struct("!I")  # message type (8 bits) and transaction id (24 bits)
_OPTION = struct.Struct("!HH")
_IA_NA_FIXED = 12  # IAID, T1, T2


@dataclass(frozen=True)
class Request:
    """A parsed DHCPv6 client message. ``options`` maps option code to the value of its first occurrence.

    ``mac`` is the client's MAC address (from its DUID or its link-local address) or None; ``source`` is the
    socket address it came from and ``local_port`` the port it arrived on (547 or 4011).
    """

    message_type: int
    xid: int
    options: Mapping[int, bytes] = field(repr=False)
    mac: Optional[str]
    source: Optional[Tuple] = None
    local_port: int = DHCP6_SERVER_PORT

    @property
    def client_duid(self) -> Optional[bytes]:
        return self.options.get(OPT_CLIENTID)


def server_duid(mac: str) -> bytes:
    """The server's DUID-LL from the MAC of its boot interface: stable across restarts, as RFC 8415 asks."""
    return struct.pack("!HH", DUID_LL, HTYPE_ETHERNET) + mac_bytes(mac)


def mac_from_duid(duid: Optional[bytes]) -> Optional[str]:
    """The MAC inside a DUID-LL or DUID-LLT of an Ethernet client, else None (DUID-UUID, DUID-EN...)."""
    if duid is None or len(duid) < 4:
        return None
    duid_type, htype = struct.unpack_from("!HH", duid)
    if htype != HTYPE_ETHERNET:
        return None
    if duid_type == DUID_LL and len(duid) == 10:
        return duid[4:].hex(":")
    if duid_type == DUID_LLT and len(duid) == 14:
        return duid[8:].hex(":")
    return None


def mac_from_link_local(address: str) -> Optional[str]:
    """The MAC behind a modified EUI-64 link-local address (fe80::5054:ff:fe12:3456), else None.

    Boot firmware (EDK2, iPXE) forms its link-local address this way; operating systems with stable or
    private interface identifiers (RFC 7217, 8981) do not, and their addresses yield None.
    """
    try:
        ip = ipaddress.IPv6Address(address.split("%", 1)[0])
    except (ipaddress.AddressValueError, AttributeError):
        return None
    packed = ip.packed
    if not ip.is_link_local or packed[11:13] != b"\xff\xfe":
        return None
    return bytes((packed[8] ^ 0x02,) + tuple(packed[9:11]) + tuple(packed[13:16])).hex(":")


def _options(data: bytes, position: int = _HEADER.size) -> Dict[int, bytes]:
    options = {}
    size = len(data)
    while position < size:
        if position + _OPTION.size > size:
            raise MalformedPacket("option header at byte %d runs past the end of the packet" % position)
        code, length = _OPTION.unpack_from(data, position)
        end = position + _OPTION.size + length
        if end > size:
            raise MalformedPacket("option %d runs past the end of the packet" % code)
        options.setdefault(code, data[position + _OPTION.size:end])
        position = end
    return options


def parse(data: bytes, source: Optional[Tuple] = None, local_port: int = DHCP6_SERVER_PORT) -> Optional[Request]:
    """Parse one UDP payload.

    Returns a Request for a client message, None for well-formed messages a proxy never answers (server
    and relay messages), and raises MalformedPacket for anything else. ``source`` is the socket address
    tuple; its link-local address supplies the MAC when the DUID holds none.
    """
    if len(data) < _HEADER.size:
        raise MalformedPacket("%d bytes is shorter than a DHCPv6 header" % len(data))
    word = _HEADER.unpack_from(data)[0]
    message_type = word >> 24
    if message_type not in CLIENT_MESSAGES:
        return None
    options = _options(data)
    mac = mac_from_duid(options.get(OPT_CLIENTID))
    if mac is None and source:
        mac = mac_from_link_local(source[0])
    return Request(message_type=message_type, xid=word & 0xFFFFFF, options=options, mac=mac, source=source, local_port=local_port)


def client_addresses(request: Request) -> List[str]:
    """The addresses ``request`` shows its client using or about to use: its source (link-local for a Solicit,
    the leased address for EDK2's port-4011 Request), and the IA_NA address of the Request that takes the site
    server's lease (multicast, so the proxy hears it; iPXE and EDK2 both name the address there)."""
    found = []
    if request.source:
        found.append(str(ipaddress.IPv6Address(request.source[0].split("%", 1)[0])))
    ia_na = request.options.get(OPT_IA_NA, b"")
    if len(ia_na) > _IA_NA_FIXED:
        try:
            address = _options(ia_na, _IA_NA_FIXED).get(OPT_IAADDR, b"")
        except MalformedPacket:
            address = b""
        if len(address) >= 16:
            found.append(str(ipaddress.IPv6Address(address[:16])))
    return [address for address in dict.fromkeys(found) if address != "::"]


def _class_strings(value: bytes) -> List[bytes]:
    """The strings of a user class (RFC 8415 21.15) or of a vendor class after its enterprise number."""
    strings = []
    position = 0
    while position + 2 <= len(value):
        length = struct.unpack_from("!H", value, position)[0]
        strings.append(value[position + 2:position + 2 + length])
        position += 2 + length
    return strings


def _is_ipxe(options: Mapping[int, bytes]) -> bool:
    return b"iPXE" in _class_strings(options.get(OPT_USER_CLASS, b""))


def classify(request: Request) -> Optional[Firmware]:
    """Return the client's Firmware, or None when it is neither a PXE/HTTP boot client nor iPXE."""
    vendor_class = request.options.get(OPT_VENDOR_CLASS, b"")
    strings = _class_strings(vendor_class[4:]) if vendor_class[:4] == struct.pack("!I", ENTERPRISE_PXE) else []
    first = strings[0] if strings else b""
    is_ipxe = _is_ipxe(request.options)
    if first.startswith(b"HTTPClient"):
        kind = HTTP_CLIENT
    elif first.startswith(b"PXEClient") or is_ipxe:
        # iPXE's DHCPv6 sends neither vendor class nor architecture, only its user class.
        kind = PXE_CLIENT
    else:
        return None
    arch_option = request.options.get(OPT_CLIENT_ARCH, b"")
    # RFC 5970: a list of 16-bit codes, the first being the one the client prefers; -1 when absent.
    arch = struct.unpack_from("!H", arch_option)[0] if len(arch_option) >= 2 else -1
    return Firmware(arch=arch, vendor_class=kind, is_ipxe=is_ipxe)


def expects_answer(request: Request, our_duid: bytes) -> bool:
    """Whether a proxy with server DUID ``our_duid`` answers ``request`` at all (given a boot client)."""
    server_id = request.options.get(OPT_SERVERID)
    if request.local_port == PXE_PORT:
        # EDK2's boot-file Request after a proxy offer; it names us, but a client may leave the id out.
        return request.message_type == REQUEST and server_id in (None, our_duid)
    if request.message_type == SOLICIT:
        return server_id is None
    if request.message_type == INFORMATION_REQUEST:
        return server_id in (None, our_duid)
    # Requests, Renews and the rest name the site server, which alone can answer them.
    return request.message_type == REQUEST and server_id == our_duid


def reply_destination(request: Request) -> Tuple[str, int, int, int]:
    """Where the reply to ``request`` goes: the client's source address and, on port 4011, its port."""
    address = request.source[0]
    scope = request.source[3] if len(request.source) > 3 else 0
    port = request.source[1] if request.local_port == PXE_PORT else DHCP6_CLIENT_PORT
    return (address, port, 0, scope)


def boot_file_url(spec: BootSpec, server_ip: str) -> str:
    """Option 59: an HTTP URL as the booter made it, or a TFTP file name as ``tftp://[address]/name``."""
    if "://" in spec.boot_file:
        return spec.boot_file
    return "tftp://[%s]/%s" % (server_ip, spec.boot_file)


def boot_file_param(spec: BootSpec, boot_file_sizes: Mapping[str, int]) -> Optional[bytes]:
    """Option 60's value for EDK2's TFTP client (the size in 512-byte blocks), or None to leave it out."""
    size = boot_file_sizes.get(spec.boot_file)
    if "://" in spec.boot_file or size is None:
        return None
    blocks = -(-size // _BLOCK)
    if blocks > _MAX_BOOT_FILE_BLOCKS:
        return None
    digits = str(blocks).encode("ascii")
    return struct.pack("!H", len(digits)) + digits


def build_reply(request: Request, spec: BootSpec, server_ip: str, our_duid: bytes, boot_file_sizes: Mapping[str, int]) -> Reply:
    """Build the proxy answer telling ``request``'s client to boot ``spec``; return a Reply.

    A Solicit gets an Advertise, anything else a Reply; neither holds an address. ``boot_file_sizes`` maps
    TFTP file names to their size in bytes, for option 60.
    """
    message_type = ADVERTISE if request.message_type == SOLICIT else REPLY
    options = [] if request.client_duid is None else [(OPT_CLIENTID, request.client_duid)]
    vendor_class = spec.vendor_class.encode("ascii")
    options += [
        (OPT_SERVERID, our_duid),
        # RFC 8415 21.17: the enterprise number, then each vendor-class-data as a 16-bit length and its bytes.
        (OPT_VENDOR_CLASS, struct.pack("!IH", ENTERPRISE_PXE, len(vendor_class)) + vendor_class),
        (OPT_BOOTFILE_URL, boot_file_url(spec, server_ip).encode("ascii")),
    ]
    param = boot_file_param(spec, boot_file_sizes)
    if param is not None:
        options.append((OPT_BOOTFILE_PARAM, param))
    payload = _HEADER.pack(message_type << 24 | request.xid & 0xFFFFFF) + b"".join(
        _OPTION.pack(code, len(value)) + value for code, value in options)
    return Reply(payload=payload, destination=reply_destination(request), message_type=message_type)
