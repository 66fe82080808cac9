# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""This machine's network interfaces, by name: does one exist, what are its IPv4 and global IPv6 addresses, and which
IPv4 networks are on its link."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from typing import List

from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError

# ioctl(2) requests that read an interface's primary IPv4 address and its hardware address (linux/sockios.h).
# Unlike /sys/class/net, they answer for the network namespace of the calling thread.
_SIOCGIFADDR = 0x8915
_SIOCGIFHWADDR = 0x8927
# /proc/net/if_inet6 columns: address, ifindex, prefix length, scope, flags (hex), name. Scope 0 is global;
# temporary (privacy), DAD-failed, deprecated and tentative addresses (linux/if_addr.h) change or vanish.
_SCOPE_GLOBAL = 0x00
_UNSTABLE_FLAGS = 0x01 | 0x08 | 0x20 | 0x40
# Configured by hand or by the network manager, not formed from a router's advertisement (SLAAC), whose prefix the
# router may change: the address a boot server should put in its URLs when the interface has both.
_PERMANENT_FLAG = 0x80


class InterfaceError(NixieError):
    """The named interface does not exist or lacks what was asked of it."""


def require_interface(name: str) -> None:
    """Raise InterfaceError unless an interface called ``name`` exists in this network namespace."""
    try:
        socket.if_nametoindex(name)
    except (OSError, ValueError):
        raise InterfaceError("no network interface named %r on this machine" % name) from None


def interface_ipv4(name: str) -> str:
    """Return the primary IPv4 address of interface ``name``."""
    require_interface(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            raise InterfaceError("%s has no IPv4 address" % name) from None
    return socket.inet_ntoa(answer[20:24])


def interface_ipv6(name: str, if_inet6: str = "/proc/net/if_inet6") -> str:
    """Return a stable global IPv6 address of interface ``name``: a configured one before one from SLAAC."""
    require_interface(name)
    candidates = []
    try:
        with open(if_inet6, encoding="ascii") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) == 6 and fields[5] == name and int(fields[3], 16) == _SCOPE_GLOBAL:
                    flags = int(fields[4], 16)
                    if not flags & _UNSTABLE_FLAGS:
                        candidates.append((not flags & _PERMANENT_FLAG, socket.inet_ntop(socket.AF_INET6, bytes.fromhex(fields[0]))))
    except OSError:
        pass
    if not candidates:
        raise InterfaceError("%s has no global IPv6 address" % name)
    # min() keeps the first of equals: among them the kernel's order stands.
    return min(candidates, key=lambda candidate: candidate[0])[1]


def interface_address(name: str, family: str = "auto") -> str:
    """The address to serve on: ``ipv4``, ``ipv6``, or ``auto`` (IPv4 where the interface has one, else IPv6)."""
    if family == "ipv6":
        return interface_ipv6(name)
    if family == "ipv4":
        return interface_ipv4(name)
    require_interface(name)
    try:
        return interface_ipv4(name)
    except InterfaceError:
        try:
            return interface_ipv6(name)
        except InterfaceError:
            raise InterfaceError("%s has neither an IPv4 nor a global IPv6 address" % name) from None


def interface_mac(name: str) -> str:
    """The MAC address of interface ``name``."""
    require_interface(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        answer = fcntl.ioctl(probe.fileno(), _SIOCGIFHWADDR, struct.pack("256s", name.encode()[:15]))
    return answer[18:24].hex(":")


def on_link_networks(interface: str, routes: str = "/proc/thread-self/net/route") -> List[ipaddress.IPv4Network]:
    """The IPv4 networks routed straight out of ``interface`` (no gateway): whoever has such an address is on the link.

    thread-self, not self: a thread may have entered a network namespace of its own (the tests' servers do).
    """
    networks = []
    with open(routes, encoding="ascii") as handle:
        next(handle)
        for line in handle:
            fields = line.split()
            if fields[0] != interface or int(fields[2], 16) != 0:
                continue
            address, mask = (socket.inet_ntoa(struct.pack("<I", int(field, 16))) for field in (fields[1], fields[7]))
            networks.append(ipaddress.IPv4Network("%s/%s" % (address, mask), strict=False))
    return networks
