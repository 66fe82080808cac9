# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ProxyDHCP packet logic against packets real firmware sent (tests/fixtures/pcap, see its README.md).

Replies are checked by decoding them with scapy, an implementation independent of ``dhcp4.parse``.
"""

from __future__ import annotations

import pytest
from scapy.layers.dhcp import BOOTP, DHCP, DHCPRevOptions
from scapy.layers.inet import UDP
from scapy.utils import rdpcap

from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire import dhcp4
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.booter import Booter
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import HTTP_CLIENT, PXE_CLIENT, Firmware, Host, ServerAddress
from captures import PCAP_DIR

SERVER = ServerAddress("10.213.0.1", 8080)
SITE_DHCP_SERVER = "10.88.0.1"  # dnsmasq in the captures
UUID_OPTION = bytes.fromhex("0078563412bc9af0de1122334455667788")
HOSTS = [Host("node-%d" % n, "52:54:00:aa:00:0%d" % n) for n in range(1, 7)]
BOOTER = Booter(HostTable(HOSTS), SERVER, ("undionly.kpxe", "ipxe.efi"))

IPXE_BIOS = Firmware(0, PXE_CLIENT, True)
IPXE_EFI = Firmware(7, PXE_CLIENT, True)
EDK2_PXE = Firmware(7, PXE_CLIENT, False)
EDK2_HTTP = Firmware(16, HTTP_CLIENT, False)
D, R = dhcp4.DHCPDISCOVER, dhcp4.DHCPREQUEST


def _numbers(first, last):
    return range(first, last + 1)


# Every DHCPv4 client packet in the captures: capture -> {packet number: (type, firmware, broadcast flag)},
# numbered as in the README's per-packet listing. Packets not listed must be the server's replies.
EXPECTED = {
    "seabios-ipxe-rom-e1000.pcap": ("52:54:00:aa:00:01", {n: (D, IPXE_BIOS, False) for n in _numbers(1, 4)}),
    "seabios-ipxe-rom-e1000-nouuid.pcap": ("52:54:00:aa:00:01", {n: (D, IPXE_BIOS, False) for n in _numbers(1, 4)}),
    # Generation 1 is the ROM, generation 2 undionly.kpxe: same options, only the broadcast flag differs.
    "seabios-ipxe-chainload.pcap": ("52:54:00:aa:00:02", {
        1: (D, IPXE_BIOS, False), 3: (D, IPXE_BIOS, False), 5: (R, IPXE_BIOS, False),
        8: (D, IPXE_BIOS, True), 10: (D, IPXE_BIOS, True), 12: (R, IPXE_BIOS, True),
    }),
    "seabios-ipxe-chainload-loop.pcap": ("52:54:00:aa:00:02", dict(
        [(1, (D, IPXE_BIOS, False)), (3, (D, IPXE_BIOS, False)), (5, (R, IPXE_BIOS, False))]
        + [(start + offset, (kind, IPXE_BIOS, True)) for start in (8, 15, 22, 29) for offset, kind in ((0, D), (2, D), (4, R))]
    )),
    "ovmf-e1000.pcap": ("52:54:00:aa:00:03", dict(
        [(n, (D, IPXE_EFI, False)) for n in _numbers(1, 4)]
        + [(n, (D, EDK2_PXE, True)) for n in _numbers(5, 8)]
        + [(n, (D, EDK2_HTTP, True)) for n in _numbers(13, 16)]
    )),
    "ovmf-virtio-native.pcap": ("52:54:00:aa:00:04", {n: (D, EDK2_PXE, True) for n in _numbers(1, 4)}),
    "ovmf-ipv6-solicit.pcap": ("52:54:00:aa:00:05", dict(
        [(n, (D, IPXE_EFI, False)) for n in _numbers(1, 4)] + [(n, (D, EDK2_PXE, True)) for n in _numbers(5, 8)]
    )),
    "ovmf-httpboot.pcap": ("52:54:00:aa:00:06", {
        1: (D, EDK2_HTTP, True), 3: (R, EDK2_HTTP, True), 5: (D, IPXE_EFI, False), 7: (D, IPXE_EFI, False), 9: (R, IPXE_EFI, False),
    }),
}


def dhcp_payloads(capture):
    """{packet number: UDP payload} for every DHCPv4 packet (either direction) of a capture."""
    return {
        number: bytes(frame[UDP].payload)
        for number, frame in enumerate(rdpcap(str(PCAP_DIR / capture)), 1)
        if UDP in frame and frame[UDP].dport in (dhcp4.DHCP_SERVER_PORT, dhcp4.DHCP_CLIENT_PORT)
    }


def captured(capture, number):
    return dhcp_payloads(capture)[number]


def scapy_options(payload):
    """Decode a reply with scapy: (BOOTP layer, {option code: value as scapy decodes it})."""
    bootp = BOOTP(payload)
    options = {}
    for item in bootp[DHCP].options:
        if isinstance(item, tuple):
            name, value = item
            options[name if isinstance(name, int) else DHCPRevOptions[name][0]] = value
    return bootp, options


def request_bytes(mac="52:54:00:aa:00:01", options=(), message_type="discover", flags=0, ciaddr="0.0.0.0", giaddr="0.0.0.0", op=1):
    """A DHCP request built with scapy, for cases the captures do not contain."""
    packet = BOOTP(op=op, xid=0x11223344, flags=flags, ciaddr=ciaddr, giaddr=giaddr, chaddr=bytes.fromhex(mac.replace(":", "")))
    return bytes(packet / DHCP(options=[("message-type", message_type)] + list(options) + ["end"]))


VENDOR_PXE_ROM = [("vendor_class_id", b"PXEClient:Arch:00000:UNDI:002001"), (93, b"\x00\x00")]


# --- parse and classify: every real packet ---------------------------------------------------------


@pytest.mark.parametrize("capture", sorted(EXPECTED))
def test_every_captured_request_is_parsed_and_classified(capture):
    mac, expected = EXPECTED[capture]
    payloads = dhcp_payloads(capture)
    seen = {}
    for number, payload in payloads.items():
        request = dhcp4.parse(payload)
        if request is None:
            # dnsmasq's OFFER/ACK in the answered captures: BOOTREPLY, nothing for a server.
            assert payload[0] == dhcp4.BOOTREPLY, number
            continue
        assert request.mac == mac
        assert request.chaddr[:6] == bytes.fromhex(mac.replace(":", ""))
        seen[number] = (request.message_type, dhcp4.classify(request), bool(request.flags & dhcp4.BROADCAST_FLAG))
    assert seen == expected


@pytest.mark.parametrize("capture", sorted(EXPECTED))
def test_parse_agrees_with_scapy(capture):
    for number, payload in dhcp_payloads(capture).items():
        request = dhcp4.parse(payload)
        if request is None:
            continue
        bootp = BOOTP(payload)
        assert (request.xid, request.flags, request.ciaddr, request.giaddr) == (bootp.xid, bootp.flags, bootp.ciaddr, bootp.giaddr), number
        assert request.chaddr == bootp.chaddr
        scapy_codes = [
            item[0] if isinstance(item[0], int) else DHCPRevOptions[item[0]][0]
            for item in bootp[DHCP].options if isinstance(item, tuple)
        ]
        assert sorted(request.options) == sorted(scapy_codes)
        assert request.options[dhcp4.OPT_CLIENT_UUID] in (UUID_OPTION, bytes(17))


def test_option_values_of_the_ipxe_rom():
    request = dhcp4.parse(captured("seabios-ipxe-rom-e1000.pcap", 1))
    assert request.options[60] == b"PXEClient:Arch:00000:UNDI:002001"
    assert request.options[77] == b"iPXE"
    assert request.options[93] == b"\x00\x00"
    assert request.options[61] == b"\x01" + bytes.fromhex("525400aa0001")
    assert request.xid == 0x5DD76B0A


def test_classify_plain_dhcp_client_is_not_pxe():
    request = dhcp4.parse(request_bytes(options=[("vendor_class_id", b"udhcp 1.35.0"), ("hostname", b"box")]))
    assert request is not None
    assert dhcp4.classify(request) is None
    assert dhcp4.classify(dhcp4.parse(request_bytes())) is None


def test_classify_takes_arch_from_option_60_without_option_93():
    request = dhcp4.parse(request_bytes(options=[("vendor_class_id", b"PXEClient:Arch:00011:UNDI:003000")]))
    assert dhcp4.classify(request) == Firmware(11, PXE_CLIENT, False)


def test_classify_defaults_to_bios_when_no_arch_is_given():
    request = dhcp4.parse(request_bytes(options=[("vendor_class_id", b"PXEClient")]))
    assert dhcp4.classify(request) == Firmware(0, PXE_CLIENT, False)


def test_classify_http_client_arch_16_is_x64_http_boot():
    request = dhcp4.parse(request_bytes(options=[("vendor_class_id", b"HTTPClient:Arch:00016:UNDI:003000"), (93, b"\x00\x10")]))
    assert dhcp4.classify(request) == Firmware(16, HTTP_CLIENT, False)


def test_classify_ipxe_by_rfc3004_user_class_or_option_175():
    by_user_class = request_bytes(options=VENDOR_PXE_ROM + [(77, b"\x04iPXE")])
    by_175 = request_bytes(options=VENDOR_PXE_ROM + [(175, b"\xeb\x03\x01\x00\x00")])
    assert dhcp4.classify(dhcp4.parse(by_user_class)).is_ipxe
    assert dhcp4.classify(dhcp4.parse(by_175)).is_ipxe
    assert not dhcp4.classify(dhcp4.parse(request_bytes(options=VENDOR_PXE_ROM))).is_ipxe


# --- parse: what is not a request, and what is malformed --------------------------------------------


def test_bootreply_is_not_a_request():
    assert dhcp4.parse(request_bytes(options=VENDOR_PXE_ROM, op=2, message_type="offer")) is None


def test_plain_bootp_without_magic_cookie_is_ignored():
    assert dhcp4.parse(bytes(BOOTP(op=1, chaddr=b"\x52\x54\x00\xaa\x00\x01", options=b"")) + bytes(64)) is None


def test_non_ethernet_hardware_is_ignored():
    payload = bytearray(captured("seabios-ipxe-rom-e1000.pcap", 1))
    payload[1] = 32  # InfiniBand
    assert dhcp4.parse(bytes(payload)) is None


def test_missing_message_type_is_not_dhcp():
    payload = bytes(BOOTP(op=1, chaddr=b"\x52\x54\x00\xaa\x00\x01") / DHCP(options=[("vendor_class_id", b"PXEClient"), "end"]))
    assert dhcp4.parse(payload) is None


@pytest.mark.parametrize("cut", [0, 1, 100, 239])
def test_truncated_header_is_malformed(cut):
    with pytest.raises(dhcp4.MalformedPacket):
        dhcp4.parse(captured("seabios-ipxe-rom-e1000.pcap", 1)[:cut])


def test_option_running_past_the_end_is_malformed():
    payload = captured("ovmf-virtio-native.pcap", 1)
    end = payload.index(b"\xff", 240)
    with pytest.raises(dhcp4.MalformedPacket, match="past the end"):
        dhcp4.parse(payload[:end] + b"\x3c\x20PXE")
    with pytest.raises(dhcp4.MalformedPacket, match="no length"):
        dhcp4.parse(payload[:end] + b"\x3c")


def test_bad_message_type_length_is_malformed():
    payload = bytes(BOOTP(op=1, chaddr=b"\x52\x54\x00\xaa\x00\x01") / DHCP(options=[(53, b"\x01\x01"), "end"]))
    with pytest.raises(dhcp4.MalformedPacket, match="option 53"):
        dhcp4.parse(payload)


def test_missing_end_option_and_pads_are_tolerated():
    payload = captured("ovmf-virtio-native.pcap", 1)
    end = payload.index(b"\xff", 240)
    request = dhcp4.parse(payload[:end] + b"\x00\x00")
    assert dhcp4.classify(request) == EDK2_PXE


def test_split_long_option_is_joined():
    # RFC 3396: a repeated option is one value split in parts.
    payload = request_bytes(options=[(60, b"PXEClient:Arch:"), (60, b"00007:UNDI:003000")])
    request = dhcp4.parse(payload)
    assert request.options[60] == b"PXEClient:Arch:00007:UNDI:003000"
    assert dhcp4.classify(request).arch == 7


# --- replies: every field, decoded by scapy ---------------------------------------------------------

SCRIPT_URL_1 = "http://10.213.0.1:8080/boot/52-54-00-aa-00-01.ipxe"

REPLY_CASES = [
    # QEMU's BIOS ROM is already iPXE: straight to the script, no undionly.kpxe chainload loop.
    pytest.param("seabios-ipxe-rom-e1000.pcap", 1, SCRIPT_URL_1, PXE_CLIENT, True, id="seabios-ipxe-rom"),
    pytest.param("seabios-ipxe-chainload.pcap", 8, "http://10.213.0.1:8080/boot/52-54-00-aa-00-02.ipxe", PXE_CLIENT, True, id="undionly-kpxe"),
    pytest.param("ovmf-e1000.pcap", 1, "http://10.213.0.1:8080/boot/52-54-00-aa-00-03.ipxe", PXE_CLIENT, True, id="ovmf-ipxe-efi-rom"),
    pytest.param("ovmf-e1000.pcap", 5, "ipxe.efi", PXE_CLIENT, False, id="ovmf-edk2-pxe-over-ipxe-nii"),
    pytest.param("ovmf-e1000.pcap", 13, "http://10.213.0.1:8080/ipxe/ipxe.efi", HTTP_CLIENT, False, id="ovmf-http-boot-e1000"),
    pytest.param("ovmf-virtio-native.pcap", 1, "ipxe.efi", PXE_CLIENT, False, id="ovmf-virtio-native-pxe"),
    pytest.param("ovmf-httpboot.pcap", 1, "http://10.213.0.1:8080/ipxe/ipxe.efi", HTTP_CLIENT, False, id="ovmf-http-boot"),
    pytest.param("ovmf-httpboot.pcap", 5, "http://10.213.0.1:8080/boot/52-54-00-aa-00-06.ipxe", PXE_CLIENT, True, id="ipxe-efi-after-http-boot"),
]


@pytest.mark.parametrize("capture, number, boot_file, vendor_class, is_ipxe", REPLY_CASES)
def test_proxy_offer_for_captured_discover(capture, number, boot_file, vendor_class, is_ipxe):
    payload = captured(capture, number)
    request = dhcp4.parse(payload)
    outcome = dhcp4.handle(payload, ("0.0.0.0", 68), dhcp4.DHCP_SERVER_PORT, BOOTER)
    assert outcome.step == dhcp4.STEP_OFFER
    assert outcome.mac == request.mac
    assert outcome.fields["boot_file"] == boot_file

    bootp, options = scapy_options(outcome.reply.payload)
    assert bootp.op == dhcp4.BOOTREPLY
    assert bootp.xid == request.xid
    assert bootp.chaddr == request.chaddr
    assert bootp.flags == request.flags
    # A proxy never hands out addresses: that is the site DHCP server's job.
    assert (bootp.yiaddr, bootp.ciaddr, bootp.giaddr) == ("0.0.0.0", "0.0.0.0", "0.0.0.0")
    assert bootp.siaddr == SERVER.ip
    assert bootp.file.rstrip(b"\x00") == boot_file.encode()
    assert options[53] == dhcp4.DHCPOFFER
    assert options[54] == SERVER.ip
    assert options[60] == vendor_class.encode()
    assert options[66] == SERVER.ip.encode()
    assert options[67] == boot_file.encode()
    assert options[97] == request.options[97] == UUID_OPTION
    assert not {1, 3, 6, 51}.intersection(options), "a proxy offer must not configure the network"
    if vendor_class == PXE_CLIENT:
        assert options[43] == b"\x06\x01\x08\xff"  # PXE discovery control: boot this file, no discovery
    else:
        assert 43 not in options
    if is_ipxe:
        assert options[175] == b"\xb0\x01\x01"  # no-pxedhcp: skip iPXE's ~2 s ProxyDHCP wait
    else:
        assert 175 not in options
    assert len(outcome.reply.payload) >= 300


def test_vendor_bios_pxe_rom_gets_undionly_over_tftp():
    # Intel Boot Agent & co. send no option 77; QEMU has no such ROM, so the packet is the iPXE ROM's minus 77/175.
    bootp = BOOTP(captured("seabios-ipxe-rom-e1000.pcap", 1))
    bootp[DHCP].options = [o for o in bootp[DHCP].options if not (isinstance(o, tuple) and o[0] in ("user_class", 175))]
    outcome = dhcp4.handle(bytes(bootp), ("0.0.0.0", 68), dhcp4.DHCP_SERVER_PORT, BOOTER)
    reply, options = scapy_options(outcome.reply.payload)
    assert options[67] == b"undionly.kpxe"
    assert reply.file.rstrip(b"\x00") == b"undionly.kpxe"
    assert reply.siaddr == SERVER.ip
    assert 175 not in options


def test_no_uuid_zero_uuid_is_echoed():
    outcome = dhcp4.handle(captured("seabios-ipxe-rom-e1000-nouuid.pcap", 1), ("0.0.0.0", 68), 67, BOOTER)
    assert scapy_options(outcome.reply.payload)[1][97] == bytes(17)


def test_no_uuid_sent_no_uuid_echoed():
    outcome = dhcp4.handle(request_bytes(options=VENDOR_PXE_ROM), ("0.0.0.0", 68), 67, BOOTER)
    assert 97 not in scapy_options(outcome.reply.payload)[1]


def test_short_reply_is_padded_to_the_bootp_minimum():
    # 240 header bytes + 49 option bytes: RFC 1542 relays and old PXE ROMs drop anything under 300.
    outcome = dhcp4.handle(request_bytes(options=VENDOR_PXE_ROM), ("0.0.0.0", 68), 67, BOOTER)
    payload = outcome.reply.payload
    assert len(payload) == 300
    assert payload.rstrip(b"\x00").endswith(b"\xff")
    assert scapy_options(payload)[1][67] == b"undionly.kpxe"


def test_ack_on_pxe_port_goes_back_to_the_source():
    # After a proxy offer, iPXE and EDK2 ask the proxy again with a unicast REQUEST to port 4011.
    payload = request_bytes(options=VENDOR_PXE_ROM + [(97, UUID_OPTION)], message_type="request", ciaddr="10.88.0.186")
    outcome = dhcp4.handle(payload, ("10.88.0.186", 4011), dhcp4.PXE_PORT, BOOTER)
    assert outcome.step == dhcp4.STEP_ACK
    assert outcome.reply.destination == ("10.88.0.186", 4011)
    bootp, options = scapy_options(outcome.reply.payload)
    assert options[53] == dhcp4.DHCPACK
    assert (bootp.yiaddr, bootp.ciaddr) == ("0.0.0.0", "10.88.0.186")
    assert options[67] == b"undionly.kpxe"


def test_discover_on_pxe_port_is_not_answered():
    assert dhcp4.handle(captured("ovmf-virtio-native.pcap", 1), ("10.88.0.186", 68), dhcp4.PXE_PORT, BOOTER) is None


def test_request_to_the_site_server_is_left_alone():
    # Packet 9: ipxe.efi accepting dnsmasq's lease (option 54 = 10.88.0.1). That ACK is not ours to send.
    payload = captured("ovmf-httpboot.pcap", 9)
    assert dhcp4.parse(payload).options[54] == bytes([10, 88, 0, 1])
    assert dhcp4.handle(payload, ("0.0.0.0", 68), 67, BOOTER) is None


def test_request_naming_us_is_acked():
    site_booter = Booter(HostTable(HOSTS), ServerAddress(SITE_DHCP_SERVER, 8080), ("undionly.kpxe", "ipxe.efi"))
    outcome = dhcp4.handle(captured("ovmf-httpboot.pcap", 9), ("0.0.0.0", 68), 67, site_booter)
    assert outcome.step == dhcp4.STEP_ACK
    bootp, options = scapy_options(outcome.reply.payload)
    assert options[53] == dhcp4.DHCPACK
    assert bootp.yiaddr == "0.0.0.0"
    assert options[67] == b"http://10.88.0.1:8080/boot/52-54-00-aa-00-06.ipxe"


# --- where replies go ------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, ciaddr, giaddr, expected", [
    pytest.param(0x8000, "0.0.0.0", "0.0.0.0", ("255.255.255.255", 68), id="broadcast-flag"),
    pytest.param(0, "0.0.0.0", "0.0.0.0", ("255.255.255.255", 68), id="no-address-yet"),
    pytest.param(0x8000, "10.88.0.186", "0.0.0.0", ("255.255.255.255", 68), id="broadcast-flag-wins"),
    pytest.param(0, "10.88.0.186", "0.0.0.0", ("10.88.0.186", 68), id="unicast-to-ciaddr"),
    pytest.param(0x8000, "0.0.0.0", "192.0.2.1", ("192.0.2.1", 67), id="relay"),
    pytest.param(0, "10.88.0.186", "192.0.2.1", ("192.0.2.1", 67), id="relay-unicast-client"),
])
def test_reply_destination(flags, ciaddr, giaddr, expected):
    payload = request_bytes(options=VENDOR_PXE_ROM, flags=flags, ciaddr=ciaddr, giaddr=giaddr)
    outcome = dhcp4.handle(payload, ("192.0.2.1" if giaddr != "0.0.0.0" else ciaddr, 68), 67, BOOTER)
    assert outcome.reply.destination == expected
    assert outcome.fields["to"] == "%s:%d" % expected
    bootp = BOOTP(outcome.reply.payload)
    assert bootp.giaddr == giaddr
    assert bootp.flags == flags
    assert bootp.yiaddr == "0.0.0.0"


# --- silence -------------------------------------------------------------------------------------


def test_unknown_mac_gets_no_reply_but_an_event():
    outcome = dhcp4.handle(request_bytes(mac="02:00:00:00:00:99", options=VENDOR_PXE_ROM), ("0.0.0.0", 68), 67, BOOTER)
    assert outcome.reply is None
    assert outcome.step == dhcp4.STEP_IGNORED
    assert outcome.mac == "02:00:00:00:00:99"
    assert outcome.fields["reason"] == "unknown MAC address"


def test_plain_dhcp_from_unknown_mac_is_not_even_reported():
    payload = request_bytes(mac="02:00:00:00:00:99", options=[("vendor_class_id", b"udhcp 1.35.0")])
    assert dhcp4.handle(payload, ("0.0.0.0", 68), 67, BOOTER) is None


def test_plain_dhcp_from_known_host_is_reported_not_answered():
    outcome = dhcp4.handle(request_bytes(options=[("vendor_class_id", b"udhcp 1.35.0")]), ("0.0.0.0", 68), 67, BOOTER)
    assert outcome.reply is None
    assert outcome.step == dhcp4.STEP_IGNORED
    assert outcome.fields["reason"] == "not a PXE or HTTP boot request"


def test_unsupported_arch_is_reported_not_answered():
    payload = request_bytes(options=[("vendor_class_id", b"PXEClient:Arch:00006:UNDI:003000"), (93, b"\x00\x06")])
    outcome = dhcp4.handle(payload, ("0.0.0.0", 68), 67, BOOTER)
    assert outcome.reply is None
    assert outcome.fields["arch"] == 6
    assert "architecture 6" in outcome.fields["reason"]


@pytest.mark.parametrize("payload", [
    pytest.param(b"", id="empty"),
    pytest.param(b"\x01" * 100, id="short"),
    pytest.param(request_bytes(options=VENDOR_PXE_ROM, op=2, message_type="offer"), id="bootreply"),
    pytest.param(request_bytes(options=VENDOR_PXE_ROM, message_type="inform"), id="inform"),
    pytest.param(request_bytes(options=VENDOR_PXE_ROM, message_type="release"), id="release"),
])
def test_silent_on_non_requests(payload):
    assert dhcp4.handle(payload, ("0.0.0.0", 68), 67, BOOTER) is None


def test_yiaddr_is_zero_in_every_reply_to_every_captured_request():
    replies = 0
    site_booter = Booter(HostTable(HOSTS), ServerAddress(SITE_DHCP_SERVER, 8080), ("undionly.kpxe", "ipxe.efi"))
    for capture in EXPECTED:
        for payload in dhcp_payloads(capture).values():
            for port in (dhcp4.DHCP_SERVER_PORT, dhcp4.PXE_PORT):
                outcome = dhcp4.handle(payload, ("10.88.0.186", 68), port, site_booter)
                if outcome is not None and outcome.reply is not None:
                    replies += 1
                    assert BOOTP(outcome.reply.payload).yiaddr == "0.0.0.0"
    assert replies == 49 + 2 * 9  # every DISCOVER offered on port 67; every REQUEST acked on 67 and on 4011
