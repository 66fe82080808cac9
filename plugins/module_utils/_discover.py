# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Finding a machine's IP address from its MAC address, from the controller.

Methods, tried in the order the caller gives:

- ``static``: the address from the inventory.
- ``neighbor``: the controller's own view of the link. An ARP sweep of the interface's IPv4 subnets asks
  every address at once and returns fresh MAC-to-IP answers (the kernel neighbour table may hold an
  address the DHCP server has since given to another machine); then the kernel's neighbour table; then an
  ICMPv6 echo to all nodes (``ff02::1``), whose answers put the hosts' IPv6 addresses into the table; last,
  the link-local address derived from the MAC (EUI-64), which hosts use unless they generate stable-privacy
  addresses.
- ``agent``: the address the installer's agent reported to the run's boot server (asked over its API), which
  is only right while the installer still runs or when the DHCP server hands the same address out again.

The parsing is done by pure functions, apart from the socket and subprocess calls, so it is unit-tested
on canned input. Every network step is bounded by a :class:`Deadline`.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import os
import select
import socket
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._mac import mac_bytes, normalize_mac
from ansible_collections.nixie.provision.plugins.module_utils._netif import require_interface
from ansible_collections.nixie.provision.plugins.module_utils._process import CommandNotStarted, CommandTimeout, run_with_deadline

try:
    from scapy.layers.l2 import ARP, Ether
    from scapy.sendrecv import srp
except ImportError:
    SCAPY_IMPORT_ERROR = traceback.format_exc()
else:
    SCAPY_IMPORT_ERROR = None

if TYPE_CHECKING:
    from ansible_collections.nixie.provision.plugins.module_utils._bootclient import BootServerClient

METHODS = ("static", "neighbor", "agent")

# A sweep sends one ARP request per address: a /22 is 1022 frames, which a switch forwards in well under a
# second; a /16 would be 65534 broadcasts, a flood on a network the controller shares with others.
LARGEST_SWEEP_PREFIX = 22
SWEEP_TIMEOUT = 1.0
SOLICIT_TIMEOUT = 1.0
COMMAND_TIMEOUT = 5.0

# Kernel neighbour states whose link-layer address is current enough to try (ip-neighbour(8)).
# INCOMPLETE and FAILED entries are resolutions that got no answer.
USABLE_STATES = ("REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT", "NOARP")
UNUSABLE_STATES = ("INCOMPLETE", "FAILED")

ICMPV6_ECHO_REQUEST = 128
ALL_NODES = "ff02::1"

Candidate = collections.namedtuple("Candidate", "address source")
Neighbor = collections.namedtuple("Neighbor", "address state")


class DiscoveryError(NixieError):
    """Discovery cannot even start as configured (such as a missing interface)."""


class SweepRefused(NixieError):
    """A subnet is too large to sweep."""


