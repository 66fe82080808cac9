# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Malformed input never breaks the ProxyDHCP pipeline.

Contract: ``dhcp4.parse`` returns a Request or None, or raises ``MalformedPacket``; ``Dhcp4Proxy.handle``
(parse, classify, decide, build_reply) never raises, and every reply it builds is a proxy reply.
The seeds are the real firmware packets from tests/fixtures/pcap, mutated by a seeded generator so a
failure reproduces from the printed case number.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import DHCP_CLIENT_PORT, DHCP_SERVER_PORT, PXE_PORT
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire.bootp import BOOTREPLY, MAGIC_COOKIE
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire import dhcp4
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.booter import Booter
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.proxy import Dhcp4Proxy
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host, ServerAddress
from captures import udp_payloads
from dhcp_packets import UNLIMITED_ANSWERS, pipeline_path

SEED = 20240611
SERVER = ServerAddress("10.88.0.1", 8080)  # the captures' DHCP server, so their REQUESTs get ACKs too
# Every MAC of the captures is known, so mutations that keep the MAC reach build_reply.
BOOTER = Booter(HostTable([Host("node-%d" % n, "52:54:00:aa:00:0%d" % n) for n in range(1, 7)]), SERVER, ("undionly.kpxe", "ipxe.efi", "ipxe-arm64.efi"))
PROXY = Dhcp4Proxy(BOOTER, UNLIMITED_ANSWERS)
SOURCES = [(("0.0.0.0", 68), DHCP_SERVER_PORT), (("10.88.0.186", 68), DHCP_SERVER_PORT), (("10.88.0.186", 4011), PXE_PORT)]


SEEDS = udp_payloads("*.pcap", (DHCP_SERVER_PORT, DHCP_CLIENT_PORT))


def _set_option_bytes(rng, data):
    # Aim at the options area, where the TLV walk and the classifier live.
    data = bytearray(data)
    for _change in range(rng.randint(1, 4)):
        position = rng.randrange(236, len(data)) if len(data) > 236 else rng.randrange(len(data))
        data[position] = rng.choice((0, 1, 2, 6, 43, 53, 54, 60, 77, 93, 97, 175, 255, rng.randrange(256)))
    return bytes(data)


def _inject_option(rng, data):
    code = rng.choice((53, 54, 60, 77, 93, 97, 175, rng.randrange(1, 255)))
    length = rng.randrange(256)
    value = rng.randbytes(rng.randrange(length + 2))  # sometimes shorter than its length byte claims
    position = rng.randrange(240, len(data) + 1) if len(data) > 240 else len(data)
    return data[:position] + struct.pack("!BB", code, length) + value + data[position:]


def _random_bytes(rng, _data):
    return rng.randbytes(rng.choice((rng.randrange(16), rng.randrange(240, 600))))


OWN_MUTATIONS = (_set_option_bytes, _inject_option, _random_bytes)


def check(data, source, local_port):
    """Run one input through parse and handle; return which path it took."""
    request, outcome, path = pipeline_path(dhcp4.parse, PROXY.handle, data, source, local_port)
    if path != "reply":
        return path
    reply = outcome.reply.payload
    # op BOOTREPLY, the client's xid, yiaddr 0.0.0.0, the magic cookie, at least the BOOTP minimum.
    assert reply[0] == BOOTREPLY and reply[4:8] == data[4:8] and reply[16:20] == bytes(4), reply
    assert reply[236:240] == MAGIC_COOKIE and len(reply) >= 300
    assert outcome.mac == request.mac
    return path


def test_mutated_and_random_packets_never_break_the_pipeline(fuzzer):
    fuzzer.run(SEED, SEEDS, OWN_MUTATIONS, SOURCES, check)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    options=st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=12),
    truncate=st.integers(0, 2000),
)
def test_structured_options_never_break_the_pipeline(seed, options, truncate):
    # Well-framed but arbitrary options (some over 255 bytes once joined, RFC 3396) after a real header.
    body = b"".join(struct.pack("!BB", code, min(len(value), 255)) + value[:255] for code, value in options)
    data = (seed[:240] + body + seed[240:])[:240 + truncate]
    for source, local_port in SOURCES:
        check(data, source, local_port)
