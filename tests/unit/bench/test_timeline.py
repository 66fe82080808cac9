"""bench/timeline.py (P8's account of a slow lossy boot): real frames as the machine's tap captured them."""

import struct

from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, ICMPv6ND_RA, ICMPv6ND_RS
from scapy.layers.l2 import Ether

from bench.timeline import boot_timeline

MACHINE = "52:54:00:be:00:08"
SERVER = "02:00:00:00:00:01"
POWER_ON = 1000.0


def frame(seen, sent, udp, payload):
    source, destination = (MACHINE, SERVER) if sent else (SERVER, MACHINE)
    built = Ether(src=source, dst=destination) / IP(src="10.0.0.9" if sent else "10.0.0.1", dst="10.0.0.1" if sent else "10.0.0.9") / udp / payload
    # Decoded from its bytes, as a capture's frames are (options then hold numbers, not the names built with).
    packet = Ether(bytes(built))
    packet.time = POWER_ON + seen
    return packet


def tftp(seen, sent, opcode, block, ports=(40000, 1547)):
    server_port, client_port = ports
    udp = UDP(sport=client_port, dport=server_port) if sent else UDP(sport=server_port, dport=client_port)
    return frame(seen, sent, udp, struct.pack("!HH", opcode, block) + (b"x" * 8 if opcode == 3 else b""))


def test_dhcp_messages_and_a_tftp_transfer_with_a_block_sent_again():
    discover = frame(2.75, True, UDP(sport=68, dport=67),
                     BOOTP(chaddr=bytes.fromhex(MACHINE.replace(":", ""))) / DHCP(options=[("message-type", "discover"), "end"]))
    offer = frame(2.76, False, UDP(sport=67, dport=68),
                  BOOTP(op=2, yiaddr="10.0.0.9", file=b"ipxe.efi") / DHCP(options=[("message-type", "offer"), ("server_id", "10.0.0.2"), "end"]))
    request = frame(3.0, True, UDP(sport=1547, dport=69), struct.pack("!H", 1) + b"ipxe.efi\0octet\0")
    packets = [discover, offer, request,
               # Block 1 arrives and is acknowledged; block 2 arrives twice (its ACK was lost), then both are done.
               tftp(3.1, False, 3, 1), tftp(3.1, True, 4, 1), tftp(3.2, False, 3, 2), tftp(3.2, True, 4, 2),
               tftp(3.3, False, 3, 2), tftp(3.3, True, 4, 2)]
    assert boot_timeline(packets, MACHINE, POWER_ON) == [
        "   2.75 s -> DHCPv4 DISCOVER",
        "   2.76 s <- DHCPv4 OFFER (from 10.0.0.2, address 10.0.0.9, file ipxe.efi)",
        "   3.00 s -> TFTP read request ipxe.efi",
        "   3.10-3.30 s  TFTP transfer: 2 blocks received, 3 DATA (1 again), 3 ACKs sent (1 again)",
    ]


def test_two_transfers_on_different_ports_are_told_apart():
    packets = [tftp(1.0, False, 3, 1, ports=(40000, 1546)), tftp(1.0, True, 4, 1, ports=(40000, 1546)),
               tftp(2.0, False, 3, 1, ports=(40001, 1547)), tftp(2.0, True, 4, 1, ports=(40001, 1547))]
    lines = boot_timeline(packets, MACHINE, POWER_ON)
    assert lines == ["   1.00-1.00 s  TFTP transfer: 1 blocks received, 1 DATA (0 again), 1 ACKs sent (0 again)",
                     "   2.00-2.00 s  TFTP transfer: 1 blocks received, 1 DATA (0 again), 1 ACKs sent (0 again)"]


def test_router_solicitation_advertisement_and_an_http_connection_opening():
    solicitation = Ether(bytes(Ether(src=MACHINE, dst="33:33:00:00:00:02") / IPv6(src="fe80::1", dst="ff02::2") / ICMPv6ND_RS()))
    advertisement = Ether(bytes(Ether(src=SERVER, dst="33:33:00:00:00:01") / IPv6(src="fe80::2", dst="ff02::1") / ICMPv6ND_RA()))
    syn, syn_ack = (Ether(bytes(Ether(src=src, dst=dst) / IP(src=a, dst=b) / TCP(sport=sport, dport=dport, flags=flags)))
                    for src, dst, a, b, sport, dport, flags in ((MACHINE, SERVER, "10.0.0.9", "10.0.0.1", 40000, 8080, "S"),
                                                                (SERVER, MACHINE, "10.0.0.1", "10.0.0.9", 8080, 40000, "SA")))
    ack = Ether(bytes(Ether(src=MACHINE, dst=SERVER) / IP(src="10.0.0.9", dst="10.0.0.1") / TCP(sport=40000, dport=8080, flags="A")))
    for seen, packet in zip((1.0, 1.5, 4.0, 4.001, 4.002), (solicitation, advertisement, syn, syn_ack, ack)):
        packet.time = POWER_ON + seen
    assert boot_timeline([solicitation, advertisement, syn, syn_ack, ack], MACHINE, POWER_ON) == [
        "   1.00 s -> IPv6 router solicitation",
        "   1.50 s <- IPv6 router advertisement",
        "   4.00 s -> TCP SYN to port 8080",
        "   4.00 s <- TCP SYN-ACK from port 8080",
    ]