class Deadline:
    """A point in time every step measures its own timeout against."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        return max(self._end - self._clock(), 0.0)

    def bounded(self, seconds: float) -> float:
        """``seconds``, or less when the deadline is nearer."""
        return min(seconds, self.remaining())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0


# Pure functions

def eui64_link_local(mac: str) -> str:
    """The IPv6 link-local address a host derives from ``mac`` with modified EUI-64 (RFC 4291, appendix A).

    The universal/local bit of the first octet is inverted and ff:fe goes between the two halves.
    """
    octets = bytearray(mac_bytes(mac))
    octets[0] ^= 0x02
    interface_id = bytes(octets[:3]) + b"\xff\xfe" + bytes(octets[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\x00" * 6 + interface_id))


def parse_neighbors(text: Optional[str], mac: str) -> List[Neighbor]:
    """The usable entries for ``mac`` in ``ip -j neigh`` output, most promising first.

    IPv4 before IPv6 (IPv4 needs no scope and is what DHCP hands out), global IPv6 before link-local,
    and a confirmed (REACHABLE) entry before one not confirmed lately.
    """
    wanted = normalize_mac(mac)
    found = []
    for entry in json.loads(text or "[]"):
        states = entry.get("state") or []
        lladdr = entry.get("lladdr")
        if not lladdr or "dst" not in entry:
            continue
        try:
            if normalize_mac(lladdr) != wanted:
                continue
            address = ipaddress.ip_address(entry["dst"])
        except ValueError:
            continue
        if any(state in UNUSABLE_STATES for state in states) or not any(state in USABLE_STATES for state in states):
            continue
        found.append((address.version, address.is_link_local, "REACHABLE" not in states, Neighbor(str(address), states[0])))
    return [neighbor for dummy_v, dummy_ll, dummy_r, neighbor in sorted(found, key=lambda item: item[:3])]


def interface_networks(text: Optional[str]) -> List[ipaddress.IPv4Interface]:
    """The IPv4 networks of an interface, from ``ip -j -4 addr show dev <interface>``: ``[IPv4Interface]``."""
    networks = []
    for link in json.loads(text or "[]"):
        for info in link.get("addr_info", []):
            if info.get("family") == "inet" and info.get("scope", "global") == "global":
                networks.append(ipaddress.IPv4Interface("%s/%s" % (info["local"], info["prefixlen"])))
    return networks


def check_sweep_size(network: ipaddress.IPv4Network) -> None:
    """Raise SweepRefused when ``network`` (an IPv4Network) is larger than a /22."""
    if network.prefixlen < LARGEST_SWEEP_PREFIX:
        raise SweepRefused(
            "%s has %d addresses; Nixie sweeps subnets of at most /%d (%d addresses) with ARP, so it does not "
            "sweep this one: give the host's ip, or make sure the controller talked to it lately (its neighbour "
            "table is still read)" % (network, network.num_addresses, LARGEST_SWEEP_PREFIX, 2 ** (32 - LARGEST_SWEEP_PREFIX))
        )


def sweep_targets(interface_address: ipaddress.IPv4Interface) -> List[str]:
    """The addresses to ask in the subnet of ``interface_address`` (an IPv4Interface), without its own."""
    check_sweep_size(interface_address.network)
    return [str(host) for host in interface_address.network.hosts() if host != interface_address.ip]


def agent_address(entry: Optional[Mapping[str, Any]]) -> Optional[str]:
    """The address in a boot server's host entry (``_bootclient.BootServerClient.host``), or None before a phone-home.

    The agent's own report (``ip``: the address it reaches the server from) comes before the source address the
    server saw, which differs behind NAT.
    """
    report = (entry or {}).get("report") or {}
    for reported in (report.get("ip"), report.get("source_ip")):
        try:
            return str(ipaddress.ip_address(reported))
        except ValueError:
            continue
    return None


def with_scope(address: str, interface: Optional[str]) -> str:
    """``address`` with ``%interface`` appended when it is an IPv6 link-local address (meaningless without one)."""
    if interface and "%" not in address and ipaddress.ip_address(address).version == 6 and ipaddress.ip_address(address).is_link_local:
        return "%s%%%s" % (address, interface)
    return address


# Input and output

def _ip_json(*argv, timeout):
    try:
        done = run_with_deadline(["ip", "-j"] + list(argv), max(timeout, 0.1), grace=0)
    except (CommandNotStarted, CommandTimeout) as exc:
        raise DiscoveryError("ip -j %s: %s" % (" ".join(argv), exc.__cause__)) from None
    if done.returncode != 0:
        raise DiscoveryError("ip -j %s: %s" % (" ".join(argv), done.stderr.strip()))
    return done.stdout


def read_neighbors(interface: str, mac: str, timeout: float = COMMAND_TIMEOUT) -> List[Neighbor]:
    return parse_neighbors(_ip_json("neigh", "show", "dev", interface, timeout=timeout), mac)


def arp_sweep(interface: str, interface_address: ipaddress.IPv4Interface, timeout: float = SWEEP_TIMEOUT) -> Dict[str, List[str]]:
    """Ask every address of the interface's subnet for its MAC in one burst; returns ``{mac: [addresses]}``."""
    targets = sweep_targets(interface_address)
    if not targets:
        return {}
    request = Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=targets, psrc=str(interface_address.ip))
    answered, dummy_unanswered = srp(request, iface=interface, timeout=timeout, verbose=False)
    found = {}
    for dummy_sent, reply in answered:
        found.setdefault(normalize_mac(reply[ARP].hwsrc), []).append(reply[ARP].psrc)
    return found


def solicit_ipv6(interface: str, timeout: float = SOLICIT_TIMEOUT) -> None:
    """Send one ICMPv6 echo request to all nodes on ``interface`` and wait ``timeout`` seconds.

    Each host that answers first resolves our address with a neighbour solicitation, which puts its own
    address and MAC into the kernel's neighbour table (RFC 4861 7.2.3): that table is read afterwards.
    """
    index = socket.if_nametoindex(interface)
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        # Type, code, checksum (the kernel fills it in for ICMPv6 raw sockets), identifier, sequence.
        sock.sendto(bytes([ICMPV6_ECHO_REQUEST, 0, 0, 0]) + os.urandom(2) + b"\x00\x01", (ALL_NODES, 0, 0, index))
        deadline = Deadline(timeout)
        while not deadline.expired:
            readable, dummy_w, dummy_x = select.select([sock], [], [], deadline.remaining())
            if readable:
                sock.recv(2048)


