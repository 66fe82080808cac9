"""P4's load: PXE DISCOVERs from many MACs, paced over one second, and the time to each proxy offer."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

from . import dhcp, netns

GRACE = 2.0  # firmware retransmits after ~1 s; an offer later than this counts as dropped
# Room for every offer of a 5,000-DISCOVER burst: a full client buffer would count as the server's drops.
RECEIVE_BUFFER = 16 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")


def run_burst(client, macs, seconds, server_ip):
    """Send one DISCOVER per MAC from ``client``'s namespace within ``seconds``; return latencies (s) of the answered."""
    results = {}
    sent = {}

    def work():
        netns.enter(client.netns)
        with dhcp.client_socket(client.iface) as sock:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
            # The kernel's arrival time, not the receiving thread's: with thousands of offers a second, the
            # thread (sharing the GIL with the sender) reads them late, and that is the client's delay, not the server's.
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
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
                sent[xid] = time.time()
                sock.sendto(dhcp.discover(xid, mac), ("255.255.255.255", dhcp.SERVER_PORT))
            receiver.join()

    def receive(sock):
        deadline = None
        while deadline is None or time.monotonic() < deadline:
            if deadline is None and len(sent) == len(macs):
                deadline = time.monotonic() + GRACE
            try:
                packet, ancillary, _flags, source = sock.recvmsg(2048, socket.CMSG_SPACE(_TIMESPEC.size))
            except socket.timeout:
                continue
            arrived = _arrival(ancillary)
            offer = dhcp.parse_offer(packet)
            if offer and source[0] == server_ip and offer[0] in sent and offer[0] not in results:
                results[offer[0]] = arrived - sent[offer[0]]

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return list(results.values()), len(sent)


def _arrival(ancillary):
    """The wall-clock time (s) the kernel timestamped a datagram with (SO_TIMESTAMPNS); now if it gave none."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = _TIMESPEC.unpack(data[:_TIMESPEC.size])
            return seconds + nanoseconds / 1e9
    return time.time()
