# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""This machine's network interfaces, by name: does one exist, and what is its IPv4 address."""

from __future__ import annotations

import fcntl
import socket
import struct

from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError

# ioctl(2) request that reads an interface's primary IPv4 address (linux/sockios.h).
_SIOCGIFADDR = 0x8915


class InterfaceError(NixieError):
    """The named interface does not exist or lacks what was asked of it."""


def require_interface(name):
    """Raise InterfaceError unless an interface called ``name`` exists in this network namespace."""
    try:
        socket.if_nametoindex(name)
    except (OSError, ValueError):
        raise InterfaceError("no network interface named %r on this machine" % name) from None


def interface_ipv4(name):
    """Return the primary IPv4 address of interface ``name``."""
    require_interface(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            raise InterfaceError("%s has no IPv4 address" % name) from None
    return socket.inet_ntoa(answer[20:24])
