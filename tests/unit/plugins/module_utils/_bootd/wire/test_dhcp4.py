# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""DHCPv4 parsing and classification against packets real firmware sent (tests/fixtures/pcap, see its README.md).

Requests are checked against scapy's decoding, an implementation independent of ``dhcp4.parse``; the replies
are tested with the pipeline that builds them (policy/test_proxy.py).
"""

from __future__ import annotations

import pytest
from scapy.layers.dhcp import BOOTP, DHCP, DHCPRevOptions

from ansible_collections.nixie.provision.plugins.module_utils._errors import MalformedPacket
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire.bootp import BOOTREPLY
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire import dhcp4
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import HTTP_CLIENT, PXE_CLIENT, Firmware
from dhcp_packets import UUID_OPTION, VENDOR_PXE_ROM, captured, dhcp_payloads, request_bytes

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
            assert payload[0] == BOOTREPLY, number
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
    with pytest.raises(MalformedPacket):
        dhcp4.parse(captured("seabios-ipxe-rom-e1000.pcap", 1)[:cut])


def test_option_running_past_the_end_is_malformed():
    payload = captured("ovmf-virtio-native.pcap", 1)
    end = payload.index(b"\xff", 240)
    with pytest.raises(MalformedPacket, match="past the end"):
        dhcp4.parse(payload[:end] + b"\x3c\x20PXE")
    with pytest.raises(MalformedPacket, match="no length"):
        dhcp4.parse(payload[:end] + b"\x3c")


def test_bad_message_type_length_is_malformed():
    payload = bytes(BOOTP(op=1, chaddr=b"\x52\x54\x00\xaa\x00\x01") / DHCP(options=[(53, b"\x01\x01"), "end"]))
    with pytest.raises(MalformedPacket, match="option 53"):
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
