"""Packet captures on the lab bridge: tcpdump writes a pcap in the lab namespace, scapy reads it.

tcpdump puts the bridge into promiscuous mode, so the capture holds frames between any two ports
(a machine and the controller), not only those for the lab namespace itself.
Importing this module imports scapy (about a second); the rest of nixielab does not need it.
"""

from __future__ import annotations

import subprocess
import time

from scapy.error import Scapy_Exception
from scapy.layers.dhcp import BOOTP, DHCP, DHCPRevOptions
from scapy.layers.l2 import Ether
from scapy.packet import Packet
from scapy.utils import PcapReader

from .net import LabNetwork
from .processes import LabError, in_netns

# DHCPv4, TFTP requests (data moves on ephemeral ports), PXE boot-server (4011), DHCPv6.
BOOT_FILTER = "udp port 67 or udp port 68 or udp port 69 or udp port 4011 or udp port 546 or udp port 547"
DHCP_DISCOVER, DHCP_OFFER, DHCP_REQUEST, DHCP_ACK = 1, 2, 3, 5
OPTION_MESSAGE_TYPE, OPTION_VENDOR_CLASS, OPTION_CLIENT_ARCH = 53, 60, 93


def dhcp_options(packet: Packet) -> dict[int, object]:
    """A DHCP packet's options by option code (scapy names them; tests and RFCs number them)."""
    options = {}
    for option in packet[DHCP].options:
        if isinstance(option, tuple):
            name, value = option[0], option[1] if len(option) == 2 else option[1:]
            options[name if isinstance(name, int) else DHCPRevOptions[name][0]] = value
    return options


def client_arch(packet: Packet) -> int | None:
    """Option 93, the client's processor architecture (0 BIOS x86, 7 UEFI x64, 16 UEFI x64 HTTP, ...)."""
    value = dhcp_options(packet).get(OPTION_CLIENT_ARCH)
    return None if value is None else int.from_bytes(value, "big")


def vendor_class(packet: Packet) -> bytes:
    """Option 60, e.g. b"PXEClient:Arch:00000:UNDI:002001"; b"" when absent."""
    return dhcp_options(packet).get(OPTION_VENDOR_CLASS, b"")


def boot_file(packet: Packet) -> bytes:
    """The BOOTP `file` field, without its NUL padding."""
    return packet[BOOTP].file.rstrip(b"\0")


class Capture:
    """tcpdump on the lab bridge (or `interface` in namespace `netns`, such as a routed lab's machines' segment), writing
    `<run dir>/<name>.pcap`. Use as a context manager or start()/stop()."""

    def __init__(self, lab: LabNetwork, name: str = "boot", bpf: str = BOOT_FILTER, *, netns: str | None = None, interface: str | None = None):
        self.lab = lab
        self.bpf = bpf
        self.netns, self.interface = netns or lab.lab_ns, interface or lab.bridge
        self.path = lab.run_dir / ("%s.pcap" % name)
        self.log_path = lab.run_dir / ("%s.tcpdump.log" % name)
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> "Capture":
        self.start()
        return self

    def __exit__(self, *_exc_info) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        """Start tcpdump and wait until it captures."""
        # -U writes every packet at once, so the pcap can be read while tcpdump runs;
        # -Z root keeps tcpdump from dropping to a user that cannot write into the run directory.
        argv = ["tcpdump", "-i", self.interface, "-n", "-U", "-Z", "root", "-w", str(self.path), self.bpf]
        with open(self.log_path, "wb") as log:
            self._process = self.lab.tracker.spawn("tcpdump", in_netns(self.netns, argv), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while b"listening on" not in self.log_path.read_bytes():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise LabError("tcpdump did not start: %s" % self.log_path.read_text(errors="replace").strip())
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop tcpdump (it flushes the pcap on SIGTERM)."""
        if self._process is not None:
            self.lab.tracker.stop(self._process)
            self._process = None

    def packets(self) -> list[Packet]:
        """Everything captured so far (tcpdump may still be running)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return []  # tcpdump has not written the pcap header yet
        packets = []
        try:
            with PcapReader(str(self.path)) as reader:
                packets.extend(reader)
        except (EOFError, Scapy_Exception):
            pass  # a packet being written while we read: the rest comes with the next read
        return packets

    def dhcp(self, mac: str | None = None, message_type: int | None = None) -> list[Packet]:
        """DHCPv4 packets, optionally only those about client `mac` (its chaddr) and of one message type."""
        found = []
        for packet in self.packets():
            if DHCP not in packet:
                continue
            if mac is not None and packet[BOOTP].chaddr[:6] != bytes.fromhex(mac.replace(":", "")):
                continue
            if message_type is not None and dhcp_options(packet).get(OPTION_MESSAGE_TYPE) != message_type:
                continue
            found.append(packet)
        return found

    def pxe_discovers(self, mac: str) -> list[Packet]:
        """DHCPDISCOVERs sent by `mac` itself with vendor class PXEClient, i.e. by its firmware's PXE client."""
        return [packet for packet in self.dhcp(mac, DHCP_DISCOVER)
                if packet[Ether].src == mac.lower() and vendor_class(packet).startswith(b"PXEClient")]

    def wait_for(self, find, timeout: float, what: str) -> list[Packet]:
        """Poll until `find()` returns a non-empty list of packets and return it; LabError naming `what` on timeout."""
        deadline = time.monotonic() + timeout
        while not (found := find()):
            if time.monotonic() > deadline:
                raise LabError("no %s captured within %.0f s (%d packets in %s)" % (what, timeout, len(self.packets()), self.path))
            time.sleep(0.25)
        return found
