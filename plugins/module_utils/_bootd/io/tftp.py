# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only TFTP for the iPXE binaries, and nothing else.

TFTP carries only the first stage (undionly.kpxe ~90 KB, ipxe.efi ~1 MB): one block per round trip
makes it far too slow for a kernel or an initrd, which go over HTTP.

tftpy is used through its packet API only: its factory parses the requests, its packet classes encode the
OACK and the ERRORs. The option negotiation is ``wire.tftp.negotiate``; this module owns the receive loop
and the transfers. tftpy's own ``TftpServer.listen`` is not used because one RRQ with a non-ASCII file
name raises ``UnicodeDecodeError`` out of it and ends the server thread (measured with tftpy 0.8.7), and
it accepts packets for a transfer from any source address. Nor are its per-transfer contexts and states:
they know only IPv4, agree to block sizes no datagram can carry (up to 65536), and with a file read per
block, debug logging per packet and a select() over every socket after every packet they served a 1 MiB
ipxe.efi at 0.5 of dnsmasq's rate to one client and 0.26 to 50 (bench/, P3). Here a binary is read once
while it is unchanged on disk, and each of its DATA packets, built the first time a transfer at that block
size sends it, is shared by every later transfer (the iPXE binaries are at most ~1 MB): an ACK is mostly
answered with one send of a ready packet on a connected socket, under epoll.
Every packet is handled behind a boundary that drops the offending transfer only, transfers are
capped per client and in all, a transfer whose client has not answered yet gets few retransmissions, and
files come only from an allow-list of names: requests are never joined onto a directory.
Uploads are refused. The server listens on one IPv4 or one IPv6 address.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import struct
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.limits import LogBudget
from ansible_collections.nixie.provision.plugins.module_utils._bootd.wire.tftp import Agreement, negotiate
from ansible_collections.nixie.provision.plugins.module_utils._errors import require_library

try:
    from tftpy import TftpErrors
    from tftpy.TftpPacketFactory import TftpPacketFactory
    from tftpy.TftpPacketTypes import TftpPacketERR, TftpPacketInitial, TftpPacketOACK, TftpPacketWRQ
except ImportError:
    TFTPY_IMPORT_ERROR = traceback.format_exc()
else:
    TFTPY_IMPORT_ERROR = None

# Transfers at once beyond one per listed host (server.py sizes the cap to its run, and budgets a socket for each):
# room for firmware asking again from a new port, and for strangers, without taking a listed host's slot. A cap of
# 64 in all made a fleet wait its turn: of 250 simulated machines booting at once, 33 in 750 boots heard nothing for
# their 6 s of retries (bench P5).
TFTP_TRANSFERS = 64
# Firmware fetches one file at a time, but may ask again from a new port while its earlier transfer still waits
# out our retries; four leave room for that and keep one address (which may be lying) to a sixteenth of the slots.
TFTP_TRANSFERS_PER_CLIENT = 4
# Copies of a transfer's first packet (the OACK or DATA 1) sent before its client has acknowledged anything, instead
# of the full retries. The request's source may be spoofed, making every copy traffic towards a victim: three copies
# (two resends, ~0.6 s) ride out a loss or two for a real client, which answers in one round trip, while a spoofed
# request draws three packets.
TFTP_FIRST_ACK_RETRIES = 3
# Seconds an unacknowledged transfer then stays open, silent, before it is dropped. A client whose ACK was lost sends
# it again only after its own timeout (EDK2's PXE 4 s): a transfer closed sooner leaves that ACK to a closed port, and
# EDK2 then waits out its retries and gives up on network boot (lab, 10 % loss: 66 s, then the next boot entry). Ten
# seconds hear two of EDK2's retransmissions; the per-client cap keeps one address to a few such slots.
TFTP_FIRST_ACK_WAIT = 10.0
# The error of a transfer that sent its last block and heard no ACK of it.
LAST_BLOCK_UNACKNOWLEDGED = "last block never acknowledged"

