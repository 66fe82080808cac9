# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The UDP endpoints both boot proxies (DHCPv4 and DHCPv6) serve: bound sockets and the asyncio protocol on them.

Each datagram goes to a ``handle(data, addr, port)`` that returns an Outcome; this module only receives,
sends and reports.

Replies never wait. asyncio's ``sendto`` keeps, without bound, whatever the socket cannot take at once, and one
port's socket sends every client's replies: a reply that waits (on ARP for an address nobody has) delays all
of them. So a Sender writes to the socket itself, and a reply that cannot leave at once is dropped and counted;
the client asks again, as DHCP clients do.

A reply's copies (``Reply.send_again_after``) guard against its loss, and come after every request already
waiting: a rack powering on queues thousands of DISCOVERs, and each copy sent ahead of them delays a client that
has no answer at all. A copy that waited COPY_MAX_WAIT is dropped: its client has asked again, or moved on.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import fcntl
import logging
import socket
import termios
import time
from typing import Callable, Deque, Dict, Iterable, List, Optional, Tuple

from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Outcome, Reply
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.limits import LogBudget

Handle = Callable[[bytes, Tuple, int], Optional[Outcome]]
OnEvent = Callable[..., None]

# Not exported by every Python build's socket module; 25 is its value on every Linux architecture.
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)

_LOG = logging.getLogger(__name__)

# iPXE drops a proxy offer 2 s after its first DISCOVER, EDK2 after its 4 s wait; a copy later than this is sent to
# a client that asked again by then, and was answered again.
COPY_MAX_WAIT = 1.0
_NO_BYTES = b"\0\0\0\0"

_HINTS = {
    errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
    errno.EPERM: "binding to an interface needs root or CAP_NET_RAW (before Linux 5.7)",
    errno.EADDRINUSE: "another DHCP or ProxyDHCP server (often dnsmasq) holds it",
    errno.EADDRNOTAVAIL: "the address is not configured on this machine",
    errno.ENODEV: "there is no such network interface",
}


class PortBindError(OSError):
    """A boot proxy's port could not be opened; ``port``, ``interface`` and ``errno`` say which and why."""

    def __init__(self, port: int, address: str, interface: str, cause: OSError) -> None:
        reason = cause.strerror or str(cause)
        hint = _HINTS.get(cause.errno)
        message = "cannot listen on UDP port %d (%s, interface %s): %s" % (port, address, interface, reason)
        super().__init__(cause.errno, message + ("; " + hint if hint else ""))
        self.port = port
        self.address = address
        self.interface = interface


def bound_udp_socket(family: int, port: int, address: str, interface: str, configure: Callable[[socket.socket], None]) -> socket.socket:
    """Return a non-blocking UDP socket of ``family`` bound to ``address``:``port`` on ``interface`` only.

    ``configure(sock)`` sets the family's own options before the bind. Raises PortBindError.
    """
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        # REUSEADDR: a restarted server must not wait for the old socket; the kernel still refuses a
        # second bind unless the holder also set it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Clients broadcast or multicast to the well-known ports: the device binding keeps us to the boot
        # network and sends our replies out of that interface only.
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
        configure(sock)
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise PortBindError(port, address, interface, exc) from exc
    sock.setblocking(False)
    return sock


