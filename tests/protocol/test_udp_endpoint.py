# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The boot proxies' UDP endpoint on a real loopback socket: a reply's copies wait for the requests queued before
them, and a copy that waited too long is not sent at all.

The endpoint's reading is paused (``transport.pause_reading``) to hold a request in the socket's queue, as a rack's
burst of DISCOVERs does while the loop is busy.
"""

from __future__ import annotations

import asyncio
import socket

from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import STEP_DHCP_OFFER
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.udp import COPY_MAX_WAIT, Sender, bound_udp_socket, start_endpoints
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Outcome, Reply

# Longer than a loaded machine takes to pause the endpoint and queue the next request, so no copy falls due before.
COPY_AFTER = 1.0
QUIET = 0.3


def _answer_with_a_copy(data, source, port):
    return Outcome("52:54:00:aa:00:01", STEP_DHCP_OFFER, Reply(b"answer:" + data, source, 2, send_again_after=(COPY_AFTER,)), {})


async def _received(client, within):
    """The datagrams ``client`` receives until none has come for ``within`` seconds."""
    loop = asyncio.get_running_loop()
    datagrams = []
    while True:
        try:
            datagrams.append(await asyncio.wait_for(loop.sock_recv(client, 2048), within))
        except asyncio.TimeoutError:
            return datagrams


async def _exchange():
    endpoints = await start_endpoints([(0, lambda: bound_udp_socket(socket.AF_INET, 0, "127.0.0.1", "lo", lambda sock: None))],
                                      _answer_with_a_copy, lambda *args, **fields: None, lambda: Sender("test"))
    transport = endpoints.transports[0]
    server = transport.get_extra_info("sockname")
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    seen = {}
    loop = asyncio.get_running_loop()
    try:
        client.sendto(b"1", server)
        seen["first answer"] = [await loop.sock_recv(client, 2048)]
        transport.pause_reading()
        client.sendto(b"2", server)
        seen["while a request waits"] = await _received(client, COPY_AFTER + QUIET)
        transport.resume_reading()
        seen["once it is read"] = await _received(client, COPY_AFTER + QUIET)

        client.sendto(b"3", server)
        seen["third answer"] = [await loop.sock_recv(client, 2048)]
        transport.pause_reading()
        client.sendto(b"4", server)
        await asyncio.sleep(COPY_AFTER + COPY_MAX_WAIT + QUIET)
        transport.resume_reading()
        seen["after a wait past the copies' limit"] = await _received(client, COPY_AFTER + QUIET)
    finally:
        client.close()
        endpoints.close()
    return seen


def test_copies_wait_for_queued_requests_and_stale_copies_are_dropped():
    seen = asyncio.run(_exchange())
    assert seen == {
        "first answer": [b"answer:1"],
        # The copy of answer 1 fell due while request 2 sat unread: it waited.
        "while a request waits": [],
        # Request 2 is answered first, then the waiting copy goes, then request 2's own copy.
        "once it is read": [b"answer:2", b"answer:1", b"answer:2"],
        "third answer": [b"answer:3"],
        # Answer 3's copy fell due, waited behind request 4 for longer than COPY_MAX_WAIT, and was dropped.
        "after a wait past the copies' limit": [b"answer:4", b"answer:4"],
    }
