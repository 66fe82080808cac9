"""What a lab machine sent and received while it booted, read from a capture on its tap, in a few lines.

CAPTURE_FILTER is what the capture needs: UDP (DHCP, DHCPv6, TFTP), ICMPv6 (router solicitations and advertisements,
which iPXE waits for on an IPv6 network) and the SYNs that open HTTP connections over IPv4.

The capture sits between the machine and the bridge that drops frames, so it holds every frame the machine sent
(including those then dropped) and only the frames that reached it: a request with no answer after it, or a
retransmitted TFTP block, shows where the boot lost time.
"""

from __future__ import annotations

import struct

from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dhcp6 import DHCP6
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6ND_RS
from scapy.layers.l2 import Ether

from nixielab.capture import OPTION_MESSAGE_TYPE, boot_file, dhcp_options

DHCP4_TYPES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK", 7: "RELEASE", 8: "INFORM"}
CAPTURE_FILTER = "udp or icmp6 or (tcp[tcpflags] & tcp-syn != 0)"
TFTP_PORT = 69
TFTP_RRQ, TFTP_DATA, TFTP_ACK, TFTP_ERROR, TFTP_OACK = 1, 3, 4, 5, 6
OPTION_SERVER_ID = 54


class _Transfer:
    """One TFTP transfer's DATA and ACKs, by the (server port, client port) pair it runs on."""

    def __init__(self, first_seen):
        self.first_seen = self.last_seen = first_seen
        self.data = self.acks = 0
        self.blocks_received, self.blocks_acked = set(), set()

    def add(self, seen, opcode, block):
        self.last_seen = seen
        if opcode == TFTP_DATA:
            self.data += 1
            self.blocks_received.add(block)
        else:
            self.acks += 1
            self.blocks_acked.add(block)

    def line(self):
        return "%7.2f-%.2f s  TFTP transfer: %d blocks received, %d DATA (%d again), %d ACKs sent (%d again)" % (
            self.first_seen, self.last_seen, len(self.blocks_received), self.data, self.data - len(self.blocks_received),
            self.acks, self.acks - len(self.blocks_acked))


def _dhcp4_line(packet, sent):
    options = dhcp_options(packet)
    kind = DHCP4_TYPES.get(options.get(OPTION_MESSAGE_TYPE), "BOOTP")
    details = []
    if not sent:
        details.append("from %s" % options.get(OPTION_SERVER_ID, packet["IP"].src))
        if packet[BOOTP].yiaddr != "0.0.0.0":
            details.append("address %s" % packet[BOOTP].yiaddr)
        file = boot_file(packet)
        if file:
            details.append("file %s" % file.decode("ascii", "replace"))
    return "DHCPv4 %s%s" % (kind, (" (%s)" % ", ".join(details)) if details else "")


def boot_timeline(packets: list, mac: str, started: float) -> list[str]:
    """One line per DHCP or DHCPv6 message, router solicitation or advertisement, TCP connection opening and TFTP
    request, and one per TFTP transfer, in time order: seconds after ``started`` (the power-on), then "->" for what
    the machine ``mac`` sent or "<-" for what reached it."""
    lines = []
    transfers = {}
    for packet in packets:
        seen = float(packet.time) - started
        sent = packet[Ether].src == mac.lower()
        arrow = "->" if sent else "<-"
        if ICMPv6ND_RS in packet or ICMPv6ND_RA in packet:
            lines.append((seen, "%7.2f s %s IPv6 router %s" % (seen, arrow, "solicitation" if ICMPv6ND_RS in packet else "advertisement")))
            continue
        if TCP in packet:
            flags = packet[TCP].flags
            if flags.S:
                opening = ("SYN-ACK from", packet[TCP].sport) if flags.A else ("SYN to", packet[TCP].dport)
                lines.append((seen, "%7.2f s %s TCP %s port %d" % (seen, arrow, *opening)))
            continue
        if UDP not in packet:
            continue
        if DHCP in packet:
            lines.append((seen, "%7.2f s %s %s" % (seen, arrow, _dhcp4_line(packet, sent))))
            continue
        if DHCP6 in packet:
            lines.append((seen, "%7.2f s %s DHCPv6 %s" % (seen, arrow, packet[DHCP6].name)))
            continue
        payload = bytes(packet[UDP].payload)
        if len(payload) < 4:
            continue
        opcode, block = struct.unpack("!HH", payload[:4])
        udp = packet[UDP]
        if udp.dport == TFTP_PORT and opcode == TFTP_RRQ:
            name = payload[2:].split(b"\0", 1)[0].decode("ascii", "replace")
            lines.append((seen, "%7.2f s -> TFTP read request %s" % (seen, name)))
        elif opcode in (TFTP_DATA, TFTP_ACK):
            ports = (udp.sport, udp.dport) if not sent else (udp.dport, udp.sport)
            transfers.setdefault(ports, _Transfer(seen)).add(seen, opcode, block)
        elif opcode in (TFTP_ERROR, TFTP_OACK):
            lines.append((seen, "%7.2f s %s TFTP %s" % (seen, arrow, "ERROR" if opcode == TFTP_ERROR else "OACK")))
    lines.extend((transfer.first_seen, transfer.line()) for transfer in transfers.values())
    return [line for _seen, line in sorted(lines, key=lambda entry: entry[0])]