class Sender:
    """Sends a boot proxy's replies without waiting: what a socket cannot take at once is dropped and counted.

    ``dropped`` counts the drops by reason (an errno name); ``server.log`` gets a few lines per port and reason,
    then one line per interval with the count. A subclass may send some replies another way (``send``).
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.dropped: Dict[str, int] = {}
        self._log = LogBudget(_LOG)

    def send(self, sock: socket.socket, port: int, reply: Reply, mac: str) -> bool:
        """Send ``reply`` (to ``mac``) from ``sock``, the socket of local ``port``; return whether it left."""
        return self.send_on(sock, port, reply.payload, reply.destination)

    def send_on(self, sock: socket.socket, port: int, payload: bytes, destination: Tuple) -> bool:
        """``sock.sendto(payload, destination)`` on a non-blocking socket, the reply dropped and counted if it fails."""
        try:
            sock.sendto(payload, destination)
        except OSError as exc:
            self.drop(port, destination, exc)
            return False
        return True

    def drop(self, port: int, destination: Tuple, exc: OSError) -> None:
        """Count a reply to ``destination`` that could not leave ``port`` because of ``exc``."""
        reason = errno.errorcode.get(exc.errno, type(exc).__name__)
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self._log.log((self.label, "port %d:" % port, "reply dropped,", reason), logging.WARNING,
                      "%s port %d: reply to %s dropped: %s", self.label, port, destination[0], exc.strerror or exc)

    def close(self) -> None:
        """Release what the Sender holds: the counts of lines left out go to the log (a subclass also closes its sockets)."""
        self._log.flush()

    def error_received(self, port: int, exc: Exception) -> None:
        # E.g. an ICMP error for an earlier reply: one client's problem, not the server's, and a flood's cost.
        self._log.log((self.label, "port %d:" % port, "send error"), logging.WARNING, "%s port %d: send failed: %s", self.label, port, exc)


def _request_waiting(sock: socket.socket) -> bool:
    # SIOCINQ (FIONREAD) on a UDP socket: the size of the next queued datagram, zero when none is.
    return fcntl.ioctl(sock.fileno(), termios.FIONREAD, _NO_BYTES) != _NO_BYTES


class _Endpoint(asyncio.DatagramProtocol):
    """One UDP port: each datagram goes to ``handle(data, addr, port)``; its reply is sent, then reported."""

    def __init__(self, port: int, sock: socket.socket, handle: Handle, on_event: OnEvent, sender: Sender) -> None:
        self._port = port
        self._sock = sock
        self._handle = handle
        self._on_event = on_event
        self._sender = sender
        self._transport = None
        # Copies due but not sent yet: (when they go stale, reply, mac), oldest first.
        self._copies: Deque[Tuple[float, Reply, str]] = collections.deque()
        self._copies_scheduled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def datagram_received(self, data: bytes, addr: Tuple) -> None:
        outcome = self._handle(data, addr, self._port)
        if outcome is None:
            return
        reply = outcome.reply
        if reply is not None:
            # Reply before reporting: firmware retransmits after ~1 s, the event log can wait.
            self._sender.send(self._sock, self._port, reply, outcome.mac)
            for delay in reply.send_again_after:
                asyncio.get_running_loop().call_later(delay, self._send_again, reply, outcome.mac)
        self._on_event(outcome.mac, outcome.step, **outcome.fields)

    def _send_again(self, reply: Reply, mac: str) -> None:
        self._copies.append((time.monotonic() + COPY_MAX_WAIT, reply, mac))
        if not self._copies_scheduled:
            self._send_copies()

    def _send_copies(self) -> None:
        self._copies_scheduled = False
        if self._transport.is_closing():
            self._copies.clear()
            return
        now = time.monotonic()
        while self._copies:
            if _request_waiting(self._sock):
                # After the loop has read the next request; the copies keep their order.
                self._copies_scheduled = True
                asyncio.get_running_loop().call_soon(self._send_copies)
                return
            stale_at, reply, mac = self._copies.popleft()
            if now < stale_at:
                self._sender.send(self._sock, self._port, reply, mac)

    def error_received(self, exc: Exception) -> None:
        self._sender.error_received(self._port, exc)


class Endpoints:
    """The running endpoints of a boot proxy (v4 or v6); ``close()`` stops them."""

    def __init__(self, transports: List[asyncio.DatagramTransport], sender: Sender) -> None:
        self.transports = transports
        self.sender = sender

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
        self.sender.close()


async def start_endpoints(openers: Iterable[Tuple[int, Callable[[], socket.socket]]], handle: Handle, on_event: OnEvent,
                          make_sender: Callable[[], Sender]) -> Endpoints:
    """Open every ``(port, open_socket)`` of ``openers`` and serve them, replies sent by the Sender ``make_sender()``
    returns once the ports are open; return the Endpoints to close.

    All or nothing: when one port cannot be opened (PortBindError) or served, those already open are closed.
    """
    loop = asyncio.get_running_loop()
    sockets = []
    server = None
    try:
        for port, open_socket in openers:
            sockets.append((port, open_socket()))
        sender = make_sender()
        server = Endpoints([], sender)
        for port, sock in sockets:
            transport, dummy = await loop.create_datagram_endpoint(lambda port=port, sock=sock: _Endpoint(port, sock, handle, on_event, sender),
                                                                   sock=sock)
            server.transports.append(transport)
    except BaseException:
        if server is not None:
            server.close()
        for dummy, sock in sockets:
            sock.close()
        raise
    return server
