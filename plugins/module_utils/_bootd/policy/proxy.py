# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the boot proxy makes of one DHCP datagram, v4 or v6: parse -> is it for us -> ``Booter.decide`` -> reply.

Both families run the same pipeline (``_Proxy.handle``) over their own wire steps (``wire.dhcp4``,
``wire.dhcp6``), so an event means the same for either, and the socket layer only sends what comes out.
"""

from __future__ import annotations

import abc
import dataclasses
import ipaddress
from collections import OrderedDict
from typing import Dict, Hashable, List, Mapping, Optional, Tuple, Union

from ansible_collections.nixie.provision.plugins.module_utils._errors import MalformedPacket
from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import (
    PXE_PORT, STEP_DHCP_ACK, STEP_DHCP_IGNORED, STEP_DHCP_OFFER,
)
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import BootSpec, Firmware, Outcome, Reply
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.booter import Booter
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.limits import Budget
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire import dhcp4, dhcp6

# PxeBcRequestBootService sends its port-4011 Request and only then opens the socket it reads the Reply on,
# and it never asks twice: a Reply quicker than that opening is lost, and the PXEv6 boot with it (seen about
# one boot in five in the lab). The Reply goes out again within the 3 s EDK2 waits.
BOOT_SERVICE_REPLY_AGAIN_AFTER = (0.25, 1.0)

# Every DHCPv4 answer goes out again: a lost proxy offer is a lost boot. iPXE takes the site's offer alone once 2 s
# have passed since its first DISCOVER (it sends a second at 1 s), and then boots nothing; EDK2 picks among the
# offers heard in its first wait (4 s). Both take a copy of an offer as the offer, and drop it once they have moved
# on. With 10 % of frames lost, one copy failed ~1 iPXE DHCP in 27 (both DISCOVERs or both offers lost), three fail
# ~1 in 100, nearly all of it now lost DISCOVERs.
OFFER_AGAIN_AFTER = (0.05, 0.4)

# Answers per listed MAC and way of reply (``_reply_route``) in DHCP_ANSWER_INTERVAL seconds. One boot draws
# about six (firmware and iPXE each offered and acked, EDK2's port-4011 request), a lossy network's retries a few
# more; a flood of requests spoofing the MAC draws no more than this, and the rest are dropped (one event with their
# count) before a reply is built, which costs some 15 times what ignoring a request does. Per way of reply, so a
# flood of spoofed ciaddr or giaddr requests leaves the real machine's broadcast exchange its own budget.
DHCP_ANSWERS_PER_MAC = 24
DHCP_ANSWER_INTERVAL = 10.0

_Request = Union[dhcp4.Request, dhcp6.Request]


class _Proxy(abc.ABC):
    """The pipeline both families share; a subclass supplies its wire format's steps.

    Nothing is reported for malformed packets, non-requests, messages that are not ours to answer, nor for
    non-boot traffic from unknown MACs (the site's ordinary DHCP chatter). A known host's non-boot traffic
    is reported: its OS or installer is up, or its firmware skipped network boot.
    """

    # The message type of an answer that is an ack rather than an offer, and why a non-boot client is ignored.
    _ACK_TYPE: int
    _NOT_BOOT_REASON: str

    def __init__(self, booter: Booter, answers: Optional[Budget] = None) -> None:
        """``answers`` budgets the answers per MAC (default DHCP_ANSWERS_PER_MAC in DHCP_ANSWER_INTERVAL)."""
        self.booter = booter
        # Keyed by listed MACs only (nothing else gets this far) and a few ways of reply: as small as the run, and
        # room for all of it. Past its bound a Budget counts new keys under one shared key, which would leave a
        # rack of more hosts than the bound sharing 24 answers.
        self._answers = answers or Budget(DHCP_ANSWERS_PER_MAC, DHCP_ANSWER_INTERVAL, max_keys=max(1, booter.host_count() * len(dhcp4.ROUTES)))

    def handle(self, data: bytes, source: Optional[Tuple], local_port: int) -> Optional[Outcome]:
        """Run the pipeline on one datagram from ``source`` to ``local_port``; return an Outcome, or None."""
        try:
            request = self._parse(data, source, local_port)
        except MalformedPacket:
            return None
        mac = None if request is None else self._client_mac(request)
        if mac is None:
            return None
        firmware = self._classify(request)
        fields = self._fields(request)
        if firmware is None:
            if self.booter.host(mac) is None:
                return None
            fields["reason"] = self._NOT_BOOT_REASON
            return Outcome(mac, STEP_DHCP_IGNORED, None, fields)
        # Before deciding whether to answer: the client's REQUEST to the site's server, which only the site answers,
        # is where the address it is about to use shows. Its script request must come from one of these.
        for address in self._client_addresses(request):
            self.booter.note_boot_address(mac, address)
        if not self._expects_answer(request):
            return None
        fields.update(arch=firmware.arch, client=firmware.vendor_class, ipxe=firmware.is_ipxe)
        decision = self.booter.decide(mac, firmware)
        if decision.spec is None:
            fields["reason"] = decision.reason
            return Outcome(mac, STEP_DHCP_IGNORED, None, fields)
        if not self._answers.allow((mac, self._reply_route(request))):
            fields["reason"] = "more than %d requests in %.0f s: not answered" % (self._answers.burst, self._answers.interval)
            return Outcome(mac, STEP_DHCP_IGNORED, None, fields)
        reply, boot_file, to = self._answer(request, mac, decision.spec)
        fields.update(boot_file=boot_file, to=to)
        return Outcome(mac, STEP_DHCP_ACK if reply.message_type == self._ACK_TYPE else STEP_DHCP_OFFER, reply, fields)

    @abc.abstractmethod
    def _parse(self, data: bytes, source: Optional[Tuple], local_port: int) -> Optional[_Request]:
        """The family's ``parse``."""

    @abc.abstractmethod
    def _client_mac(self, request: _Request) -> Optional[str]:
        """The MAC the request is from, or None when it cannot be told or answered."""

    @abc.abstractmethod
    def _classify(self, request: _Request) -> Optional[Firmware]:
        """The family's ``classify``."""

    @abc.abstractmethod
    def _fields(self, request: _Request) -> Dict[str, object]:
        """The event fields every outcome of ``request`` carries."""

    @abc.abstractmethod
    def _client_addresses(self, request: _Request) -> List[str]:
        """The family's ``client_addresses``."""

    @abc.abstractmethod
    def _expects_answer(self, request: _Request) -> bool:
        """The family's ``expects_answer``, with this server's identity."""

    @abc.abstractmethod
    def _reply_route(self, request: _Request) -> str:
        """How the reply to ``request`` would travel, as a name; requests of one MAC that differ in it are budgeted apart."""

    @abc.abstractmethod
    def _answer(self, request: _Request, mac: str, spec: BootSpec) -> Tuple[Reply, str, str]:
        """The reply telling the client to boot ``spec``, the boot file as the reply names it, and where it goes."""


class Dhcp4Proxy(_Proxy):
    """ProxyDHCP: answers PXE and UEFI HTTP boot clients beside the site's DHCPv4 server."""

    _ACK_TYPE = dhcp4.DHCPACK
    _NOT_BOOT_REASON = "not a PXE or HTTP boot request"

    def _parse(self, data: bytes, source: Optional[Tuple], local_port: int) -> Optional[dhcp4.Request]:
        return dhcp4.parse(data, source, local_port)

    def _client_mac(self, request: dhcp4.Request) -> str:
        return request.mac

    def _classify(self, request: dhcp4.Request) -> Optional[Firmware]:
        return dhcp4.classify(request)

    def _fields(self, request: dhcp4.Request) -> Dict[str, object]:
        fields: Dict[str, object] = {"xid": "%08x" % request.xid, "port": request.local_port}
        if request.giaddr != dhcp4.ANY_ADDRESS:
            # Which relay, and which of its ports: where to look when a machine behind a router does not boot.
            fields["relay"] = request.giaddr
            circuit = dhcp4.circuit_id(request)
            if circuit is not None:
                fields["circuit_id"] = circuit
        return fields

    def _client_addresses(self, request: dhcp4.Request) -> List[str]:
        return dhcp4.client_addresses(request)

    def _expects_answer(self, request: dhcp4.Request) -> bool:
        return dhcp4.expects_answer(request, self.booter.server.ip)

    def _reply_route(self, request: dhcp4.Request) -> str:
        return dhcp4.reply_route(request)[0]

    def _answer(self, request: dhcp4.Request, mac: str, spec: BootSpec) -> Tuple[Reply, str, str]:
        reply = dataclasses.replace(dhcp4.build_reply(request, spec, self.booter.server), send_again_after=OFFER_AGAIN_AFTER)
        return reply, spec.boot_file, "%s:%d" % reply.destination


class ClientMemo:
    """Client DUID or address -> MAC: learned from Solicits and port-4011 Requests, asked by 4011 and TFTP.

    EDK2 identifies itself by a DUID-UUID, which holds no MAC, and sends the port-4011 Request and its TFTP
    requests from its leased global address, which does not derive from the MAC either. Bounded, oldest
    forgotten first. Keys are DUID bytes or address strings; both kinds share the bound.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._macs: OrderedDict = OrderedDict()

    def learn(self, key: Hashable, mac: str) -> None:
        """Remember that ``key`` (a DUID or an address string) belongs to ``mac``."""
        self._macs[key] = mac
        self._macs.move_to_end(key)
        while len(self._macs) > self._size:
            self._macs.popitem(last=False)

    def mac(self, key: Hashable) -> Optional[str]:
        """The MAC learned for ``key``, or None."""
        return self._macs.get(key)


class Dhcp6Proxy(_Proxy):
    """Proxy DHCPv6: answers EDK2 PXE and HTTP boot clients and iPXE beside the site's DHCPv6 server.

    ``booter`` decides with its server's IPv6 address; ``our_duid`` is the server id the answers carry;
    ``memo`` (a ClientMemo) is how a port-4011 Request is tied to the MAC its Solicit came from;
    ``boot_file_sizes`` maps TFTP file names to their size in bytes, for option 60; ``answers`` as for _Proxy.
    """

    _ACK_TYPE = dhcp6.REPLY
    _NOT_BOOT_REASON = "not a PXE, HTTP boot or iPXE request"

    def __init__(self, booter: Booter, our_duid: bytes, memo: ClientMemo, boot_file_sizes: Mapping[str, int],
                 answers: Optional[Budget] = None) -> None:
        super().__init__(booter, answers)
        self._our_duid = our_duid
        self._memo = memo
        self._boot_file_sizes = boot_file_sizes

    def _parse(self, data: bytes, source: Optional[Tuple], local_port: int) -> Optional[dhcp6.Request]:
        return dhcp6.parse(data, source, local_port)

    def _client_mac(self, request: dhcp6.Request) -> Optional[str]:
        if not request.source:
            return None
        duid = request.client_duid
        if request.local_port == PXE_PORT and duid is not None:
            return self._memo.mac(duid) or request.mac
        return request.mac

    def _classify(self, request: dhcp6.Request) -> Optional[Firmware]:
        return dhcp6.classify(request)

    def _fields(self, request: dhcp6.Request) -> Dict[str, object]:
        return {"xid": "%06x" % request.xid, "port": request.local_port, "family": "ipv6"}

    def _client_addresses(self, request: dhcp6.Request) -> List[str]:
        return dhcp6.client_addresses(request)

    def _expects_answer(self, request: dhcp6.Request) -> bool:
        return dhcp6.expects_answer(request, self._our_duid)

    def _reply_route(self, request: dhcp6.Request) -> str:
        # Every DHCPv6 reply goes back to its request's source: nothing in a request tells a spoofed one apart.
        return dhcp4.ROUTE_SOURCE

    def _answer(self, request: dhcp6.Request, mac: str, spec: BootSpec) -> Tuple[Reply, str, str]:
        duid = request.client_duid
        if duid is not None and request.message_type == dhcp6.SOLICIT:
            self._memo.learn(duid, mac)
        if request.local_port == PXE_PORT:
            self._memo.learn(str(ipaddress.IPv6Address(request.source[0].split("%", 1)[0])), mac)
        server_ip = self.booter.server.ip
        reply = dhcp6.build_reply(request, spec, server_ip, self._our_duid, self._boot_file_sizes)
        if request.local_port == PXE_PORT:
            reply = dataclasses.replace(reply, send_again_after=BOOT_SERVICE_REPLY_AGAIN_AFTER)
        return reply, dhcp6.boot_file_url(spec, server_ip), "[%s]:%d" % reply.destination[:2]