# When an unacknowledged packet goes again: a client retransmits only after seconds (EDK2's MTFTP 4 s, iPXE 1 s), so
# with 10 % of frames lost the server's timer sets the pace. A fixed 1 s cost EDK2 ~150 s for ipxe.efi (some 110 of
# its 580 blocks lost one way or the other), a fixed 0.2 s 50 s. So, as TCP does (RFC 6298), the wait is the
# transfer's smoothed round trip plus four times its variation, measured on blocks sent once (Karn), kept within
# MIN_RETRANSMIT..FIRST_RETRANSMIT; FIRST_RETRANSMIT until the first sample; doubled at each resend of one block, up
# to the server's ``timeout``. A copy sent too soon costs a datagram, and draws a repeated ACK that _REACK_GUARD ignores.
# The floor is what a lost block costs at least: in the lab (round trips ~0.2 ms, 10 % loss) EDK2's ipxe.efi loses
# one or two of its ~110 lost blocks' copies again, and a 40 ms floor spent ~4 s of its transfer waiting.
FIRST_RETRANSMIT = 0.2
MIN_RETRANSMIT = 0.01

# Larger than any UDP datagram: read whole requests, never truncate.
_MAX_DATAGRAM = 65536
# A client sends a transfer ACKs (4 bytes) and ERRORs (an RFC 1350 message fits a 512-byte block); what a longer
# one says past this is not needed, and a 64 KiB buffer per ACK was CPU spent on nothing.
_MAX_REPLY = 1024
# Block sizes whose packets a binary keeps. Firmware asks for one or two (EDK2 1468, iPXE 1432, 512 without the
# option); each size costs up to the file's size again, and a client may ask for any size, so older ones are let go.
_BLOCK_SIZES_KEPT = 4
# Below this block size packets are not kept: a packet's ~40 bytes of object overhead would outweigh its data (at the
# smallest size, 8, a 1 MiB binary would keep 7 MiB), and no firmware asks for one.
_SHARED_MIN_BLKSIZE = 512
# Clients retransmit their ACK after a second or more; one sooner crossed our block on the wire.
_REACK_GUARD = 0.5

# How often the loop looks at transfer timeouts while any runs, whether packets arrive or not: a fraction of
# MIN_RETRANSMIT. With none running, it wakes only to notice stop().
_TICK = 0.005
_IDLE_TICK = 0.05
# RFC 1350 opcodes of the data phase, and its header.
_DATA, _ACK, _ERROR = 3, 4, 5
_OPCODE_BLOCK = struct.Struct("!HH")

_log = logging.getLogger(__name__)


