# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""DHCPv6 parsing and the client identities in it; the answers for each client type are tested with the pipeline
that builds them (policy/test_proxy.py), and here byte for byte against scapy's encoder."""

from __future__ import annotations

import pytest
from scapy.layers.dhcp6 import (DHCP6_Advertise, DHCP6_Reply, DHCP6OptBootFileUrl, DHCP6OptClientId, DHCP6OptServerId, DHCP6OptUnknown,
                                DHCP6OptVendorClass, VENDOR_CLASS_DATA)

from ansible_collections.nixie.provision.plugins.module_utils._errors import MalformedPacket
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire import dhcp6
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.booter import Booter
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host, ServerAddress
from captures import PCAP_DIR
from dhcp_packets import captured_solicits

OUR_DUID = dhcp6.server_duid("02:00:5e:00:02:13")
BOOTER = Booter(HostTable([Host("node-%d" % n, "52:54:00:aa:00:0%d" % n) for n in range(1, 7)]), ServerAddress("fd5e:213::1", 8080),
                ("ipxe.efi", "undionly.kpxe"))


@pytest.mark.parametrize("address,mac", [("fe80::5054:ff:feaa:5", "52:54:00:aa:00:05"), ("fe80::5054:ff:feaa:5%nixie0", "52:54:00:aa:00:05"),
                                         ("fe80::1", None), ("fd5e:213::5054:ff:feaa:5", None), ("not an address", None)])
def test_mac_from_link_local(address, mac):
    assert dhcp6.mac_from_link_local(address) == mac


@pytest.mark.parametrize("duid,mac", [(bytes.fromhex("00030001525400aa0001"), "52:54:00:aa:00:01"),
                                      (bytes.fromhex("0001000112345678525400aa0001"), "52:54:00:aa:00:01"),
                                      (bytes.fromhex("000478563412bc9af0de1122334455667788"), None),
                                      (bytes.fromhex("00030020525400aa0001"), None), (b"\x00\x03", None), (None, None)])
def test_mac_from_duid(duid, mac):
    assert dhcp6.mac_from_duid(duid) == mac


def test_boot_file_param_is_left_out_when_edk2_could_not_read_it():
    spec = BOOTER.decide("52:54:00:aa:00:01", dhcp6.classify(dhcp6.parse(captured_solicits("ovmf-ipv6-solicit.pcap")[0][0]))).spec
    assert dhcp6.boot_file_param(spec, {}) is None
    assert dhcp6.boot_file_param(spec, {"ipxe.efi": 512 * 0xFFFF}) == b"\x00\x0565535"
    assert dhcp6.boot_file_param(spec, {"ipxe.efi": 512 * 0xFFFF + 1}) is None


def test_server_and_relay_messages_are_not_requests():
    assert dhcp6.parse(bytes(DHCP6_Advertise(trid=1))) is None
    assert dhcp6.parse(bytes(DHCP6_Reply(trid=1))) is None
    assert dhcp6.parse(b"\x0c" + bytes(40)) is None  # Relay-forward


@pytest.mark.parametrize("data", [b"", b"\x01\x00\x00", b"\x01\x00\x00\x01\x00", b"\x01\x00\x00\x01\x00\x01\x00\x05abc"])
def test_truncated_messages_are_malformed(data):
    with pytest.raises(MalformedPacket):
        dhcp6.parse(data)


def test_server_duid_is_a_duid_ll_of_the_interface_mac():
    assert dhcp6.server_duid("02:00:5e:00:02:13") == bytes.fromhex("00030001" + "02005e000213")
    assert dhcp6.mac_from_duid(OUR_DUID) == "02:00:5e:00:02:13"


def _captured_requests():
    for path in sorted(PCAP_DIR.glob("*.pcap")):
        for number, (payload, source) in enumerate(captured_solicits(path.name)):
            request = dhcp6.parse(payload, source)
            if request is not None:
                yield pytest.param(request, id="%s-%d" % (path.name, number))


@pytest.mark.parametrize("sizes", [{"ipxe.efi": 1 << 20}, {}], ids=["with-size", "without"])
@pytest.mark.parametrize("request_", list(_captured_requests()))
def test_the_answer_to_every_captured_request_is_the_one_scapy_builds(request_, sizes):
    firmware = dhcp6.classify(request_)
    mac = dhcp6.mac_from_duid(request_.client_duid) or dhcp6.mac_from_link_local(request_.source[0])
    spec = BOOTER.decide(mac, firmware).spec
    reply = dhcp6.build_reply(request_, spec, "fd5e:213::1", OUR_DUID, sizes)
    layer = DHCP6_Advertise if request_.message_type == dhcp6.SOLICIT else DHCP6_Reply
    packet = layer(trid=request_.xid)
    if request_.client_duid is not None:
        packet /= DHCP6OptClientId(duid=request_.client_duid)
    packet /= DHCP6OptServerId(duid=OUR_DUID)
    packet /= DHCP6OptVendorClass(enterprisenum=dhcp6.ENTERPRISE_PXE, vcdata=[VENDOR_CLASS_DATA(data=spec.vendor_class.encode())])
    packet /= DHCP6OptBootFileUrl(optdata=dhcp6.boot_file_url(spec, "fd5e:213::1").encode())
    if dhcp6.boot_file_param(spec, sizes) is not None:
        packet /= DHCP6OptUnknown(optcode=dhcp6.OPT_BOOTFILE_PARAM, data=dhcp6.boot_file_param(spec, sizes))
    assert reply.payload == bytes(packet)
