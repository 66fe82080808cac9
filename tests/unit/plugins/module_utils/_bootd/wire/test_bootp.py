# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""BOOTP reply encoding against scapy, an encoder and decoder independent of ``wire.bootp``: for the request of every
packet real firmware sent (tests/fixtures/pcap), the reply ``dhcp4.build_reply`` makes is byte for byte the one scapy's
BOOTP/DHCP layers build from the same fields, and scapy decodes it to those fields.
"""

from __future__ import annotations

import pytest
from scapy.layers.dhcp import BOOTP, DHCP

from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import PXE_CLIENT, BootSpec, ServerAddress
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire import bootp, dhcp4
from captures import PCAP_DIR
from dhcp_packets import dhcp_payloads

SERVER = ServerAddress("10.213.0.1", 8080)
SPECS = [BootSpec("undionly.kpxe", PXE_CLIENT), BootSpec("http://10.213.0.1:8080/boot/52-54-00-aa-00-02.ipxe?token=%s" % ("t" * 40), "HTTPClient")]


def _requests():
    for capture in sorted(path.name for path in PCAP_DIR.glob("*.pcap")):
        for number, payload in dhcp_payloads(capture).items():
            request = dhcp4.parse(payload)
            if request is not None:
                yield pytest.param(request, id="%s-%d" % (capture, number))


def _scapy_reply(request, spec, message_type):
    options = [(dhcp4.OPT_MESSAGE_TYPE, bytes((message_type,))), (dhcp4.OPT_SERVER_ID, b"\x0a\xd5\x00\x01"),
               (dhcp4.OPT_VENDOR_CLASS, spec.vendor_class.encode()), (dhcp4.OPT_TFTP_SERVER_NAME, SERVER.ip.encode()),
               (dhcp4.OPT_BOOT_FILE, spec.boot_file.encode())]
    if spec.vendor_class == PXE_CLIENT:
        options.append((dhcp4.OPT_VENDOR_SPECIFIC, b"\x06\x01\x08\xff"))
    if dhcp4.OPT_CLIENT_UUID in request.options:
        options.append((dhcp4.OPT_CLIENT_UUID, request.options[dhcp4.OPT_CLIENT_UUID]))
    if dhcp4.OPT_IPXE_ENCAPSULATED in request.options or b"iPXE" in request.options.get(dhcp4.OPT_USER_CLASS, b""):
        options.append((dhcp4.OPT_IPXE_ENCAPSULATED, b"\xb0\x01\x01"))
    packet = BOOTP(op=2, htype=1, hlen=6, xid=request.xid, flags=request.flags & dhcp4.BROADCAST_FLAG,
                   ciaddr=request.ciaddr if message_type == dhcp4.DHCPACK else "0.0.0.0", yiaddr="0.0.0.0", siaddr=SERVER.ip,
                   giaddr=request.giaddr, chaddr=request.chaddr, file=spec.boot_file.encode()) / DHCP(options=options + ["end"])
    payload = bytes(packet)
    return payload + bytes(max(0, 300 - len(payload)))


@pytest.mark.parametrize("spec", SPECS, ids=["tftp", "http"])
@pytest.mark.parametrize("request_", list(_requests()))
def test_reply_to_every_captured_request_is_the_one_scapy_builds(request_, spec):
    reply = dhcp4.build_reply(request_, spec, SERVER)
    message_type = dhcp4.DHCPOFFER if request_.message_type == dhcp4.DHCPDISCOVER else dhcp4.DHCPACK
    assert reply.message_type == message_type
    assert reply.payload == _scapy_reply(request_, spec, message_type)
    decoded = BOOTP(reply.payload)
    assert (decoded.op, decoded.xid, decoded.chaddr, decoded.siaddr, decoded.yiaddr) == (2, request_.xid, request_.chaddr, SERVER.ip, "0.0.0.0")
    assert dict(item for item in decoded[DHCP].options if isinstance(item, tuple))["boot-file-name"] == spec.boot_file.encode()


def test_a_value_longer_than_an_option_is_split_in_order_and_the_file_field_is_cut():
    boot_file = b"http://10.213.0.1:8080/" + b"x" * 300
    payload = bootp.encode_reply(0x1234, 0x8000, "0.0.0.0", "10.213.0.1", "0.0.0.0", bytes(6), boot_file, [(dhcp4.OPT_BOOT_FILE, boot_file), (53, b"\x02")])
    assert payload[:1] == b"\x02" and len(payload) >= bootp.MIN_LENGTH
    assert payload[108:236] == boot_file[:128]
    # RFC 3396: 67 (255 bytes), 67 (the rest), then 53; dhcp4.parse is the decoder that joins split options.
    assert payload[240] == 67 and payload[241] == 255 and payload[242 + 255] == 67 and payload[243 + 255] == len(boot_file) - 255
    assert payload[244 + len(boot_file):247 + len(boot_file)] == b"\x35\x01\x02"
    requestish = b"\x01" + payload[1:]
    assert dhcp4.parse(requestish).options[dhcp4.OPT_BOOT_FILE] == boot_file


def test_short_reply_is_padded_to_the_bootp_minimum_and_ends_with_end():
    payload = bootp.encode_reply(1, 0, "0.0.0.0", "10.213.0.1", "0.0.0.0", bytes(6), b"", [(53, b"\x02")])
    assert len(payload) == bootp.MIN_LENGTH
    assert payload[240:244] == b"\x35\x01\x02\xff" and payload[244:] == bytes(bootp.MIN_LENGTH - 244)
