"""P4's load: PXE DISCOVERs from many MACs, paced over one second, and the time to each proxy offer."""

from __future__ import annotations

import random
import socket
import threading
import time

from . import dhcp, netns

GRACE = 2.0  # firmware retransmits after ~1 s; an offer later than this counts as dropped


def run_burst(client, macs, seconds, server_ip):
    """Send one DISCOVER per MAC from ``client``'s namespace within ``seconds``; return latencies (s) of the answered."""
    results = {}
    sent = {}

    def work():
        netns.enter(client.netns)
        with dhcp.client_socket(client.iface) as sock:
            sock.settimeout(0.2)
            receiver = threading.Thread(target=receive, args=(sock,))
            receiver.start()
            started = time.monotonic()
            base = random.getrandbits(31)
            for index, mac in enumerate(macs):
                # Paced, not in one gulp: the burst is 500 machines within a second.
                delay = started + seconds * index / len(macs) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                xid = base + index
                sent[xid] = time.monotonic()
                sock.sendto(dhcp.discover(xid, mac), ("255.255.255.255", dhcp.SERVER_PORT))
            receiver.join()

    def receive(sock):
        deadline = None
        while deadline is None or time.monotonic() < deadline:
            if deadline is None and len(sent) == len(macs):
                deadline = time.monotonic() + GRACE
            try:
                packet, source = sock.recvfrom(2048)
            except socket.timeout:
                continue
            arrived = time.monotonic()
            offer = dhcp.parse_offer(packet)
            if offer and source[0] == server_ip and offer[0] in sent and offer[0] not in results:
                results[offer[0]] = arrived - sent[offer[0]]

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return list(results.values()), len(sent)
