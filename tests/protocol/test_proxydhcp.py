# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The real ProxyDHCP server on a private veth pair, against busybox udhcpc and replayed firmware packets.

The server runs in one network namespace (its asyncio loop in a thread that entered it); clients live in
another, and every reply is captured there from the wire with a packet socket and decoded with scapy.
"""

from __future__ import annotations

import errno
import json
import os
import random
import socket
import sys
import time

import pytest
from scapy.layers.dhcp import BOOTP, DHCP, DHCPRevOptions
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import (
    DHCP_CLIENT_PORT, DHCP_SERVER_PORT, PXE_PORT, STEP_DHCP_ACK, STEP_DHCP_IGNORED, STEP_DHCP_OFFER,
)
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire.bootp import BOOTREPLY
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire import dhcp4
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.booter import Booter
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host, ServerAddress
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.proxydhcp import start_proxydhcp
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.udp import PortBindError
from captures import PCAP_DIR

pytestmark = pytest.mark.netns

KNOWN_MAC = "52:54:00:aa:00:01"
OTHER_KNOWN_MAC = "52:54:00:aa:00:02"
UNKNOWN_MAC = "02:00:00:00:00:99"
HTTP_PORT = 8080
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SCRIPT_URL = "http://10.213.0.1:8080/boot/52-54-00-aa-00-01.ipxe"


class Wire:
    """A packet socket on the client's interface: sends raw frames, collects the DHCP replies it sees."""

    def __init__(self, pair):
        self.sock = pair.call(pair.client_ns, self._open, pair.client_if)

    @staticmethod
    def _open(interface):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
        sock.bind((interface, ETH_P_IP))
        return sock

    def send(self, frame):
        self.sock.send(frame)

    def replies(self, mac, wait, enough=None):
        """BOOTP replies addressed to ``mac`` seen within ``wait`` seconds (stop early at ``enough``)."""
        chaddr = bytes.fromhex(mac.replace(":", ""))
        found = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and (enough is None or len(found) < enough):
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data, address = self.sock.recvfrom(65535)
            except socket.timeout:
                break
            if address[2] == PACKET_OUTGOING:
                continue
            frame = Ether(data)
            if UDP in frame and frame[UDP].sport == DHCP_SERVER_PORT and BOOTP in frame:
                if frame[BOOTP].op == BOOTREPLY and frame[BOOTP].chaddr[:6] == chaddr:
                    found.append(frame)
        return found

    def close(self):
        self.sock.close()


class RunningProxy:
    def __init__(self, pair, loop, server, events):
        self.pair = pair
        self.loop = loop
        self.server = server
        self.events = events

    def events_for(self, mac, step, wait=2.0):
        deadline = time.monotonic() + wait
        while True:
            found = [fields for event_mac, event_step, fields in list(self.events) if event_mac == mac and event_step == step]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


@pytest.fixture
def proxy(netns_pair):
    hosts = [Host("node-1", KNOWN_MAC), Host("node-2", OTHER_KNOWN_MAC)]
    booter = Booter(HostTable(hosts), ServerAddress(netns_pair.server_ip, HTTP_PORT), ("undionly.kpxe", "ipxe.efi"))
    events = []
    with netns_pair.event_loop(netns_pair.server_ns) as loop:
        server = loop.run(start_proxydhcp(netns_pair.server_if, booter, lambda mac, step, **fields: events.append((mac, step, fields))))
        netns_pair.set_client_mac(KNOWN_MAC)
        yield RunningProxy(netns_pair, loop, server, events)
        loop.call(server.close)
        assert loop.errors == [], "the server's event loop saw exceptions"


@pytest.fixture
def wire(netns_pair):
    wire = Wire(netns_pair)
    yield wire
    wire.close()


def options_of(frame):
    options = {}
    for item in frame[DHCP].options:
        if isinstance(item, tuple):
            options[item[0] if isinstance(item[0], int) else DHCPRevOptions[item[0]][0]] = item[1]
    return options


