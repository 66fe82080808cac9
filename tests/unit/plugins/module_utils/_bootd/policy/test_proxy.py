# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the boot proxy answers, for DHCPv4 and DHCPv6: real firmware packets (tests/fixtures/pcap, see its
README.md) and hand-built ones through the whole pipeline, each reply decoded by scapy or checked the way
EDK2 and iPXE check it, independently of ``wire``'s parsers.
"""

from __future__ import annotations

import struct

import pytest
from scapy.layers.dhcp import BOOTP, DHCP, DHCPRevOptions
from scapy.layers.dhcp6 import (DHCP6, DHCP6_Advertise, DHCP6_InfoRequest, DHCP6_Request, DHCP6_Solicit, DHCP6OptClientArchType,
                                DHCP6OptClientId, DHCP6OptIA_NA, DHCP6OptIAAddress, DHCP6OptServerId, DHCP6OptUserClass, DHCP6OptVendorClass, DUID_LL,
                                USER_CLASS_DATA, VENDOR_CLASS_DATA)

from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import (
    DHCP6_CLIENT_PORT, DHCP6_SERVER_PORT, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, PXE_PORT, STEP_DHCP_ACK, STEP_DHCP_IGNORED, STEP_DHCP_OFFER,
)
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire.bootp import BOOTREPLY
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire import dhcp4, dhcp6
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.booter import Booter
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.tokens import TokenRefused
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.proxy import (
    DHCP_ANSWER_INTERVAL, DHCP_ANSWERS_PER_MAC, ClientMemo, Dhcp4Proxy, Dhcp6Proxy,
)
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.limits import Budget
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import HTTP_CLIENT, PXE_CLIENT, Host, ServerAddress
from captures import dhcp6_options, udp_payloads
from dhcp_packets import LINK_LOCAL_SCOPE, UNLIMITED_ANSWERS, UUID_OPTION, VENDOR_PXE_ROM, captured, captured_solicits, request_bytes

HOSTS = [Host("node-%d" % n, "52:54:00:aa:00:0%d" % n) for n in range(1, 7)]
SERVER = ServerAddress("10.213.0.1", 8080)
SITE_DHCP_SERVER = "10.88.0.1"  # dnsmasq in the captures
BOOTER = Booter(HostTable(HOSTS), SERVER, ("undionly.kpxe", "ipxe.efi"))
PROXY4 = Dhcp4Proxy(BOOTER, UNLIMITED_ANSWERS)
SERVER6 = ServerAddress("fd5e:213::1", 8080)
OUR_DUID = dhcp6.server_duid("02:00:5e:00:02:13")
SIZES = {"ipxe.efi": 1024 * 1024 + 1}
BOOTER6 = Booter(HostTable(HOSTS), SERVER6, ("ipxe.efi", "undionly.kpxe"))


def scapy_options(payload):
    """Decode a reply with scapy: (BOOTP layer, {option code: value as scapy decodes it})."""
    bootp = BOOTP(payload)
    options = {}
    for item in bootp[DHCP].options:
        if isinstance(item, tuple):
            name, value = item
            options[name if isinstance(name, int) else DHCPRevOptions[name][0]] = value
    return bootp, options


# --- DHCPv4 replies: every field, decoded by scapy-----------------------------------------------------

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
    outcome = PROXY4.handle(payload, ("0.0.0.0", 68), DHCP_SERVER_PORT)
    assert outcome.step == STEP_DHCP_OFFER
    assert outcome.mac == request.mac
    assert outcome.fields["boot_file"] == boot_file

    bootp, options = scapy_options(outcome.reply.payload)
    assert bootp.op == BOOTREPLY
    assert bootp.xid == request.xid
    assert bootp.chaddr == request.chaddr
    assert bootp.flags == request.flags
    # Sent again twice, within the 2 s iPXE waits for a proxy offer after its first DISCOVER.
    assert outcome.reply.send_again_after == (0.05, 0.4)
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
    outcome = PROXY4.handle(bytes(bootp), ("0.0.0.0", 68), DHCP_SERVER_PORT)
    reply, options = scapy_options(outcome.reply.payload)
    assert options[67] == b"undionly.kpxe"
    assert reply.file.rstrip(b"\x00") == b"undionly.kpxe"
    assert reply.siaddr == SERVER.ip
    assert 175 not in options


def test_no_uuid_zero_uuid_is_echoed():
    outcome = PROXY4.handle(captured("seabios-ipxe-rom-e1000-nouuid.pcap", 1), ("0.0.0.0", 68), 67)
    assert scapy_options(outcome.reply.payload)[1][97] == bytes(17)


def test_no_uuid_sent_no_uuid_echoed():
    outcome = PROXY4.handle(request_bytes(options=VENDOR_PXE_ROM), ("0.0.0.0", 68), 67)
    assert 97 not in scapy_options(outcome.reply.payload)[1]


def test_short_reply_is_padded_to_the_bootp_minimum():
    # 240 header bytes + 49 option bytes: RFC 1542 relays and old PXE ROMs drop anything under 300.
    outcome = PROXY4.handle(request_bytes(options=VENDOR_PXE_ROM), ("0.0.0.0", 68), 67)
    payload = outcome.reply.payload
    assert len(payload) == 300
    assert payload.rstrip(b"\x00").endswith(b"\xff")
    assert scapy_options(payload)[1][67] == b"undionly.kpxe"


def test_ack_on_pxe_port_goes_back_to_the_source():
    # After a proxy offer, iPXE and EDK2 ask the proxy again with a unicast REQUEST to port 4011.
    payload = request_bytes(options=VENDOR_PXE_ROM + [(97, UUID_OPTION)], message_type="request", ciaddr="10.88.0.186")
    outcome = PROXY4.handle(payload, ("10.88.0.186", 4011), PXE_PORT)
    assert outcome.step == STEP_DHCP_ACK
    assert outcome.reply.destination == ("10.88.0.186", 4011)
    bootp, options = scapy_options(outcome.reply.payload)
    assert options[53] == dhcp4.DHCPACK
    assert (bootp.yiaddr, bootp.ciaddr) == ("0.0.0.0", "10.88.0.186")
    assert options[67] == b"undionly.kpxe"


def test_discover_on_pxe_port_is_not_answered():
    assert PROXY4.handle(captured("ovmf-virtio-native.pcap", 1), ("10.88.0.186", 68), PXE_PORT) is None


def test_request_to_the_site_server_is_left_alone():
    # Packet 9: ipxe.efi accepting dnsmasq's lease (option 54 = 10.88.0.1). That ACK is not ours to send.
    payload = captured("ovmf-httpboot.pcap", 9)
    assert dhcp4.parse(payload).options[54] == bytes([10, 88, 0, 1])
    assert PROXY4.handle(payload, ("0.0.0.0", 68), 67) is None


def test_request_naming_us_is_acked():
    site_booter = Booter(HostTable(HOSTS), ServerAddress(SITE_DHCP_SERVER, 8080), ("undionly.kpxe", "ipxe.efi"))
    outcome = Dhcp4Proxy(site_booter).handle(captured("ovmf-httpboot.pcap", 9), ("0.0.0.0", 68), 67)
    assert outcome.step == STEP_DHCP_ACK
    bootp, options = scapy_options(outcome.reply.payload)
    assert options[53] == dhcp4.DHCPACK
    assert bootp.yiaddr == "0.0.0.0"
    assert options[67] == b"http://10.88.0.1:8080/boot/52-54-00-aa-00-06.ipxe"


# --- where DHCPv4 replies go-------------------------------------------------------------------------


@pytest.mark.parametrize("flags, ciaddr, giaddr, expected, route", [
    pytest.param(0x8000, "0.0.0.0", "0.0.0.0", ("255.255.255.255", 68), dhcp4.ROUTE_BROADCAST, id="broadcast-flag"),
    pytest.param(0, "0.0.0.0", "0.0.0.0", ("255.255.255.255", 68), dhcp4.ROUTE_BROADCAST, id="no-address-yet"),
    pytest.param(0x8000, "10.88.0.186", "0.0.0.0", ("255.255.255.255", 68), dhcp4.ROUTE_BROADCAST, id="broadcast-flag-wins"),
    pytest.param(0, "10.88.0.186", "0.0.0.0", ("10.88.0.186", 68), dhcp4.ROUTE_CLIENT, id="unicast-to-ciaddr"),
    pytest.param(0x8000, "0.0.0.0", "192.0.2.1", ("192.0.2.1", 67), dhcp4.ROUTE_RELAY, id="relay"),
    pytest.param(0, "10.88.0.186", "192.0.2.1", ("192.0.2.1", 67), dhcp4.ROUTE_RELAY, id="relay-unicast-client"),
])
def test_reply_destination(flags, ciaddr, giaddr, expected, route):
    payload = request_bytes(options=VENDOR_PXE_ROM, flags=flags, ciaddr=ciaddr, giaddr=giaddr)
    source = ("192.0.2.1" if giaddr != "0.0.0.0" else ciaddr, 68)
    assert dhcp4.reply_route(dhcp4.parse(payload, source, 67)) == (route, expected)
    outcome = PROXY4.handle(payload, source, 67)
    assert outcome.reply.destination == expected
    assert outcome.fields["to"] == "%s:%d" % expected
    bootp = BOOTP(outcome.reply.payload)
    assert bootp.giaddr == giaddr
    assert bootp.flags == flags
    assert bootp.yiaddr == "0.0.0.0"


# ISC dhcrelay -a's option 82: circuit id (1) "down0", then a remote id (2), as a switch adds one.
RELAY_AGENT_INFO = b"\x01\x05down0\x02\x04rack"


def test_relayed_reply_echoes_option_82_and_the_event_names_the_relay_and_its_port():
    payload = request_bytes(options=VENDOR_PXE_ROM + [(82, RELAY_AGENT_INFO)], giaddr="10.213.1.1")
    outcome = PROXY4.handle(payload, ("10.213.0.254", 67), 67)
    assert outcome.reply.destination == ("10.213.1.1", 67)
    echoed = [option for option in BOOTP(outcome.reply.payload)[DHCP].options if option[0] in (82, "relay_agent_information")]
    assert echoed == [(echoed[0][0], RELAY_AGENT_INFO)], BOOTP(outcome.reply.payload)[DHCP].options
    assert (outcome.fields["relay"], outcome.fields["circuit_id"]) == ("10.213.1.1", "down0")


@pytest.mark.parametrize("giaddr, options", [
    pytest.param("0.0.0.0", [(82, RELAY_AGENT_INFO)], id="not-relayed: a client's own option 82 is not echoed"),
    pytest.param("10.213.1.1", [], id="relayed-without-option-82"),
])
def test_option_82_is_echoed_only_as_a_relay_added_it(giaddr, options):
    outcome = PROXY4.handle(request_bytes(options=VENDOR_PXE_ROM + options, giaddr=giaddr), ("10.213.0.254", 67), 67)
    assert not [option for option in BOOTP(outcome.reply.payload)[DHCP].options if option[0] in (82, "relay_agent_information")]
    assert "circuit_id" not in outcome.fields


@pytest.mark.parametrize("value, expected", [
    pytest.param(b"\x02\x04rack\x01\x03p\xff7", "p\\xff7", id="after-another-sub-option-unprintable-escaped"),
    pytest.param(b"\x02\x04rack", None, id="no-circuit-id"),
    pytest.param(b"\x01\x09short", "short", id="truncated-length"),
])
def test_circuit_id(value, expected):
    request = dhcp4.parse(request_bytes(options=VENDOR_PXE_ROM + [(82, value)], giaddr="10.213.1.1"), ("10.213.0.254", 67), 67)
    assert dhcp4.circuit_id(request) == expected


# --- DHCPv4 silence--------------------------------------------------------------------------------


def test_unknown_mac_gets_no_reply_but_an_event():
    outcome = PROXY4.handle(request_bytes(mac="02:00:00:00:00:99", options=VENDOR_PXE_ROM), ("0.0.0.0", 68), 67)
    assert outcome.reply is None
    assert outcome.step == STEP_DHCP_IGNORED
    assert outcome.mac == "02:00:00:00:00:99"
    assert outcome.fields["reason"] == "unknown MAC address"


def test_a_flood_spoofing_a_listed_mac_draws_a_bounded_number_of_answers():
    now = [0.0]
    proxy = Dhcp4Proxy(BOOTER, Budget(DHCP_ANSWERS_PER_MAC, DHCP_ANSWER_INTERVAL, clock=lambda: now[0]))
    discover = request_bytes(mac=HOSTS[0].mac, options=VENDOR_PXE_ROM)
    outcomes = [proxy.handle(discover, ("0.0.0.0", 68), 67) for dummy in range(DHCP_ANSWERS_PER_MAC + 50)]
    assert [outcome.reply is not None for outcome in outcomes] == [True] * DHCP_ANSWERS_PER_MAC + [False] * 50
    assert outcomes[-1].step == STEP_DHCP_IGNORED and outcomes[-1].fields["reason"].startswith("more than %d requests" % DHCP_ANSWERS_PER_MAC)
    # Another host's boot is not held up by it, and the flooded MAC is answered again in the next interval.
    assert proxy.handle(request_bytes(mac=HOSTS[1].mac, options=VENDOR_PXE_ROM), ("0.0.0.0", 68), 67).reply is not None
    now[0] += DHCP_ANSWER_INTERVAL
    assert proxy.handle(discover, ("0.0.0.0", 68), 67).reply is not None


def test_every_host_of_a_rack_larger_than_a_budgets_default_bound_is_answered():
    # A 3,000-host run powering on at once: each DISCOVER is its MAC's first. Past the Budget's default bound of
    # 1,024 keys these used to share one key and its 24 answers.
    macs = ["02:bd:00:00:%02x:%02x" % (index >> 8, index & 0xFF) for index in range(3000)]
    proxy = Dhcp4Proxy(Booter(HostTable([Host("m%d" % index, mac) for index, mac in enumerate(macs)]), SERVER, ("undionly.kpxe",)))
    answered = [mac for mac in macs if proxy.handle(request_bytes(mac=mac, options=VENDOR_PXE_ROM), ("0.0.0.0", 68), 67).reply is not None]
    assert answered == macs


def test_spoofed_unicast_and_relayed_requests_leave_the_broadcast_exchange_of_the_mac_its_own_budget():
    proxy = Dhcp4Proxy(BOOTER, Budget(DHCP_ANSWERS_PER_MAC, DHCP_ANSWER_INTERVAL, clock=lambda: 0.0))
    mac = HOSTS[0].mac
    for index in range(DHCP_ANSWERS_PER_MAC + 10):
        for spoofed in ({"ciaddr": "10.213.0.%d" % (100 + index % 100)}, {"giaddr": "192.0.2.%d" % (1 + index % 200)}):
            proxy.handle(request_bytes(mac=mac, options=VENDOR_PXE_ROM, **spoofed), ("0.0.0.0", 68), 67)
    spoofed_again = proxy.handle(request_bytes(mac=mac, options=VENDOR_PXE_ROM, giaddr="192.0.2.250"), ("0.0.0.0", 68), 67)
    assert spoofed_again.reply is None
    assert proxy.handle(request_bytes(mac=mac, options=VENDOR_PXE_ROM), ("0.0.0.0", 68), 67).reply is not None


def test_plain_dhcp_from_unknown_mac_is_not_even_reported():
    payload = request_bytes(mac="02:00:00:00:00:99", options=[("vendor_class_id", b"udhcp 1.35.0")])
    assert PROXY4.handle(payload, ("0.0.0.0", 68), 67) is None


def test_plain_dhcp_from_known_host_is_reported_not_answered():
    outcome = PROXY4.handle(request_bytes(options=[("vendor_class_id", b"udhcp 1.35.0")]), ("0.0.0.0", 68), 67)
    assert outcome.reply is None
    assert outcome.step == STEP_DHCP_IGNORED
    assert outcome.fields["reason"] == "not a PXE or HTTP boot request"


def test_unsupported_arch_is_reported_not_answered():
    payload = request_bytes(options=[("vendor_class_id", b"PXEClient:Arch:00006:UNDI:003000"), (93, b"\x00\x06")])
    outcome = PROXY4.handle(payload, ("0.0.0.0", 68), 67)
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
    assert PROXY4.handle(payload, ("0.0.0.0", 68), 67) is None


def test_yiaddr_is_zero_in_every_reply_to_every_captured_request():
    replies = 0
    site_booter = Booter(HostTable(HOSTS), ServerAddress(SITE_DHCP_SERVER, 8080), ("undionly.kpxe", "ipxe.efi"))
    proxy = Dhcp4Proxy(site_booter, UNLIMITED_ANSWERS)
    for payload in udp_payloads("*.pcap", (DHCP_SERVER_PORT, DHCP_CLIENT_PORT)):
        for port in (DHCP_SERVER_PORT, PXE_PORT):
            outcome = proxy.handle(payload, ("10.88.0.186", 68), port)
            if outcome is not None and outcome.reply is not None:
                replies += 1
                assert BOOTP(outcome.reply.payload).yiaddr == "0.0.0.0"
    assert replies == 49 + 2 * 9  # every DISCOVER offered on port 67; every REQUEST acked on 67 and on 4011


# --- DHCPv6 answers for each client type -------------------------------------------------------


def handle6(payload, source, port=DHCP6_SERVER_PORT, memo=None, booter=BOOTER6):
    return Dhcp6Proxy(booter, OUR_DUID, memo if memo is not None else ClientMemo(), SIZES).handle(payload, source, port)


def edk2_accepts_as_proxy_offer(payload, solicit):
    """What PxeBcDhcp6.c and Dhcp6Io.c require of a proxy offer (see wire.dhcp6's module docstring)."""
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
    outcome = handle6(payload, source)
    assert outcome.mac == mac and outcome.step == "dhcp_offer"
    reply = outcome.reply
    assert reply.message_type == dhcp6.ADVERTISE and reply.payload[0] == dhcp6.ADVERTISE
    assert edk2_accepts_as_proxy_offer(reply.payload, payload)
    options = dhcp6_options(reply.payload)
    assert options[dhcp6.OPT_BOOTFILE_URL] == b"tftp://[fd5e:213::1]/ipxe.efi"
    # Option 60: one parameter, the size in 512-byte blocks, rounded up (EDK2 reads it as the file size).
    assert options[dhcp6.OPT_BOOTFILE_PARAM] == b"\x00\x042049"
    assert options[dhcp6.OPT_SERVERID] == OUR_DUID
    assert reply.destination == (source[0], DHCP6_CLIENT_PORT, 0, LINK_LOCAL_SCOPE)
    # EDK2's DHCPv6 driver listens before it solicits: an Advertise goes out once.
    assert reply.send_again_after == ()
    # scapy reads it back as an Advertise with the layers EDK2 looks for.
    parsed = DHCP6_Advertise(reply.payload)
    assert parsed.msgtype == dhcp6.ADVERTISE and parsed[DHCP6OptVendorClass].enterprisenum == 343 and DHCP6OptIA_NA not in parsed


def test_real_edk2_http_boot_solicit_gets_the_http_url_of_ipxe_efi():
    payload, source = [(p, s) for p, s in captured_solicits("ovmf-e1000.pcap") if b"HTTPClient" in p][0]
    outcome = handle6(payload, source)
    options = dhcp6_options(outcome.reply.payload)
    assert options[dhcp6.OPT_BOOTFILE_URL] == b"http://[fd5e:213::1]:8080/ipxe/ipxe.efi"
    assert options[dhcp6.OPT_VENDOR_CLASS][6:16] == b"HTTPClient"
    # Option 60 is EDK2's TFTP file size: meaningless for a URL, so absent.
    assert dhcp6.OPT_BOOTFILE_PARAM not in options
    assert outcome.fields["client"] == "HTTPClient" and outcome.fields["arch"] == 16


def test_edk2_port_4011_request_gets_a_reply_tied_to_the_mac_of_its_solicit():
    payload, source = captured_solicits("ovmf-ipv6-solicit.pcap")[0]
    memo = ClientMemo()
    handle6(payload, source, memo=memo)
    solicit = DHCP6(payload)
    # As PxeBcRequestBootService builds it: the proxy offer's xid and server id, the client's other options.
    request = DHCP6_Request(trid=solicit.trid) / DHCP6OptServerId(duid=OUR_DUID) / solicit[DHCP6OptClientId]
    global_source = ("fd5e:213::1a7", 4011, 0, 0)
    outcome = handle6(bytes(request), global_source, port=PXE_PORT, memo=memo)
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
    assert handle6(bytes(request), ("fd5e:213::1a7", 4011, 0, 0), port=PXE_PORT) is None


def ipxe_message(layer, mac="52:54:00:aa:00:01", server_duid=None):
    # iPXE's DHCPv6: DUID-LL, user class "iPXE", no vendor class and no architecture.
    packet = layer(trid=0x123456) / DHCP6OptClientId(duid=DUID_LL(lladdr=mac))
    if server_duid is not None:
        packet /= DHCP6OptServerId(duid=server_duid)
    return bytes(packet / DHCP6OptUserClass(userclassdata=[USER_CLASS_DATA(data=b"iPXE")]))


@pytest.mark.parametrize("layer,expected", [(DHCP6_Solicit, dhcp6.ADVERTISE), (DHCP6_InfoRequest, dhcp6.REPLY)])
def test_ipxe_gets_the_bracketed_url_of_its_script(layer, expected):
    outcome = handle6(ipxe_message(layer), ("fe80::1234", 546, 0, LINK_LOCAL_SCOPE))
    assert outcome.mac == "52:54:00:aa:00:01" and outcome.fields["ipxe"] is True
    assert outcome.reply.message_type == expected
    options = dhcp6_options(outcome.reply.payload)
    assert options[dhcp6.OPT_BOOTFILE_URL] == b"http://[fd5e:213::1]:8080/boot/52-54-00-aa-00-01.ipxe"
    assert options[dhcp6.OPT_CLIENTID] == bytes(DUID_LL(lladdr="52:54:00:aa:00:01"))
    assert 3 not in options and dhcp6.OPT_BOOTFILE_PARAM not in options


def test_requests_and_renews_for_the_site_server_are_left_to_it():
    site = dhcp6.server_duid("02:00:00:00:00:99")
    for layer in (DHCP6_Request, DHCP6_InfoRequest):
        assert handle6(ipxe_message(layer, server_duid=site), ("fe80::1234", 546, 0, LINK_LOCAL_SCOPE)) is None
    assert handle6(ipxe_message(DHCP6_Request, server_duid=OUR_DUID), ("fe80::1234", 546, 0, LINK_LOCAL_SCOPE)).step == "dhcp_ack"


def test_unknown_mac_gets_nothing_and_is_not_reported_unless_it_is_a_boot_client():
    stranger = ipxe_message(DHCP6_Solicit, mac="52:54:00:ff:00:01")
    outcome = handle6(stranger, ("fe80::1", 546, 0, LINK_LOCAL_SCOPE))
    assert outcome.reply is None and outcome.step == "dhcp_ignored" and outcome.fields["reason"] == "unknown MAC address"
    plain = bytes(DHCP6_Solicit(trid=1) / DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:ff:00:01")))
    assert handle6(plain, ("fe80::1", 546, 0, LINK_LOCAL_SCOPE)) is None


def test_known_host_doing_plain_dhcpv6_is_reported_not_answered():
    plain = bytes(DHCP6_Solicit(trid=1) / DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:aa:00:02")))
    outcome = handle6(plain, ("fe80::1", 546, 0, LINK_LOCAL_SCOPE))
    assert outcome.step == "dhcp_ignored" and outcome.reply is None


def test_pxe_client_of_an_architecture_without_ipxe_build_is_not_answered():
    solicit = bytes(DHCP6_Solicit(trid=1) / DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:aa:00:02"))
                    / DHCP6OptClientArchType(archtypes=[10])
                    / DHCP6OptVendorClass(enterprisenum=343, vcdata=[VENDOR_CLASS_DATA(data=b"PXEClient:Arch:00010:UNDI:003000")]))
    outcome = handle6(solicit, ("fe80::1", 546, 0, LINK_LOCAL_SCOPE))
    assert outcome.reply is None and "architecture 10" in outcome.fields["reason"]


def test_vendor_class_of_another_enterprise_is_not_a_pxe_client():
    solicit = bytes(DHCP6_Solicit(trid=1) / DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:aa:00:02"))
                    / DHCP6OptVendorClass(enterprisenum=9, vcdata=[VENDOR_CLASS_DATA(data=b"PXEClient")]))
    assert handle6(solicit, ("fe80::1", 546, 0, LINK_LOCAL_SCOPE)).step == "dhcp_ignored"


@pytest.mark.parametrize("data", [b"", b"\x01\x00\x00", b"\x01\x00\x00\x01\x00", b"\x01\x00\x00\x01\x00\x01\x00\x05abc"])
def test_truncated_dhcpv6_messages_are_not_answered(data):
    assert handle6(data, ("fe80::1", 546, 0, 3)) is None


def test_client_memo_forgets_the_oldest_first():
    memo = ClientMemo(size=2)
    memo.learn(b"a", "52:54:00:00:00:01")
    memo.learn(b"b", "52:54:00:00:00:02")
    memo.learn(b"a", "52:54:00:00:00:01")
    memo.learn(b"c", "52:54:00:00:00:03")
    assert memo.mac(b"b") is None and memo.mac(b"a") == "52:54:00:00:00:01" and memo.mac(b"c") == "52:54:00:00:00:03"


# --- The addresses each host's DHCP exchange used: where its script may be asked from ----------------


def tied(table, mac, address):
    try:
        table.script_token(mac, address)
    except TokenRefused:
        return False
    return True


@pytest.mark.parametrize("capture, number, mac, address", [
    # The REQUEST taking the site server's lease is broadcast: the proxy hears the address in option 50.
    pytest.param("seabios-ipxe-chainload.pcap", 5, "52:54:00:aa:00:02", "10.88.0.186", id="seabios-ipxe-rom"),
    pytest.param("seabios-ipxe-chainload.pcap", 12, "52:54:00:aa:00:02", "10.88.0.186", id="undionly-kpxe"),
    pytest.param("ovmf-httpboot.pcap", 3, "52:54:00:aa:00:06", "10.88.0.190", id="edk2-http-boot"),
    pytest.param("ovmf-httpboot.pcap", 9, "52:54:00:aa:00:06", "10.88.0.190", id="ipxe-efi-after-http-boot"),
])
def test_the_lease_a_captured_request_takes_is_the_hosts_script_address(capture, number, mac, address):
    table = HostTable(HOSTS)
    assert not tied(table, mac, address)
    assert Dhcp4Proxy(Booter(table, SERVER, ("undionly.kpxe", "ipxe.efi"))).handle(captured(capture, number), ("0.0.0.0", 68), 67) is None
    assert tied(table, mac, address) and not tied(table, mac, "10.88.0.187")
    assert not tied(table, "52:54:00:aa:00:01", address), "another host's MAC is not tied by it"


def test_ciaddr_and_unrelayed_sources_tie_a_relay_does_not():
    table = HostTable(HOSTS)
    proxy = Dhcp4Proxy(Booter(table, SERVER, ("undionly.kpxe", "ipxe.efi")))
    proxy.handle(request_bytes(options=VENDOR_PXE_ROM, message_type="request", ciaddr="10.213.0.77"), ("10.213.0.77", 68), PXE_PORT)
    proxy.handle(request_bytes(options=VENDOR_PXE_ROM, giaddr="10.9.0.1"), ("10.9.0.1", 67), DHCP_SERVER_PORT)
    assert tied(table, "52:54:00:aa:00:01", "10.213.0.77") and not tied(table, "52:54:00:aa:00:01", "10.9.0.1")


def test_non_boot_dhcp_of_a_host_ties_nothing():
    table = HostTable(HOSTS)
    Dhcp4Proxy(Booter(table, SERVER, ("undionly.kpxe",))).handle(
        request_bytes(options=[("requested_addr", "10.213.0.78"), ("vendor_class_id", b"other")], message_type="request"), ("0.0.0.0", 68), 67)
    assert not tied(table, "52:54:00:aa:00:01", "10.213.0.78")


def test_dhcpv6_source_and_the_ia_na_address_of_a_request_to_the_site_tie():
    table = HostTable(HOSTS)
    site = dhcp6.server_duid("02:00:00:00:00:99")
    request = DHCP6_Request(trid=0x123456) / DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:aa:00:01")) / DHCP6OptServerId(duid=site) \
        / DHCP6OptIA_NA(iaid=1, ianaopts=[DHCP6OptIAAddress(addr="fd5e:213::77")]) \
        / DHCP6OptUserClass(userclassdata=[USER_CLASS_DATA(data=b"iPXE")])
    assert handle6(bytes(request), ("fe80::1234", 546, 0, LINK_LOCAL_SCOPE), booter=Booter(table, SERVER6, ("ipxe.efi",))) is None
    assert tied(table, "52:54:00:aa:00:01", "fd5e:213::77") and tied(table, "52:54:00:aa:00:01", "fe80::1234")
    assert not tied(table, "52:54:00:aa:00:01", "fd5e:213::78")
