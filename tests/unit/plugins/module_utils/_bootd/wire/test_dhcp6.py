"""Proxy DHCPv6 answers for each client type, from the real EDK2 Solicits in tests/fixtures/pcap and from
hand-built iPXE and HTTP-boot messages. Every answer is checked the way EDK2 and iPXE check it."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.dhcp6 import (DHCP6, DHCP6_Advertise, DHCP6_InfoRequest, DHCP6_Reply, DHCP6_Request, DHCP6_Solicit, DHCP6OptClientArchType,
                                DHCP6OptClientId, DHCP6OptIA_NA, DHCP6OptServerId, DHCP6OptUserClass, DHCP6OptVendorClass, DUID_LL,
                                USER_CLASS_DATA, VENDOR_CLASS_DATA)
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6

from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire import dhcp6
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.booter import Booter
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host, ServerAddress
from captures import dhcp6_options, udp_frames

SERVER = ServerAddress("fd5e:213::1", 8080)
OUR_DUID = dhcp6.server_duid("02:00:5e:00:02:13")
SIZES = {"ipxe.efi": 1024 * 1024 + 1}
BOOTER = Booter(HostTable([Host("node-%d" % n, "52:54:00:aa:00:0%d" % n) for n in range(1, 7)]), SERVER, ("ipxe.efi", "undionly.kpxe"))
LINK_LOCAL_SCOPE = 3


def captured_solicits(name):
    """(payload, source) of every Solicit in a capture, the source as recvfrom gives it on a scoped socket."""
    return [(bytes(frame[UDP].payload), (frame[IPv6].src, frame[UDP].sport, 0, LINK_LOCAL_SCOPE))
            for frame in udp_frames(name, (dhcp6.SERVER_PORT,))]


def handle(payload, source, port=dhcp6.SERVER_PORT, memo=None, booter=BOOTER):
    return dhcp6.handle(payload, source, port, booter, OUR_DUID, memo if memo is not None else dhcp6.ClientMemo(), SIZES)


def edk2_accepts_as_proxy_offer(payload, solicit):
    """What PxeBcDhcp6.c and Dhcp6Io.c require of a proxy offer (see dhcp6's module docstring)."""
    options = dhcp6_options(payload)
    vendor = options[dhcp6.OPT_VENDOR_CLASS]
    return (payload[1:4] == solicit[1:4] and options[dhcp6.OPT_CLIENTID] == dhcp6_options(solicit)[dhcp6.OPT_CLIENTID]
            and dhcp6.OPT_SERVERID in options and 3 not in options and 13 not in options
            and len(vendor) >= 13 and vendor[:4] == struct.pack("!I", 343) and vendor[6:15] == b"PXEClient")


@pytest.mark.parametrize("capture,mac", [("ovmf-ipv6-solicit.pcap", "52:54:00:aa:00:05"), ("ovmf-virtio-native.pcap", "52:54:00:aa:00:04"),
                                         ("ovmf-e1000.pcap", "52:54:00:aa:00:03")])
def test_real_edk2_pxe_solicit_gets_a_proxy_advertise_for_ipxe_efi_over_tftp(capture, mac):
    payload, source = [(p, s) for p, s in captured_solicits(capture) if b"PXEClient" in p][0]
    # The DUID is a DUID-UUID: the MAC comes from the EUI-64 link-local source address.
    assert dhcp6_options(payload)[dhcp6.OPT_CLIENTID][:2] == b"\x00\x04"
    outcome = handle(payload, source)
    assert outcome.mac == mac and outcome.step == "dhcp_offer"
    reply = outcome.reply
    assert reply.message_type == dhcp6.ADVERTISE and reply.payload[0] == dhcp6.ADVERTISE
    assert edk2_accepts_as_proxy_offer(reply.payload, payload)
    options = dhcp6_options(reply.payload)
    assert options[dhcp6.OPT_BOOTFILE_URL] == b"tftp://[fd5e:213::1]/ipxe.efi"
    # Option 60: one parameter, the size in 512-byte blocks, rounded up (EDK2 reads it as the file size).
    assert options[dhcp6.OPT_BOOTFILE_PARAM] == b"\x00\x042049"
    assert options[dhcp6.OPT_SERVERID] == OUR_DUID
    assert reply.destination == (source[0], dhcp6.CLIENT_PORT, 0, LINK_LOCAL_SCOPE)
    # EDK2's DHCPv6 driver listens before it solicits: an Advertise goes out once.
    assert reply.send_again_after == ()
    # scapy reads it back as an Advertise with the layers EDK2 looks for.
    parsed = DHCP6_Advertise(reply.payload)
    assert parsed.msgtype == dhcp6.ADVERTISE and parsed[DHCP6OptVendorClass].enterprisenum == 343 and DHCP6OptIA_NA not in parsed


def test_real_edk2_http_boot_solicit_gets_the_http_url_of_ipxe_efi():
    payload, source = [(p, s) for p, s in captured_solicits("ovmf-e1000.pcap") if b"HTTPClient" in p][0]
    outcome = handle(payload, source)
    options = dhcp6_options(outcome.reply.payload)
    assert options[dhcp6.OPT_BOOTFILE_URL] == b"http://[fd5e:213::1]:8080/ipxe/ipxe.efi"
    assert options[dhcp6.OPT_VENDOR_CLASS][6:16] == b"HTTPClient"
    # Option 60 is EDK2's TFTP file size: meaningless for a URL, so absent.
    assert dhcp6.OPT_BOOTFILE_PARAM not in options
    assert outcome.fields["client"] == "HTTPClient" and outcome.fields["arch"] == 16


def test_edk2_port_4011_request_gets_a_reply_tied_to_the_mac_of_its_solicit():
    payload, source = captured_solicits("ovmf-ipv6-solicit.pcap")[0]
    memo = dhcp6.ClientMemo()
    handle(payload, source, memo=memo)
    solicit = DHCP6(payload)
    # As PxeBcRequestBootService builds it: the proxy offer's xid and server id, the client's other options.
    request = DHCP6_Request(trid=solicit.trid) / DHCP6OptServerId(duid=OUR_DUID) / solicit[DHCP6OptClientId]
    global_source = ("fd5e:213::1a7", 4011, 0, 0)
    outcome = handle(bytes(request), global_source, port=dhcp6.PXE_PORT, memo=memo)
    assert outcome.mac == "52:54:00:aa:00:05" and outcome.step == "dhcp_ack"
    assert outcome.reply.message_type == dhcp6.REPLY and outcome.reply.destination == global_source
    # EDK2 may open its socket for the Reply only after a fast Reply arrived, and does not ask again.
    assert outcome.reply.send_again_after == (0.25, 1.0)
    assert dhcp6_options(outcome.reply.payload)[dhcp6.OPT_BOOTFILE_URL] == b"tftp://[fd5e:213::1]/ipxe.efi"
    # TFTP events find the MAC by the address the 4011 Request came from.
    assert memo.mac("fd5e:213::1a7") == "52:54:00:aa:00:05"


def test_port_4011_request_from_a_client_never_seen_is_not_answered():
    payload, _source = captured_solicits("ovmf-ipv6-solicit.pcap")[0]
    request = DHCP6_Request(trid=1) / DHCP6OptServerId(duid=OUR_DUID) / DHCP6(payload)[DHCP6OptClientId]
    assert handle(bytes(request), ("fd5e:213::1a7", 4011, 0, 0), port=dhcp6.PXE_PORT) is None


def ipxe_message(layer, mac="52:54:00:aa:00:01", server_duid=None):
    # iPXE's DHCPv6: DUID-LL, user class "iPXE", no vendor class and no architecture.
    packet = layer(trid=0x123456) / DHCP6OptClientId(duid=DUID_LL(lladdr=mac))
    if server_duid is not None:
        packet /= DHCP6OptServerId(duid=server_duid)
    return bytes(packet / DHCP6OptUserClass(userclassdata=[USER_CLASS_DATA(data=b"iPXE")]))


@pytest.mark.parametrize("layer,expected", [(DHCP6_Solicit, dhcp6.ADVERTISE), (DHCP6_InfoRequest, dhcp6.REPLY)])
def test_ipxe_gets_the_bracketed_url_of_its_script(layer, expected):
    outcome = handle(ipxe_message(layer), ("fe80::1234", 546, 0, LINK_LOCAL_SCOPE))
    assert outcome.mac == "52:54:00:aa:00:01" and outcome.fields["ipxe"] is True
    assert outcome.reply.message_type == expected
    options = dhcp6_options(outcome.reply.payload)
    assert options[dhcp6.OPT_BOOTFILE_URL] == b"http://[fd5e:213::1]:8080/boot/52-54-00-aa-00-01.ipxe"
    assert options[dhcp6.OPT_CLIENTID] == bytes(DUID_LL(lladdr="52:54:00:aa:00:01"))
    assert 3 not in options and dhcp6.OPT_BOOTFILE_PARAM not in options


def test_requests_and_renews_for_the_site_server_are_left_to_it():
    site = dhcp6.server_duid("02:00:00:00:00:99")
    for layer in (DHCP6_Request, DHCP6_InfoRequest):
        assert handle(ipxe_message(layer, server_duid=site), ("fe80::1234", 546, 0, LINK_LOCAL_SCOPE)) is None
    assert handle(ipxe_message(DHCP6_Request, server_duid=OUR_DUID), ("fe80::1234", 546, 0, LINK_LOCAL_SCOPE)).step == "dhcp_ack"


def test_unknown_mac_gets_nothing_and_is_not_reported_unless_it_is_a_boot_client():
    stranger = ipxe_message(DHCP6_Solicit, mac="52:54:00:ff:00:01")
    outcome = handle(stranger, ("fe80::1", 546, 0, LINK_LOCAL_SCOPE))
    assert outcome.reply is None and outcome.step == "dhcp_ignored" and outcome.fields["reason"] == "unknown MAC address"
    plain = bytes(DHCP6_Solicit(trid=1) / DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:ff:00:01")))
    assert handle(plain, ("fe80::1", 546, 0, LINK_LOCAL_SCOPE)) is None


def test_known_host_doing_plain_dhcpv6_is_reported_not_answered():
    plain = bytes(DHCP6_Solicit(trid=1) / DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:aa:00:02")))
    outcome = handle(plain, ("fe80::1", 546, 0, LINK_LOCAL_SCOPE))
    assert outcome.step == "dhcp_ignored" and outcome.reply is None


def test_pxe_client_of_an_architecture_without_ipxe_build_is_not_answered():
    solicit = bytes(DHCP6_Solicit(trid=1) / DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:aa:00:02"))
                    / DHCP6OptClientArchType(archtypes=[10])
                    / DHCP6OptVendorClass(enterprisenum=343, vcdata=[VENDOR_CLASS_DATA(data=b"PXEClient:Arch:00010:UNDI:003000")]))
    outcome = handle(solicit, ("fe80::1", 546, 0, LINK_LOCAL_SCOPE))
    assert outcome.reply is None and "architecture 10" in outcome.fields["reason"]


def test_vendor_class_of_another_enterprise_is_not_a_pxe_client():
    solicit = bytes(DHCP6_Solicit(trid=1) / DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:aa:00:02"))
                    / DHCP6OptVendorClass(enterprisenum=9, vcdata=[VENDOR_CLASS_DATA(data=b"PXEClient")]))
    assert handle(solicit, ("fe80::1", 546, 0, LINK_LOCAL_SCOPE)).step == "dhcp_ignored"


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
    with pytest.raises(dhcp6.MalformedPacket):
        dhcp6.parse(data)
    assert handle(data, ("fe80::1", 546, 0, 3)) is None


def test_client_memo_forgets_the_oldest_first():
    memo = dhcp6.ClientMemo(size=2)
    memo.learn(b"a", "52:54:00:00:00:01")
    memo.learn(b"b", "52:54:00:00:00:02")
    memo.learn(b"a", "52:54:00:00:00:01")
    memo.learn(b"c", "52:54:00:00:00:03")
    assert memo.mac(b"b") is None and memo.mac(b"a") == "52:54:00:00:00:01" and memo.mac(b"c") == "52:54:00:00:00:03"


def test_server_duid_is_a_duid_ll_of_the_interface_mac():
    assert dhcp6.server_duid("02:00:5e:00:02:13") == bytes.fromhex("00030001" + "02005e000213")
    assert dhcp6.mac_from_duid(OUR_DUID) == "02:00:5e:00:02:13"
