"""The client side of PXE DHCP, by hand: DISCOVERs as firmware sends them, and the boot file of an offer.

scapy would do, but costs ~450 µs a packet and 1.4 s to import: too slow for a sender that must keep up
with the server it measures.
"""

from __future__ import annotations

import socket
import struct

SERVER_PORT, CLIENT_PORT = 67, 68
MAGIC_COOKIE = b"\x63\x82\x53\x63"
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s4s")
# SO_BINDTODEVICE is missing from some Python builds; 25 on every Linux architecture.
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def mac_bytes(mac):
    return bytes.fromhex(mac.replace(":", ""))


def discover(xid, mac, ipxe=False, arch=0, boot_item=None, ciaddr="0.0.0.0"):
    """A DHCPDISCOVER as QEMU's PXE ROM sends it; ``ipxe`` adds the user class and option 175 of iPXE.

    With ``boot_item`` (a PXE menu item type) it is the DHCPREQUEST a PXE client sends to port 4011 instead,
    from the address (``ciaddr``) the site's DHCP server gave it.
    """
    header = _HEADER.pack(1, 1, 6, 0, xid, 0, 0x8000, socket.inet_aton(ciaddr), bytes(4), bytes(4), bytes(4),
                          mac_bytes(mac) + bytes(10), bytes(64), bytes(128), MAGIC_COOKIE)
    vendor = b"PXEClient:Arch:%05d:UNDI:002001" % arch
    options = [(53, b"\x01" if boot_item is None else b"\x03"), (93, struct.pack("!H", arch)), (94, b"\x01\x02\x01"), (60, vendor)]
    if ipxe:
        options += [(77, b"iPXE"), (175, b"\xb1\x05\x01\x10\xec\x10\x00")]
    if boot_item is not None:
        options.append((43, b"\x47\x04" + struct.pack("!H", boot_item) + b"\x00\x00\xff"))
    body = b"".join(bytes((code, len(value))) + value for code, value in options) + b"\xff"
    return header + body + bytes(max(0, 300 - len(header) - len(body)))


def parse_offer(packet):
    """Return (xid, boot file, server address, PXE menu item type or None) of a BOOTREPLY, or None for anything else."""
    if len(packet) < _HEADER.size:
        return None
    fields = _HEADER.unpack_from(packet)
    if fields[0] != 2 or fields[14] != MAGIC_COOKIE:
        return None
    boot_file = fields[13].rstrip(b"\0")
    menu_item = None
    position = _HEADER.size
    while position + 1 < len(packet) and packet[position] != 255:
        code, length = packet[position], packet[position + 1]
        value = packet[position + 2:position + 2 + length]
        if code == 67:
            boot_file = value.rstrip(b"\0")
        elif code == 43:
            menu_item = _first_menu_item(value)
        position += 1 if code == 0 else 2 + length
    return fields[4], boot_file.decode("ascii", "replace"), socket.inet_ntoa(fields[9]), menu_item


def _first_menu_item(vendor):
    """The type of the first PXE boot menu entry (sub-option 9) in option 43, or None."""
    position = 0
    while position + 1 < len(vendor) and vendor[position] != 255:
        code, length = vendor[position], vendor[position + 1]
        if code == 9 and length >= 2:
            return struct.unpack_from("!H", vendor, position + 2)[0]
        position += 2 + length
    return None


def client_socket(interface):
    """A socket on UDP 68 of ``interface`` that sends broadcasts and receives the broadcast replies."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
    sock.bind(("0.0.0.0", CLIENT_PORT))
    return sock