class Discovery:
    """Yields candidate addresses for one MAC, lazily, so the caller can stop at the first that answers.

    ``notes`` collects, per method, why it found nothing or was skipped; ``warnings`` what the user should
    fix (a subnet too large to sweep, scapy missing).
    """

    def __init__(self, mac: str, deadline: Deadline, ip: Optional[str] = None, interface: Optional[str] = None,
                 server: Optional[BootServerClient] = None, methods: Sequence[str] = METHODS) -> None:
        self.mac = normalize_mac(mac)
        self.deadline = deadline
        self.ip = ip
        self.interface = interface
        self.server = server
        self._methods = {"static": self._static, "neighbor": self._neighbor, "agent": self._agent}
        unknown = [method for method in methods if method not in self._methods]
        if unknown:
            raise DiscoveryError("discovery: unknown method %s; choose from %s" % (", ".join(unknown), ", ".join(METHODS)))
        self.methods = list(methods)
        self.notes = []
        self.warnings = []
        self._seen = set()
        if interface and "neighbor" in self.methods:
            try:
                require_interface(interface)
            except NixieError as exc:
                raise DiscoveryError("interface: %s" % exc) from None

    def candidates(self) -> Iterator[Candidate]:
        for method in self.methods:
            if self.deadline.expired:
                self.notes.append("%s: not tried, the timeout was reached" % method)
                return
            for candidate in self._methods[method]():
                key = candidate.address.lower()
                if key not in self._seen:
                    self._seen.add(key)
                    yield candidate

    def _static(self):
        if not self.ip:
            self.notes.append("static: no ip given")
            return
        yield Candidate(with_scope(self.ip, self.interface) if _is_ip(self.ip) else self.ip, "static")

    def _neighbor(self):
        if not self.interface:
            self.notes.append("neighbor: no interface given")
            return
        swept = {}
        yield from self._sweep(swept)
        try:
            neighbors = read_neighbors(self.interface, self.mac, self.deadline.bounded(COMMAND_TIMEOUT))
        except DiscoveryError as exc:
            self.notes.append("neighbor: %s" % exc)
            neighbors = []
        yield from self._table_candidates(neighbors, swept)
        if self.deadline.expired:
            return
        try:
            solicit_ipv6(self.interface, self.deadline.bounded(SOLICIT_TIMEOUT))
            neighbors = read_neighbors(self.interface, self.mac, self.deadline.bounded(COMMAND_TIMEOUT))
        except (OSError, DiscoveryError) as exc:
            # Keep what the first read found; candidates() skips addresses already yielded.
            self.notes.append("neighbor: IPv6 all-nodes echo on %s failed: %s" % (self.interface, exc))
        yield from self._table_candidates(neighbors, swept)
        if self.mac not in swept.values() and not neighbors:
            self.notes.append("neighbor: no ARP answer and no neighbour table entry from %s on %s" % (self.mac, self.interface))
        yield Candidate(with_scope(eui64_link_local(self.mac), self.interface), "link_local")

    def _table_candidates(self, neighbors, swept):
        for neighbor in neighbors:
            # A table entry the sweep just saw answered by another MAC is an old lease now held by someone else.
            if swept.get(neighbor.address, self.mac) == self.mac:
                yield Candidate(with_scope(neighbor.address, self.interface), "neighbor")

    def _sweep(self, swept):
        """ARP-sweep each IPv4 subnet of the interface; fills ``swept`` with ``{address: mac}`` of all answers."""
        if SCAPY_IMPORT_ERROR:
            self.warnings.append("%s; without it there is no ARP sweep and only the neighbour table is read" % missing_required_lib("scapy"))
            return
        try:
            networks = interface_networks(_ip_json("-4", "addr", "show", "dev", self.interface, timeout=self.deadline.bounded(COMMAND_TIMEOUT)))
        except DiscoveryError as exc:
            self.notes.append("neighbor: %s" % exc)
            return
        if not networks:
            self.notes.append("neighbor: %s has no IPv4 address to sweep from" % self.interface)
        for network in networks:
            if self.deadline.expired:
                return
            try:
                answers = arp_sweep(self.interface, network, self.deadline.bounded(SWEEP_TIMEOUT))
            except SweepRefused as exc:
                self.warnings.append("interface %s: %s" % (self.interface, exc))
                continue
            except OSError as exc:
                # Raw sockets need root or CAP_NET_RAW.
                self.notes.append("neighbor: ARP sweep of %s failed: %s" % (network.network, exc))
                continue
            for mac, addresses in answers.items():
                swept.update((address, mac) for address in addresses)
            for address in answers.get(self.mac, []):
                yield Candidate(address, "arp_sweep")

    def _agent(self):
        if self.server is None:
            self.notes.append("agent: no boot server to ask")
            return
        try:
            address = agent_address(self.server.host(self.mac))
        except NixieError as exc:
            self.notes.append("agent: %s" % exc)
            return
        if address is None:
            self.notes.append("agent: no phone-home from %s at the boot server %s" % (self.mac, self.server.base_url))
            return
        yield Candidate(with_scope(address, self.interface), "agent")


def _is_ip(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