def run_udhcpc(pair, *extra):
    # -s /bin/true: never configure anything; -n: give up instead of retrying forever.
    argv = ["busybox", "udhcpc", "-i", pair.client_if, "-f", "-q", "-n", "-t", "2", "-T", "1", "-A", "1", "-s", "/bin/true"] + list(extra)
    return pair.run(pair.client_ns, argv, check=False, timeout=30)


def assert_proxy_reply(frame, boot_file, vendor_class, server_ip):
    bootp = frame[BOOTP]
    options = options_of(frame)
    assert bootp.yiaddr == "0.0.0.0"
    assert bootp.siaddr == server_ip
    assert bootp.file.rstrip(b"\x00") == boot_file.encode()
    assert options[67] == boot_file.encode()
    assert options[60] == vendor_class.encode()
    assert options[54] == server_ip
    assert frame[IP].src == server_ip
    assert frame[UDP].dport == DHCP_CLIENT_PORT
    return options


# --- busybox udhcpc posing as firmware -----------------------------------------------------------

UDHCPC_CLIENTS = [
    pytest.param(["-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000"], "undionly.kpxe", "PXEClient", id="bios-pxe"),
    pytest.param(["-V", "PXEClient:Arch:00007:UNDI:003000", "-x", "0x5d:0007"], "ipxe.efi", "PXEClient", id="uefi-x64-pxe"),
    pytest.param(["-V", "HTTPClient:Arch:00016:UNDI:003000", "-x", "0x5d:0010"], "http://10.213.0.1:8080/ipxe/ipxe.efi", "HTTPClient", id="uefi-x64-http"),
    pytest.param(["-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000", "-x", "0x4d:69505845"], SCRIPT_URL, "PXEClient", id="ipxe"),
]


@pytest.mark.parametrize("options, boot_file, vendor_class", UDHCPC_CLIENTS)
def test_udhcpc_pxe_client_gets_proxy_offer(proxy, wire, options, boot_file, vendor_class):
    run_udhcpc(proxy.pair, *options)
    replies = wire.replies(KNOWN_MAC, wait=1.0)
    offers = [frame for frame in replies if options_of(frame)[53] == dhcp4.DHCPOFFER]
    assert offers, "no proxy offer on the wire"
    for frame in replies:  # udhcpc takes the offer and REQUESTs it from us, so an ACK may follow
        assert_proxy_reply(frame, boot_file, vendor_class, proxy.pair.server_ip)
        # No broadcast flag and no address yet: the reply must be a broadcast, not unicast to nowhere.
        assert (frame[IP].dst, frame[Ether].dst) == ("255.255.255.255", "ff:ff:ff:ff:ff:ff")
    assert proxy.events_for(KNOWN_MAC, STEP_DHCP_OFFER)[0]["boot_file"] == boot_file


