"""Wake-on-LAN wire format, and a sender for the lab's own tests of the power daemon.

A magic packet is six 0xFF bytes, then the target MAC sixteen times, optionally followed by a
4- or 6-byte SecureOn password. NICs look for it in UDP datagrams (customarily to port 9 or 7)
and in raw Ethernet frames of EtherType 0x0842. Nixie's own sender is the `nixie.provision.wake`
module; this one exists so the lab can also send what that module does not (raw frames, IPv6
multicast, passwords, malformed packets) to check that the power daemon receives like a NIC.

Run as `python -m nixielab.wol --via udp4|udp6|ethernet --interface IFACE MAC` inside a namespace.
"""

from __future__ import annotations

import argparse
import socket

ETHERTYPE_WOL = 0x0842
SYNC_STREAM = b"\xff" * 6
MAC_REPEATS = 16
MAGIC_LENGTH = len(SYNC_STREAM) + 6 * MAC_REPEATS  # 102
SECUREON_LENGTHS = (4, 6)
WOL_PORTS = (9, 7)


def mac_bytes(mac: str) -> bytes:
    """`aa:bb:cc:dd:ee:ff` as six bytes."""
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError("%r is not a MAC address" % mac)
    return raw


def format_mac(raw: bytes) -> str:
    return ":".join("%02x" % byte for byte in raw)


def magic_packet(mac: str, password: bytes = b"") -> bytes:
    """The magic packet waking `mac`, with an optional SecureOn password."""
    if password and len(password) not in SECUREON_LENGTHS:
        raise ValueError("a SecureOn password has 4 or 6 bytes, not %d" % len(password))
    return SYNC_STREAM + mac_bytes(mac) * MAC_REPEATS + password


def parse_magic_packet(payload: bytes) -> tuple[str, bytes]:
    """(MAC, SecureOn password) carried by `payload`; ValueError saying what is wrong otherwise."""
    password_length = len(payload) - MAGIC_LENGTH
    if password_length not in (0, *SECUREON_LENGTHS):
        raise ValueError("length %d: a magic packet has %d bytes, plus 4 or 6 for a password" % (len(payload), MAGIC_LENGTH))
    if not payload.startswith(SYNC_STREAM):
        raise ValueError("does not start with six 0xFF bytes")
    target = payload[6:12]
    if payload[6:MAGIC_LENGTH] != target * MAC_REPEATS:
        raise ValueError("the MAC is not repeated 16 times")
    return format_mac(target), payload[MAGIC_LENGTH:]


def send(payload: bytes, via: str, interface: str, destination: str | None = None, port: int = 9) -> None:
    """Send `payload` once out of `interface`: as a UDP broadcast (udp4), to an IPv6 multicast group (udp6),
    or as an Ethernet broadcast frame of EtherType 0x0842 (ethernet)."""
    if via == "udp4":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            sender.sendto(payload, (destination or "255.255.255.255", port))
    elif via == "udp6":
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sender:
            sender.sendto(payload, (destination or "ff02::1", port, 0, socket.if_nametoindex(interface)))
    elif via == "ethernet":
        with socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETHERTYPE_WOL)) as sender:
            broadcast = b"\xff" * 6 if destination is None else mac_bytes(destination)
            sender.sendto(payload, (interface, ETHERTYPE_WOL, 0, 0, broadcast))
    else:
        raise ValueError("via must be udp4, udp6 or ethernet, not %r" % via)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nixielab.wol", description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("mac", nargs="?", help="MAC address to wake")
    parser.add_argument("--via", choices=("udp4", "udp6", "ethernet"), default="udp4")
    parser.add_argument("--interface", required=True)
    parser.add_argument("--to", dest="destination", help="IP address (udp4/udp6) or MAC (ethernet); default broadcast")
    parser.add_argument("--port", type=int, default=9)
    parser.add_argument("--password", default="", help="SecureOn password, hex")
    parser.add_argument("--payload", help="send these hex bytes instead of a magic packet (malformed-packet tests)")
    args = parser.parse_args(argv)
    if (args.mac is None) == (args.payload is None):
        parser.error("give either a MAC or --payload")
    payload = bytes.fromhex(args.payload) if args.payload else magic_packet(args.mac, bytes.fromhex(args.password))
    send(payload, args.via, args.interface, args.destination, args.port)


if __name__ == "__main__":
    main()
