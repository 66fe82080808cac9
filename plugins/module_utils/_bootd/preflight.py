# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks before the boot server binds: privileges, and who already holds a port it needs."""

from __future__ import annotations

import os
from typing import Optional, Set

# Bit numbers in the capability sets (linux/capability.h).
CAP_NET_BIND_SERVICE = 10
CAP_NET_RAW = 13


def effective_capabilities(status_path: str = "/proc/self/status") -> Set[int]:
    """Return the set of effective capability numbers of this process."""
    with open(status_path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("CapEff:"):
                mask = int(line.split()[1], 16)
                return {bit for bit in range(64) if mask >> bit & 1}
    return set()


def unprivileged_port_start(path: str = "/proc/sys/net/ipv4/ip_unprivileged_port_start") -> int:
    """The lowest port anyone may bind in this network namespace (1024 unless the sysctl lowered it)."""
    try:
        with open(path, encoding="ascii") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return 1024


def missing_privileges(status_path: str = "/proc/self/status", port_start: int | None = None, euid: int | None = None) -> Optional[str]:
    """Return a sentence naming what is missing to serve DHCP and TFTP, or None when nothing is.

    ``port_start`` (the ip_unprivileged_port_start sysctl) and ``euid`` default to this process's.
    """
    missing = {CAP_NET_RAW: "CAP_NET_RAW (binding the DHCP socket to one interface)"}
    # Port 67 is the lowest the server binds; with the sysctl at or below it, no capability is needed to bind.
    if (unprivileged_port_start() if port_start is None else port_start) > 67:
        missing[CAP_NET_BIND_SERVICE] = "CAP_NET_BIND_SERVICE (ports 67, 69 and 4011 are below net.ipv4.ip_unprivileged_port_start)"
    for capability in effective_capabilities(status_path):
        missing.pop(capability, None)
    if not missing:
        return None
    needed = " and ".join(missing[key] for key in sorted(missing))
    if (os.geteuid() if euid is None else euid) == 0:
        # become cannot help: root already, in a container or under a systemd unit that dropped the capabilities.
        return ("the boot server runs as root but without %s; give them to its container (capabilities NET_RAW and "
                "NET_BIND_SERVICE, or a privileged container) or to the service running it" % needed)
    return ("the boot server needs root or %s; run the play with become: true on the controller, or grant the "
            "capabilities to the Python interpreter" % needed)


def _socket_inodes(protocol, port):
    """Inodes of sockets bound to local ``port`` in /proc/net/<protocol>{,6}."""
    inodes = set()
    for table in (protocol, protocol + "6"):
        try:
            with open("/proc/net/%s" % table, encoding="utf-8") as handle:
                next(handle)
                for line in handle:
                    fields = line.split()
                    if int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return inodes


def port_holder(protocol: str, port: int) -> Optional[str]:
    """Return ``"<name> (pid N)"`` for a process holding ``protocol`` (udp/tcp) ``port``, or None.

    Only processes this user may inspect are found (all of them, as root), and only in this network namespace.
    """
    inodes = _socket_inodes(protocol, port)
    if not inodes:
        return None
    targets = {"socket:[%s]" % inode for inode in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir("/proc/%s/fd" % pid):
                if os.readlink("/proc/%s/fd/%s" % (pid, fd)) in targets:
                    with open("/proc/%s/comm" % pid, encoding="utf-8") as handle:
                        return "%s (pid %s)" % (handle.read().strip(), pid)
        except OSError:
            continue
    return "another process (not visible to this user)"
