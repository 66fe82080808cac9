# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""DHCP client messages for the wire and policy tests: the captures' packets by number, hand-built requests, and
the path one message takes through the proxy pipeline."""

from __future__ import annotations

import random
import sys
import time

from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6
from scapy.utils import rdpcap

from ansible_collections.nixie.provision.plugins.module_utils._errors import MalformedPacket
from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import DHCP6_SERVER_PORT, DHCP_CLIENT_PORT, DHCP_SERVER_PORT
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.limits import Budget
from captures import PCAP_DIR, udp_frames

# The client UUID (option 97) of the captures that send one.
UUID_OPTION = bytes.fromhex("0078563412bc9af0de1122334455667788")
# What a vendor's BIOS PXE ROM sends: option 60 with its architecture, and option 93.
VENDOR_PXE_ROM = [("vendor_class_id", b"PXEClient:Arch:00000:UNDI:002001"), (93, b"\x00\x00")]
# Answers per MAC without a limit, for a proxy that replays more requests of one MAC than a boot sends.
UNLIMITED_ANSWERS = Budget(burst=sys.maxsize, interval=1.0)
# The interface index recvfrom gives with a link-local source on a scoped socket.
LINK_LOCAL_SCOPE = 3


def dhcp_payloads(capture):
    """{packet number: UDP payload} for every DHCPv4 packet (either direction) of a capture."""
    return {
        number: bytes(frame[UDP].payload)
        for number, frame in enumerate(rdpcap(str(PCAP_DIR / capture)), 1)
        if UDP in frame and frame[UDP].dport in (DHCP_SERVER_PORT, DHCP_CLIENT_PORT)
    }


def captured(capture, number):
    return dhcp_payloads(capture)[number]


def request_bytes(mac="52:54:00:aa:00:01", options=(), message_type="discover", flags=0, ciaddr="0.0.0.0", giaddr="0.0.0.0", op=1,
                  xid=0x11223344):
    """A DHCP request built with scapy, for cases the captures do not contain."""
    packet = BOOTP(op=op, xid=xid, flags=flags, ciaddr=ciaddr, giaddr=giaddr, chaddr=bytes.fromhex(mac.replace(":", "")))
    return bytes(packet / DHCP(options=[("message-type", message_type)] + list(options) + ["end"]))


def captured_solicits(name):
    """(payload, source) of every Solicit in a capture, the source as recvfrom gives it on a scoped socket."""
    return [(bytes(frame[UDP].payload), (frame[IPv6].src, frame[UDP].sport, 0, LINK_LOCAL_SCOPE))
            for frame in udp_frames(name, (DHCP6_SERVER_PORT,))]


def pipeline_path(parse, handle, data, source, local_port):
    """Run one input through a family's ``parse`` and its proxy's ``handle``: (request, outcome, path taken).

    The path is one of the fuzz tests' PATHS: "malformed", "not a request", "unanswered" or "reply".
    """
    try:
        request = parse(data, source, local_port)
    except MalformedPacket:
        request, path = None, "malformed"
    else:
        path = "not a request" if request is None else "unanswered"
    outcome = handle(data, source, local_port)
    if outcome is not None and outcome.reply is not None:
        path = "reply"
    return request, outcome, path


def hear_lease(run, interface, mac, address):
    """Have the boot proxy on ``interface`` hear ``mac``'s firmware take ``address`` (its broadcast REQUEST to the site's
    server, option 50), sent through ``run`` (a namespace's subprocess.run): the address then counts as the host's."""
    payload = request_bytes(mac, options=VENDOR_PXE_ROM + [("requested_addr", address)], message_type="request")
    send = ("import socket, sys\n"
            "sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
            "sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, sys.argv[2].encode())\n"
            "sock.sendto(bytes.fromhex(sys.argv[1]), ('255.255.255.255', 67))\n")
    run([sys.executable, "-c", send, payload.hex(), interface], check=True)
    # The proxy takes it on its own loop; a moment is plenty.
    time.sleep(0.3)


# Sent from the client's namespace: bound to port 68 on its interface, it hears the broadcast reply a client without the
# broadcast flag gets; of those it takes the one whose server identifier (option 54) is the proxy's, not the site
# server's offer. The request goes out again each second, as firmware retransmits: a flooded proxy drops some.
_ASK_PROXY = """import select, socket, sys, time
payload, interface, chaddr, xid = bytes.fromhex(sys.argv[1]), sys.argv[2], bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[4])
server_id = socket.inet_aton(sys.argv[6])

def option(data, code):
    index = 240
    while index + 1 < len(data) and data[index] != 255:
        if data[index] == 0:
            index += 1
            continue
        if data[index] == code:
            return data[index + 2:index + 2 + data[index + 1]]
        index += 2 + data[index + 1]
    return None

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
sock.bind(("0.0.0.0", 68))
deadline = time.monotonic() + float(sys.argv[5])
while time.monotonic() < deadline:
    sock.sendto(payload, ("255.255.255.255", 67))
    resend = min(time.monotonic() + 1.0, deadline)
    while (left := resend - time.monotonic()) > 0 and select.select([sock], [], [], left)[0]:
        data = sock.recv(65536)
        if data[:1] == b"\\x02" and data[4:8] == xid and data[28:34] == chaddr and option(data, 54) == server_id:
            print(data.hex())
            sys.exit(0)
sys.exit(1)
"""


def ask_proxy(run, interface, mac, server, timeout=5.0, options=tuple(VENDOR_PXE_ROM)):
    """The answer (BOOTP bytes) of the boot proxy at ``server`` to a PXE DISCOVER that ``mac`` broadcasts from ``interface``
    through ``run`` (a namespace's subprocess.run), as its firmware would; None when none came within ``timeout`` seconds."""
    xid = random.getrandbits(32)
    payload = request_bytes(mac, options=options, xid=xid)
    done = run([sys.executable, "-c", _ASK_PROXY, payload.hex(), interface, mac.replace(":", ""), "%08x" % xid, str(timeout), server],
               capture_output=True, text=True, timeout=timeout + 10, check=False)
    return bytes.fromhex(done.stdout.strip()) if done.returncode == 0 else None