class TftpServer:
    """A TFTP server thread serving ``binaries`` (name -> path, see ``find_ipxe_binaries``).

    ``on_event(step, client_ip, **fields)`` is called from the server thread with step ``tftp_start``
    (file, options), ``tftp_done`` (file, ok, bytes, seconds, error) or ``refused`` (file, reason).
    A packet unacknowledged for the transfer's retransmission time (``first_timeout`` seconds before a round trip has
    been measured, then from the measured round trips, never below ``min_timeout``) is sent again, then after twice
    that, and so on up to ``timeout`` seconds; a client silent through ``retries`` of those resends is dropped. Until it has
    acknowledged something, it gets ``first_ack_retries`` copies of the first packet, and another only when it repeats its
    request; it is dropped once silent for ``first_ack_wait`` seconds from the request. Firmware waits seconds before it retries
    (EDK2 4 s), so on a lossy link the server's short timer, not the client's, sets the pace.
    At most ``max_transfers`` run at once, ``per_client`` of them for one client address; a request over
    a cap is dropped unanswered (the client asks again) and counted in ``dropped_requests`` by cap.
    """

    def __init__(self, binaries: Mapping[str, str], host: str = "0.0.0.0", port: int = contract.TFTP_PORT, on_event: Optional[Callable[..., None]] = None,
                 timeout: float = 1.0, retries: int = 14, max_transfers: int = TFTP_TRANSFERS, per_client: int = TFTP_TRANSFERS_PER_CLIENT,
                 first_ack_retries: int = TFTP_FIRST_ACK_RETRIES, first_ack_wait: float = TFTP_FIRST_ACK_WAIT,
                 first_timeout: float = FIRST_RETRANSMIT, min_timeout: float = MIN_RETRANSMIT) -> None:
        require_library("tftpy", TFTPY_IMPORT_ERROR)
        self._binaries = dict(binaries)
        self._served: Dict[str, _ServedFile] = {}
        self._bind = (host, port)
        self._on_event = on_event
        self._timeout = timeout
        self._first_timeout = first_timeout
        self._min_timeout = min_timeout
        self._retries = retries
        self._first_ack_retries = first_ack_retries
        self._first_ack_wait = first_ack_wait
        self._max_transfers = max_transfers
        self._per_client = per_client
        self._factory = TftpPacketFactory()
        self._sock = None
        self._wake_reader = self._wake_writer = None
        self._thread = None
        self._stopping = threading.Event()
        self._transfers = {}
        # client address -> transfers it holds, for the per-client cap without a scan per request
        self._held: Dict[str, int] = {}
        self._poller = None
        self._transfer_by_fd = {}
        self._log = LogBudget(_log)
        self.malformed_packets = 0
        self.dropped_requests: Dict[str, int] = {"per_client": 0, "total": 0}

    @property
    def address(self) -> Tuple[Any, ...]:
        """The (host, port) the server listens on, once started (port 0 binds a free port)."""
        return self._sock.getsockname()

    def start(self) -> Tuple[Any, ...]:
        """Bind (errors such as EADDRINUSE raise here, in the caller) and start the server thread."""
        sock = socket.socket(socket.AF_INET6 if ":" in self._bind[0] else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(self._bind)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        wake_reader, wake_writer = socket.socketpair()
        # Here rather than in the thread: running out of file descriptors now fails the start, not a thread
        # that nobody watches. epoll itself rather than selectors: its per-event key objects cost as much as a packet.
        try:
            poller = select.epoll()
            poller.register(sock.fileno(), select.EPOLLIN)
            poller.register(wake_reader.fileno(), select.EPOLLIN)
        except OSError:
            for opened in (sock, wake_reader, wake_writer):
                opened.close()
            raise
        self._sock, self._poller = sock, poller
        self._wake_reader, self._wake_writer = wake_reader, wake_writer
        self._thread = threading.Thread(target=self._serve, name="nixie-tftp", daemon=True)
        self._thread.start()
        return self.address

    def stop(self, timeout: float = 5.0) -> None:
        """Drop all transfers and stop the thread; returns once it has ended."""
        if self._thread is None:
            return
        self._stopping.set()
        self._wake_writer.send(b"\0")
        self._thread.join(timeout)
        self._thread = None
        # Closed here, not by the thread: it may see the flag on a tick and end before the send above.
        self._wake_reader.close()
        self._wake_writer.close()

    # -- the server thread ---------------------------------------------------------------------------

    def _serve(self):
        poller = self._poller
        request_fd = self._sock.fileno()
        by_fd = self._transfer_by_fd
        next_check = time.monotonic() + _TICK
        try:
            while not self._stopping.is_set():
                ready = poller.poll(_TICK if by_fd else _IDLE_TICK)
                now = time.monotonic()
                for fd, _mask in ready:
                    transfer = by_fd.get(fd)
                    try:
                        if transfer is not None:
                            self._on_transfer_packet(transfer, now)
                        elif fd == request_fd:
                            self._on_request()
                    except Exception as err:  # any kind: a bug must not cost the other clients their server either
                        self._on_unforeseen(transfer, err)
                # Not after every packet: with 50 transfers that scan would cost more than the packets.
                if now >= next_check:
                    self._check_timeouts(now)
                    next_check = now + _TICK
        finally:
            for key in list(self._transfers):
                self._finish(key, "server stopped")
            poller.close()
            self._sock.close()

    def _on_unforeseen(self, transfer, err):
        # The failures known to happen are handled where they happen; one that was not foreseen costs its own
        # transfer, not the thread every other client is served by.
        self._log.log(("TFTP:", type(err).__name__), logging.ERROR, "TFTP: %s", err, exc_info=err)
        if transfer is not None and self._transfers.get(transfer.key) is transfer:
            self._finish(transfer.key, str(err))

    def _emit(self, step, client_ip, **fields):
        if self._on_event is None:
            return
        try:
            self._on_event(step, client_ip, **fields)
        except Exception:  # a broken observer must not stop transfers
            _log.exception("TFTP event callback failed")

    def _read_binary(self, name):
        """``(_ServedFile, None)``, or ``(None, why the request is refused)``; read again once changed on disk."""
        path = self._binaries.get(name)
        if path is None:
            return None, "not an iPXE binary served here"
        try:
            with open(path, "rb") as binary:
                status = os.fstat(binary.fileno())
                identity = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
                served = self._served.get(name)
                if served is None or served.identity != identity:
                    served = self._served[name] = _ServedFile(identity, binary.read())
                return served, None
        except OSError as err:
            return None, str(err)

    def _on_request(self):
        try:
            buffer, source = self._sock.recvfrom(_MAX_DATAGRAM)
            client_ip, client_port = source[:2]  # IPv6 adds flow info and scope id
        except OSError:
            return
        key = (client_ip, client_port)
        try:
            request = self._factory.parse(buffer)
        except Exception:  # tftpy's codec raises struct, Unicode and tftpy errors on malformed input
            self.malformed_packets += 1
            return
        if not isinstance(request, TftpPacketInitial):
            return
        running = self._transfers.get(key)
        if running is not None:
            # A retransmitted request. While nothing is acknowledged the client has not had the first packet: one copy
            # per request, so a spoofed source draws no more than it sends.
            if not running.answered:
                running.send(time.monotonic())
            return
        # Over a cap, no ERROR and no event: a real client asks again once a slot is free, and the source may be spoofed.
        if self._held.get(client_ip, 0) >= self._per_client:
            self.dropped_requests["per_client"] += 1
            return
        if len(self._transfers) >= self._max_transfers:
            self.dropped_requests["total"] += 1
            return
        try:
            sock = self._transfer_socket(key)
        except OSError as err:  # EMFILE, ENOBUFS
            self._emit(contract.STEP_REFUSED, client_ip, file=request.filename, reason=str(err))
            return
        if isinstance(request, TftpPacketWRQ):
            self._refuse(sock, client_ip, request.filename, TftpErrors.AccessViolation, "upload: this server never writes")
            return
        # The mode is not looked at: every file here is binary, and a netascii client gets its bytes unconverted.
        served, refusal = self._read_binary(request.filename)
        if refusal is not None:
            self._refuse(sock, client_ip, request.filename, TftpErrors.FileNotFound, refusal)
            return
        transfer = _Transfer(key, request.filename, sock, served, negotiate(request.options, len(served.data)))
        try:
            self._poller.register(sock.fileno(), select.EPOLLIN)
        except OSError as err:  # ENOSPC past fs.epoll.max_user_watches, ENOMEM
            sock.close()
            self._emit(contract.STEP_REFUSED, client_ip, file=request.filename, reason=str(err))
            return
        self._transfers[key] = transfer
        self._transfer_by_fd[sock.fileno()] = transfer
        self._held[client_ip] = self._held.get(client_ip, 0) + 1
        transfer.send(time.monotonic())
        self._emit(contract.STEP_TFTP_START, client_ip, file=request.filename, options=dict(transfer.agreement.options))

    def _transfer_socket(self, key):
        sock = socket.socket(self._sock.family, socket.SOCK_DGRAM)
        try:
            # From the address the client asked, not the one the kernel would pick: an interface with more than
            # one (a configured IPv6 address and a SLAAC one) would answer from a stranger, which firmware ignores.
            sock.bind((self._sock.getsockname()[0], 0))
            # Connected: the kernel drops other senders' datagrams, and send() needs no address lookup.
            sock.connect(key)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def _refuse(self, sock, client_ip, name, error_code, reason):
        error = TftpPacketERR()
        error.errorcode = error_code
        try:
            sock.send(error.encode().buffer)
        except OSError:
            pass  # the ERROR is a courtesy: a client that misses it times out, as it would after any loss
        finally:
            sock.close()
        self._emit(contract.STEP_REFUSED, client_ip, file=name, reason=reason)

    def _on_transfer_packet(self, transfer, now):
        try:
            # Connected before its first send, the socket hears from the client alone.
            packet = transfer.sock.recv(_MAX_REPLY)
        except BlockingIOError:
            return
        except OSError as err:  # e.g. ICMP port unreachable: the client has gone
            self._finish(transfer.key, str(err))
            return
        try:
            opcode, block = _OPCODE_BLOCK.unpack_from(packet)
        except struct.error:
            self.malformed_packets += 1
            return
        if opcode == _ACK:
            if transfer.acknowledged(block, now):
                self._finish(transfer.key, None)
        elif opcode == _ERROR:
            message = packet[4:].split(b"\0", 1)[0].decode("ascii", "replace")
            self._finish(transfer.key, "client error %d: %s" % (block, message))

    def _check_timeouts(self, now):
        for key, transfer in list(self._transfers.items()):
            if not transfer.answered and transfer.retries >= self._first_ack_retries - 1:
                if now - transfer.started >= self._first_ack_wait:
                    self._finish(key, "first packet never acknowledged")
                continue
            if now - transfer.last_sent <= min(transfer.retransmit_after(self._first_timeout, self._min_timeout) * 2 ** transfer.retries, self._timeout):
                continue
            transfer.retries += 1
            if transfer.retries >= self._retries:
                # Told apart because a client that has every block acknowledges the last one once and is gone: when
                # that ACK is lost (one boot in ten at 10 % loss), the transfer worked for the client.
                self._finish(key, "timed out" if transfer.block < transfer.last_block else LAST_BLOCK_UNACKNOWLEDGED)
            else:
                transfer.send(now)

    def _finish(self, key, error):
        transfer = self._transfers.pop(key)
        del self._transfer_by_fd[transfer.sock.fileno()]
        held = self._held.pop(key[0]) - 1
        if held:
            self._held[key[0]] = held
        # Not unregistered: closing the socket takes it out of the epoll set (no other descriptor shares it), and an
        # unregister that failed here would leave the socket open with its transfer gone.
        transfer.sock.close()
        self._emit(contract.STEP_TFTP_DONE, key[0], file=transfer.name, ok=error is None, error=error,
                   bytes=transfer.bytes_sent, seconds=round(time.monotonic() - transfer.started, 6))


class _Transfer:
    """One download, from its first packet (an OACK when options were agreed, else DATA 1) to the last ACK.

    Blocks are counted from 0 (the OACK) without wrapping; the wire carries the count modulo 2^16, so
    files beyond 65535 blocks work too. A lost packet is sent again by the timeout check, or at once when
    the client acknowledges the previous block again; but not for a repeated ACK that follows our send
    within _REACK_GUARD, which was in flight already: answering those is the Sorcerer's Apprentice bug
    (RFC 1123 4.2.3.1), every block then sent twice from there on.
    """

    __slots__ = ("key", "name", "sock", "data", "packets", "agreement", "blksize", "block", "last_block", "last_packet",
                 "last_sent", "started", "retries", "answered", "srtt", "rttvar")

    def __init__(self, key: Tuple[str, int], name: str, sock: socket.socket, served: "_ServedFile", agreement: Agreement) -> None:
        self.key = key
        self.name = name
        self.sock = sock
        self.data = served.data
        self.agreement = agreement
        self.blksize = agreement.blksize
        self.packets = served.packets(self.blksize)
        self.last_block = len(self.data) // self.blksize + 1
        if agreement.options:
            oack = TftpPacketOACK()
            oack.options = agreement.options
            self.block, self.last_packet = 0, oack.encode().buffer
        else:
            self.block, self.last_packet = 1, self._data_packet(1)
        self.started = self.last_sent = time.monotonic()
        self.retries = 0
        # Whether the client has acknowledged a packet: until then its address may be spoofed.
        self.answered = False
        self.srtt = self.rttvar = None

    @property
    def bytes_sent(self) -> int:
        return min(len(self.data), self.block * self.blksize)

    def acknowledged(self, block: int, now: float) -> bool:
        """Handle the client's ACK of ``block`` (16 bits) received at ``now``; True once the last block is acknowledged."""
        if block != self.block & 0xFFFF:
            if block == (self.block - 1) & 0xFFFF and now - self.last_sent >= _REACK_GUARD:
                # The client timed out waiting and acknowledged the previous block again: our block was lost.
                self.send(now)
            return False
        self.answered = True
        if not self.retries:
            self._measured(now - self.last_sent)
        if self.block == self.last_block:
            return True
        self.block += 1
        self.last_packet = self._data_packet(self.block)
        self.retries = 0
        self.send(now)
        return False

    def retransmit_after(self, first: float, least: float) -> float:
        """Seconds a packet sent once waits for its ACK: ``first`` before any round trip was measured."""
        if self.srtt is None:
            return first
        return min(max(self.srtt + 4 * self.rttvar, least), first)

    def _measured(self, sample):
        if self.srtt is None:
            self.srtt, self.rttvar = sample, sample / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
            self.srtt = 0.875 * self.srtt + 0.125 * sample

    def send(self, now: float) -> None:
        """Send the newest packet (again)."""
        self.last_sent = now
        try:
            self.sock.send(self.last_packet)
        except OSError:
            pass  # a full buffer or an ICMP error is one lost packet: the timeout check sends it again

    def _data_packet(self, block):
        packet = self.packets[block] if self.packets is not None else None
        if packet is None:
            offset = (block - 1) * self.blksize
            packet = _OPCODE_BLOCK.pack(_DATA, block & 0xFFFF) + self.data[offset:offset + self.blksize]
            if self.packets is not None:
                self.packets[block] = packet
        return packet


class _ServedFile:
    """One binary's bytes as read from disk (``identity`` tells when the file changed), with its DATA packets."""

    __slots__ = ("identity", "data", "_packets")

    def __init__(self, identity: Tuple[int, ...], data: bytes) -> None:
        self.identity = identity
        self.data = data
        self._packets: Dict[int, List[Optional[bytes]]] = {}

    def packets(self, blksize: int) -> Optional[List[Optional[bytes]]]:
        """The shared list of DATA packets 1.. (index 0 unused) at ``blksize``, each None until a transfer first sends
        it; None below _SHARED_MIN_BLKSIZE, where each transfer builds its packets as it sends them.

        Filled as transfers go rather than up front, so a request whose source is spoofed, which draws one packet,
        costs one packet's building, not the file's. A transfer holds on to its list, so one let go here still serves it.
        """
        if blksize < _SHARED_MIN_BLKSIZE:
            return None
        packets = self._packets.pop(blksize, None)
        if packets is None:
            if len(self._packets) >= _BLOCK_SIZES_KEPT:
                del self._packets[next(iter(self._packets))]
            packets = [None] * (len(self.data) // blksize + 2)
        # Re-inserted: the dict's order is then the order of last use, and the least recently used goes first.
        self._packets[blksize] = packets
        return packets