def test_unknown_mac_gets_nothing(proxy, wire):
    proxy.pair.set_client_mac(UNKNOWN_MAC)
    run_udhcpc(proxy.pair, "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
    assert wire.replies(UNKNOWN_MAC, wait=2.0) == []
    assert proxy.events_for(UNKNOWN_MAC, STEP_DHCP_IGNORED)[0]["reason"] == "unknown MAC address"


def test_known_mac_without_pxe_vendor_class_gets_nothing(proxy, wire):
    run_udhcpc(proxy.pair)
    assert wire.replies(KNOWN_MAC, wait=2.0) == []
    assert proxy.events_for(KNOWN_MAC, STEP_DHCP_IGNORED)[0]["reason"] == "not a PXE or HTTP boot request"
    assert proxy.events_for(KNOWN_MAC, STEP_DHCP_OFFER, wait=0) == []


# --- real firmware packets replayed ---------------------------------------------------------------


def captured_frame(capture, number, mac):
    """A captured frame with its MAC (Ethernet source and chaddr) rewritten, checksums recomputed."""
    frame = rdpcap(str(PCAP_DIR / capture))[number - 1]
    frame[Ether].src = mac
    frame[BOOTP].chaddr = bytes.fromhex(mac.replace(":", "")) + bytes(10)
    del frame[IP].chksum
    del frame[UDP].chksum
    return bytes(frame)


REPLAYS = [
    pytest.param("seabios-ipxe-rom-e1000.pcap", 1, SCRIPT_URL, "PXEClient", True, id="seabios-ipxe-rom"),
    pytest.param("seabios-ipxe-chainload.pcap", 8, SCRIPT_URL, "PXEClient", True, id="undionly-kpxe"),
    pytest.param("ovmf-e1000.pcap", 1, SCRIPT_URL, "PXEClient", True, id="ovmf-ipxe-efi-rom"),
    pytest.param("ovmf-e1000.pcap", 5, "ipxe.efi", "PXEClient", False, id="ovmf-edk2-pxe"),
    pytest.param("ovmf-virtio-native.pcap", 1, "ipxe.efi", "PXEClient", False, id="ovmf-virtio-native"),
    pytest.param("ovmf-httpboot.pcap", 1, "http://10.213.0.1:8080/ipxe/ipxe.efi", "HTTPClient", False, id="ovmf-http-boot"),
    pytest.param("ovmf-httpboot.pcap", 5, SCRIPT_URL, "PXEClient", True, id="ipxe-efi-after-http-boot"),
]


@pytest.mark.parametrize("capture, number, boot_file, vendor_class, is_ipxe", REPLAYS)
def test_replayed_firmware_discover_is_answered(proxy, wire, capture, number, boot_file, vendor_class, is_ipxe):
    frame = captured_frame(capture, number, KNOWN_MAC)
    wire.send(frame)
    replies = wire.replies(KNOWN_MAC, wait=3.0, enough=1)
    assert len(replies) == 1
    reply = replies[0]
    options = assert_proxy_reply(reply, boot_file, vendor_class, proxy.pair.server_ip)
    assert options[53] == dhcp4.DHCPOFFER
    assert reply[BOOTP].xid == BOOTP(bytes(Ether(frame)[UDP].payload)).xid
    assert options[97] == bytes.fromhex("0078563412bc9af0de1122334455667788")
    assert (175 in options) is is_ipxe
    assert (43 in options) is (vendor_class == "PXEClient")
    assert reply[IP].dst == "255.255.255.255"


def test_pxe_port_request_is_acked_to_its_source(proxy):
    # After a proxy offer, iPXE and EDK2 REQUEST the boot file again by unicast to port 4011.
    pair = proxy.pair
    pair.give_client_address()
    bootp = BOOTP(captured_frame("ovmf-virtio-native.pcap", 1, KNOWN_MAC)[42:])
    bootp.ciaddr = pair.client_ip
    bootp.flags = 0
    bootp[DHCP].options = [("message-type", "request")] + [o for o in bootp[DHCP].options if not (isinstance(o, tuple) and o[0] == "message-type")]

    def client_socket():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((pair.client_ip, 0))
        return sock

    sock = pair.call(pair.client_ns, client_socket)
    try:
        sock.settimeout(3)
        sock.sendto(bytes(bootp), (pair.server_ip, PXE_PORT))
        data, sender = sock.recvfrom(65535)
    finally:
        sock.close()
    assert sender == (pair.server_ip, PXE_PORT)
    ack = BOOTP(data)
    options = options_of(ack)
    assert options[53] == dhcp4.DHCPACK
    assert (ack.yiaddr, ack.ciaddr, ack.siaddr) == ("0.0.0.0", pair.client_ip, pair.server_ip)
    assert options[67] == b"ipxe.efi"
    assert proxy.events_for(KNOWN_MAC, STEP_DHCP_ACK)[0]["port"] == PXE_PORT


def test_server_survives_a_burst_of_malformed_packets(proxy, wire):
    rng = random.Random(4011)
    seed = captured_frame("seabios-ipxe-rom-e1000.pcap", 1, KNOWN_MAC)
    discover = bytes(Ether(seed)[UDP].payload)
    for count in range(2000):
        kind = count % 4
        if kind == 0:  # random bytes as the DHCP payload
            payload = rng.randbytes(rng.randrange(0, 600))
        elif kind == 1:  # a real DISCOVER truncated
            payload = discover[:rng.randrange(0, 400)]
        elif kind == 2:  # a real DISCOVER with an option whose length runs off the end
            payload = discover[:300] + bytes([60, 255]) + b"PXEClient"
        else:  # a real DISCOVER with bit flips: many still parse, some still get offers
            flipped = bytearray(discover)
            for _flip in range(8):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            payload = bytes(flipped)
        frame = Ether(src=UNKNOWN_MAC, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67) / payload
        wire.send(bytes(frame))
        if count % 100 == 99:
            # A breath every 100 packets: a burst faster than the socket buffer drains would test the kernel's
            # drops (more so when the other core is busy), not the server's parsing.
            time.sleep(0.05)
    wire.replies(KNOWN_MAC, wait=1.0)  # drain what the bit-flipped DISCOVERs provoked
    # The burst really went through the server (the bit-flipped packets produce events)...
    assert len(proxy.events) > 100
    # ...and afterwards a well-behaved client is still answered, with no exception in the loop. Another host's: the
    # burst spent its own MAC's answers for the interval, as a flood spoofing a MAC should.
    wire.send(captured_frame("seabios-ipxe-rom-e1000.pcap", 1, OTHER_KNOWN_MAC))
    replies = wire.replies(OTHER_KNOWN_MAC, wait=3.0, enough=1)
    assert replies and options_of(replies[0])[67] == SCRIPT_URL.replace("-01.ipxe", "-02.ipxe").encode()
    assert proxy.loop.errors == []


# --- binding ------------------------------------------------------------------------------------


def _start(pair, loop, interface):
    booter = Booter(HostTable([Host("node-1", KNOWN_MAC)]), ServerAddress(pair.server_ip, HTTP_PORT), ("undionly.kpxe",))
    return loop.run(start_proxydhcp(interface, booter, lambda mac, step, **fields: None))


def test_missing_interface_is_reported_with_the_port(netns_pair):
    with netns_pair.event_loop(netns_pair.server_ns) as loop:
        with pytest.raises(PortBindError) as caught:
            _start(netns_pair, loop, "nosuchif0")
    assert caught.value.errno == errno.ENODEV
    assert caught.value.port == 67
    assert "UDP port 67" in str(caught.value) and "nosuchif0" in str(caught.value)


@pytest.mark.parametrize("port, address", [(67, "0.0.0.0"), (4011, "10.213.0.1")])
def test_port_held_by_another_process_is_reported(netns_pair, port, address):
    def hold():  # like a server that did not set SO_REUSEADDR
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((address, port))
        return sock

    assert address in ("0.0.0.0", netns_pair.server_ip)
    holder = netns_pair.call(netns_pair.server_ns, hold)
    try:
        with netns_pair.event_loop(netns_pair.server_ns) as loop:
            with pytest.raises(PortBindError) as caught:
                _start(netns_pair, loop, netns_pair.server_if)
            assert caught.value.errno == errno.EADDRINUSE
            assert caught.value.port == port
            assert "UDP port %d" % port in str(caught.value)
            assert "holds it" in str(caught.value)
            holder.close()
            # The failed start left nothing half-open: once the holder is gone both ports can be had.
            server = _start(netns_pair, loop, netns_pair.server_if)
            loop.call(server.close)
    finally:
        holder.close()


BIND_WITHOUT_PRIVILEGE = """
import asyncio, json, sys
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.booter import Booter
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import ServerAddress
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.proxydhcp import start_proxydhcp
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.udp import PortBindError

async def main():
    try:
        await start_proxydhcp(sys.argv[1], Booter(HostTable([]), ServerAddress(sys.argv[2], 8080), ()), None)
    except PortBindError as exc:
        print(json.dumps({"errno": exc.errno, "port": exc.port, "message": str(exc)}))

asyncio.run(main())
"""


def test_missing_privilege_is_reported_with_the_port(netns_pair):
    # Root without CAP_NET_BIND_SERVICE, the way an unprivileged or confined server would start.
    argv = ["setpriv", "--bounding-set=-net_bind_service", sys.executable, "-c", BIND_WITHOUT_PRIVILEGE, netns_pair.server_if, netns_pair.server_ip]
    result = netns_pair.run(netns_pair.server_ns, argv, timeout=60, env=dict(os.environ))
    report = json.loads(result.stdout)
    assert report["errno"] == errno.EACCES
    assert report["port"] == 67
    assert "UDP port 67" in report["message"] and "CAP_NET_BIND_SERVICE" in report["message"]


def test_replies_to_addresses_nobody_has_hold_up_nobody(proxy, wire):
    # A machine on the segment spoofs a listed MAC with unicast DISCOVERs (no broadcast flag) naming a ciaddr, or
    # a relay (giaddr), that nobody has: were those replies to wait on ARP, they would fill port 67's socket and
    # every later reply, valid ones included, would queue behind them.
    pair = proxy.pair
    pair.give_client_address()
    rng = random.Random(67)
    discover = BOOTP(captured_frame("seabios-ipxe-rom-e1000.pcap", 1, KNOWN_MAC)[42:])
    discover.flags = 0
    spoofed = []
    for index in range(4000):
        nobody = "10.213.0.%d" % rng.randrange(100, 250)
        discover.xid = index
        discover.ciaddr, discover.giaddr = (nobody, "0.0.0.0") if index % 2 else ("0.0.0.0", nobody)
        spoofed.append(bytes(discover))

    def flood():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((pair.client_ip, 0))
            # Paced at about 2,000 a second, about what the server reads: the replies, not the requests, must pile up.
            for index, payload in enumerate(spoofed):
                sock.sendto(payload, (pair.server_ip, DHCP_SERVER_PORT))
                if index % 20 == 19:
                    time.sleep(0.01)

    # A second capture, with room for every frame of the flood, for the replies to KNOWN_MAC.
    spoofed_wire = Wire(pair)
    spoofed_wire.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    pair.call(pair.client_ns, flood)
    flooded = time.monotonic()
    other_mac = "52:54:00:aa:00:02"
    valid = Ether(captured_frame("seabios-ipxe-rom-e1000.pcap", 1, other_mac))
    valid[BOOTP].xid = 0x5EED
    valid[BOOTP].flags = 0x8000
    del valid[IP].chksum, valid[UDP].chksum
    # The flood's own datagrams overflow the port's receive queue (the kernel drops the rest): the valid client
    # retransmits as firmware does, and must be answered once the server has read what got in, within 3 s.
    replies = []
    while not replies and time.monotonic() - flooded < 10:
        wire.send(bytes(valid))
        replies = [frame for frame in wire.replies(other_mac, wait=0.5, enough=1) if frame[BOOTP].xid == 0x5EED]
    answered = time.monotonic() - flooded
    assert replies, "the valid client got no answer within 10 s of the flood"
    assert answered < 3.0, "the valid client waited %.2f s behind the flood" % answered
    # The replies to a ciaddr left at once, as frames to the client's MAC: no ARP, nothing held in the kernel.
    unicast = [frame for frame in spoofed_wire.replies(KNOWN_MAC, wait=1.0) if frame[IP].dst != "255.255.255.255"]
    spoofed_wire.close()
    assert unicast and all(frame[Ether].dst == KNOWN_MAC for frame in unicast)
    assert all(frame[IP].dst == frame[BOOTP].ciaddr or frame[BOOTP].ciaddr == "0.0.0.0" for frame in unicast)
    # The relay replies that found no room were dropped and counted, never queued.
    assert set(proxy.server.sender.dropped) <= {"EAGAIN", "EHOSTUNREACH", "ENOBUFS"}
