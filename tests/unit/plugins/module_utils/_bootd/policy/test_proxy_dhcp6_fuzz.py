# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Malformed input never breaks the proxy DHCPv6 pipeline.

Contract: ``dhcp6.parse`` returns a Request or None, or raises ``MalformedPacket``; ``Dhcp6Proxy.handle`` (parse,
classify, decide, build_reply) never raises, and every reply it builds is a proxy answer: the client's
transaction id, an Advertise or Reply, our server id, and no IA_NA. The seeds are the real EDK2 Solicits from
tests/fixtures/pcap plus iPXE-style messages, mutated by a seeded generator so a failure reproduces.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.dhcp6 import DHCP6_InfoRequest, DHCP6_Request, DHCP6_Solicit, DHCP6OptClientId, DHCP6OptServerId, DHCP6OptUserClass, DUID_LL, USER_CLASS_DATA

from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import DHCP6_SERVER_PORT, PXE_PORT
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire import dhcp6
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.booter import Booter
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.proxy import ClientMemo, Dhcp6Proxy
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host, ServerAddress
from captures import dhcp6_options, udp_payloads
from dhcp_packets import UNLIMITED_ANSWERS, pipeline_path

SEED = 20240612
OUR_DUID = dhcp6.server_duid("02:00:5e:00:02:13")
BOOTER = Booter(HostTable([Host("node-%d" % n, "52:54:00:aa:00:0%d" % n) for n in range(1, 7)]), ServerAddress("fd5e:213::1", 8080), ("ipxe.efi",))
SIZES = {"ipxe.efi": 1048576}
# Link-local EUI-64 sources of the captures' MACs, a stranger's, and a global address on the 4011 port.
SOURCES = [(("fe80::5054:ff:feaa:%d" % n, 546, 0, 3), DHCP6_SERVER_PORT) for n in (3, 4, 5)]
SOURCES += [(("fe80::1", 546, 0, 3), DHCP6_SERVER_PORT), (("fd5e:213::1a7", 4011, 0, 0), PXE_PORT)]


def seed_payloads():
    payloads = udp_payloads("*.pcap", (DHCP6_SERVER_PORT,))
    ipxe = DHCP6OptClientId(duid=DUID_LL(lladdr="52:54:00:aa:00:01")) / DHCP6OptUserClass(userclassdata=[USER_CLASS_DATA(data=b"iPXE")])
    payloads += [bytes(DHCP6_Solicit(trid=7) / ipxe), bytes(DHCP6_InfoRequest(trid=8) / ipxe),
                 bytes(DHCP6_Request(trid=9) / DHCP6OptServerId(duid=OUR_DUID) / ipxe)]
    return payloads


SEEDS = seed_payloads()


def _set_bytes(rng, data):
    # Aim at option codes and lengths, where the TLV walk and the classifier live.
    data = bytearray(data)
    for _change in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] = rng.choice((0, 1, 2, 3, 6, 11, 15, 16, 59, 60, 61, 0xFF, rng.randrange(256)))
    return bytes(data)


def _inject_option(rng, data):
    code = rng.choice((1, 2, 3, 15, 16, 59, 60, 61, rng.randrange(65536)))
    length = rng.randrange(300)
    value = rng.randbytes(rng.randrange(length + 3))  # sometimes shorter than its length field claims
    position = rng.randrange(4, len(data) + 1) if len(data) > 4 else len(data)
    return data[:position] + struct.pack("!HH", code, length) + value + data[position:]


def _change_type(rng, data):
    return bytes((rng.choice((1, 2, 3, 5, 7, 11, 12, 13, rng.randrange(256))),)) + data[1:]


def _random_bytes(rng, _data):
    return rng.randbytes(rng.choice((rng.randrange(8), rng.randrange(4, 400))))


OWN_MUTATIONS = (_set_bytes, _inject_option, _change_type, _random_bytes)


def check(data, source, local_port, proxy):
    """Run one input through parse and handle; return which path it took."""
    request, outcome, path = pipeline_path(dhcp6.parse, proxy.handle, data, source, local_port)
    if path != "reply":
        return path
    reply = outcome.reply.payload
    assert reply[0] in (dhcp6.ADVERTISE, dhcp6.REPLY) and reply[1:4] == data[1:4], reply
    options = dhcp6_options(reply)
    assert options[dhcp6.OPT_SERVERID] == OUR_DUID and 3 not in options
    assert request is not None and outcome.reply.destination[0] == source[0]
    return path


def test_mutated_and_random_packets_never_break_the_pipeline(fuzzer):
    proxy = Dhcp6Proxy(BOOTER, OUR_DUID, ClientMemo(), SIZES, UNLIMITED_ANSWERS)
    fuzzer.run(SEED, SEEDS, OWN_MUTATIONS, SOURCES, lambda data, source, local_port: check(data, source, local_port, proxy))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    options=st.lists(st.tuples(st.integers(0, 65535), st.binary(max_size=300)), max_size=12),
    truncate=st.integers(0, 2000),
)
def test_structured_options_never_break_the_pipeline(seed, options, truncate):
    # Well-framed but arbitrary options after a real message's own.
    body = b"".join(struct.pack("!HH", code, len(value)) + value for code, value in options)
    data = (seed + body)[:4 + truncate]
    proxy = Dhcp6Proxy(BOOTER, OUR_DUID, ClientMemo(), SIZES, UNLIMITED_ANSWERS)
    for source, local_port in SOURCES:
        check(data, source, local_port, proxy)
