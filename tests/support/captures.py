# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading the firmware captures in tests/fixtures/pcap, and DHCPv6 options by a walk independent of dhcp6's."""

from __future__ import annotations

import struct
from pathlib import Path

from scapy.layers.inet import UDP
from scapy.utils import rdpcap

PCAP_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "pcap"


def udp_frames(pattern, ports):
    """Frames of the captures matching ``pattern`` (a file name or glob) sent to one of the UDP ``ports``."""
    return [frame for capture in sorted(PCAP_DIR.glob(pattern)) for frame in rdpcap(str(capture))
            if UDP in frame and frame[UDP].dport in ports]


def udp_payloads(pattern, ports):
    return [bytes(frame[UDP].payload) for frame in udp_frames(pattern, ports)]


def dhcp6_options(payload):
    """Option code -> value of a DHCPv6 message (the last one of a code wins); ValueError if one overruns it."""
    options, position = {}, 4
    while position < len(payload):
        code, length = struct.unpack_from("!HH", payload, position)
        options[code] = payload[position + 4:position + 4 + length]
        position += 4 + length
    if position != len(payload):
        raise ValueError("the last option overruns the message: %r" % payload)
    return options
