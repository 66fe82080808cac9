# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The real proxy DHCPv6 server on a private veth pair: a replayed EDK2 Solicit to ff02::1:2 gets an Advertise on
the client's link-local address and port 546, and EDK2's port-4011 Request from a global address gets a Reply there.
"""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
from scapy.layers.dhcp6 import DHCP6_Request, DHCP6OptServerId, DHCP6OptUnknown

from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import DHCP6_CLIENT_PORT, DHCP6_SERVER_PORT, PXE_PORT
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire import dhcp6
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.booter import Booter
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host, ServerAddress
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.proxydhcp6 import start_proxydhcp6
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.proxy import ClientMemo
from ansible_collections.nixie.provision.plugins.module_utils._netif import interface_mac
from captures import dhcp6_options, udp_payloads
from datagrams import received_within

pytestmark = pytest.mark.netns

SERVER_IP6 = "fd5e:213::1"
CLIENT_IP6 = "fd5e:213::1a7"


def edk2_solicit():
    return udp_payloads("ovmf-ipv6-solicit.pcap", (DHCP6_SERVER_PORT,))[0]


def _wait_until_addresses_usable(pair):
    for namespace in (pair.server_ns, pair.client_ns):
        deadline = time.monotonic() + 10
        while subprocess.run(["ip", "-n", namespace, "-6", "addr", "show", "tentative"], capture_output=True, text=True, check=True).stdout.strip():
            assert time.monotonic() < deadline, "IPv6 addresses stayed tentative"
            time.sleep(0.1)


def _client_socket(address, port):
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind((address, port))
    sock.settimeout(2)
    return sock


def _exchange(sock, payload, destination, attempts=3):
    """Send and wait for the answer, retransmitting as firmware does: the first datagram on a fresh link can be
    lost while neighbour discovery for the brand-new addresses completes."""
    for _attempt in range(attempts - 1):
        sock.sendto(payload, destination)
        try:
            return sock.recvfrom(2048)
        except socket.timeout:
            continue
    sock.sendto(payload, destination)
    return sock.recvfrom(2048)


def test_edk2_solicit_and_port_4011_request_are_answered_over_the_wire(netns_pair):
    pair = netns_pair
    # The pair is IPv4-only by default; this test needs IPv6, without duplicate address detection delays.
    for namespace, interface in ((pair.server_ns, pair.server_if), (pair.client_ns, pair.client_if)):
        for key in ("all", interface):
            pair.run(namespace, ["sysctl", "-q", "-w", "net.ipv6.conf.%s.accept_dad=0" % key, "net.ipv6.conf.%s.disable_ipv6=0" % key])
    pair.ip("-n", pair.server_ns, "address", "add", "%s/64" % SERVER_IP6, "dev", pair.server_if, "nodad")
    pair.ip("-n", pair.client_ns, "address", "add", "%s/64" % CLIENT_IP6, "dev", pair.client_if, "nodad")
    _wait_until_addresses_usable(pair)
    client_mac = pair.call(pair.client_ns, interface_mac, pair.client_if)
    booter = Booter(HostTable([Host("node", client_mac)]), ServerAddress(SERVER_IP6, 8080), ("ipxe.efi",))
    events = []
    with pair.event_loop(pair.server_ns) as loop:
        server = loop.run(start_proxydhcp6(pair.server_if, booter, lambda mac, step, **fields: events.append((mac, step, fields)),
                                           {"ipxe.efi": 1024}, ClientMemo()))
        try:
            solicit = edk2_solicit()
            client = pair.call(pair.client_ns, _client_socket, "::", DHCP6_CLIENT_PORT)
            index = pair.call(pair.client_ns, socket.if_nametoindex, pair.client_if)
            advertise, source = _exchange(client, solicit, (dhcp6.ALL_DHCP_RELAY_AGENTS_AND_SERVERS, DHCP6_SERVER_PORT, 0, index))
            assert advertise[0] == dhcp6.ADVERTISE and advertise[1:4] == solicit[1:4]
            assert source[0].startswith("fe80::") and source[1] == DHCP6_SERVER_PORT
            options = dhcp6_options(advertise)
            assert options[dhcp6.OPT_BOOTFILE_URL] == b"tftp://[fd5e:213::1]/ipxe.efi" and 3 not in options
            server_id = options[dhcp6.OPT_SERVERID]
            assert server_id == dhcp6.server_duid(pair.call(pair.server_ns, interface_mac, pair.server_if))

            # EDK2 asks again from its leased (here: global) address, port 4011 to port 4011, naming our server id.
            boot_service = pair.call(pair.client_ns, _client_socket, CLIENT_IP6, PXE_PORT)
            request = DHCP6_Request(trid=int.from_bytes(solicit[1:4], "big")) / DHCP6OptServerId(duid=server_id)
            # PxeBcRequestBootService copies the client's own options (client id, vendor class, architecture...).
            for code in (dhcp6.OPT_CLIENTID, dhcp6.OPT_VENDOR_CLASS, dhcp6.OPT_CLIENT_ARCH):
                request /= DHCP6OptUnknown(optcode=code, data=dhcp6_options(solicit)[code])
            reply, source = _exchange(boot_service, bytes(request), (SERVER_IP6, PXE_PORT))
            assert reply[0] == dhcp6.REPLY and source[:2] == (SERVER_IP6, PXE_PORT)
            assert dhcp6_options(reply)[dhcp6.OPT_BOOTFILE_URL] == b"tftp://[fd5e:213::1]/ipxe.efi"
            answered = time.monotonic()
            copies = received_within(boot_service, 1.5)
            # Twice more, 0.25 s and 1 s later: EDK2 may start listening only after a quick Reply went by.
            requests_answered = sum(1 for _mac, step, _fields in events if step == "dhcp_ack")
            assert [copy for copy, _when in copies] == [reply] * (3 * requests_answered - 1)
            assert copies[0][1] - answered >= 0.2 and copies[-1][1] - answered >= 0.9
            client.close()
            boot_service.close()
        finally:
            loop.call(server.close)
    assert {(mac, step) for mac, step, _fields in events} == {(client_mac, "dhcp_offer"), (client_mac, "dhcp_ack")}
