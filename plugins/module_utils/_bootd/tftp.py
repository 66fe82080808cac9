# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only TFTP for the iPXE binaries, and nothing else.

TFTP carries only the first stage (undionly.kpxe ~90 KB, ipxe.efi ~1 MB): one block per round trip
makes it far too slow for a kernel or an initrd, which go over HTTP.

tftpy provides the request side of the protocol (packet codec, option negotiation with ``blksize``/``tsize``,
the OACK or first DATA); this module owns the receive loop and the data phase. tftpy's own
``TftpServer.listen`` is not used because one RRQ with a non-ASCII file name raises ``UnicodeDecodeError``
out of it and ends the server thread (measured with tftpy 0.8.7), and it accepts packets for a transfer
from any source address. Its per-packet state machine is not used for the DATA/ACK exchange either: with
a file read per block, debug logging per packet and a select() over every socket after every packet it
served a 1 MiB ipxe.efi at 0.5 of dnsmasq's rate to one client and 0.26 to 50 (bench/, P3). Here each
transfer keeps its file in memory (the iPXE binaries are at most ~1 MB, transfers are capped) and answers
an ACK with one struct header and one send on a connected socket, under epoll.
Every packet is handled behind a boundary that drops the offending transfer only, transfers are
capped, and files come only from an allow-list of names through tftpy's dynamic-file hook: requests
are never joined onto a directory. Uploads are refused. IPv4 only: tftpy's transfer sockets are AF_INET.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import socket
import tempfile
import threading
import time
import traceback

try:
    from tftpy.TftpContexts import TftpContextServer
    from tftpy.TftpPacketFactory import TftpPacketFactory
    from tftpy.TftpPacketTypes import TftpPacketInitial
    from tftpy.TftpShared import TftpTimeout, TftpTimeoutExpectACK
except ImportError:
    HAS_TFTPY = False
    TFTPY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_TFTPY = True
    TFTPY_IMPORT_ERROR = None

# The only names TFTP (and HTTP boot) will ever serve: BIOS PXE, UEFI x64 (full and SNP-only), UEFI arm64.
IPXE_BINARIES = ("undionly.kpxe", "ipxe.efi", "snponly.efi", "ipxe-arm64.efi")

# Largest datagram tftpy negotiates (blksize 65464 + headers fits): read whole packets, never truncate.
_MAX_DATAGRAM = 65536
# How often the loop looks at transfer timeouts when no packet arrives.
_TICK = 0.25

_log = logging.getLogger(__name__)


def find_ipxe_binaries(directory):
    """Map each allow-listed name present in ``directory`` to its resolved path.

    Symbolic links are followed because distributions ship them (Debian's ``/usr/lib/ipxe/ipxe.efi`` points
    to ``/boot/ipxe.efi``; a Nix profile is all links): the directory is the operator's choice, and a
    request can only ever name one of ``IPXE_BINARIES``, so no other file is reachable through it.
    """
    found = {}
    for name in IPXE_BINARIES:
        path = os.path.realpath(os.path.join(directory, name))
        if os.path.isfile(path):
            found[name] = path
    return found


class TftpServer:
    """A TFTP server thread serving ``binaries`` (name -> path, see ``find_ipxe_binaries``).

    ``on_event(step, client_ip, **fields)`` is called from the server thread with step ``tftp_start``
    (file, options), ``tftp_done`` (file, ok, bytes, seconds, error) or ``refused`` (file, reason).
    """

    def __init__(self, binaries, host="0.0.0.0", port=69, on_event=None, timeout=5, retries=3, max_transfers=64):
        if not HAS_TFTPY:
            raise RuntimeError("the tftpy Python library is required:\n%s" % TFTPY_IMPORT_ERROR)
        self._binaries = dict(binaries)
        self._bind = (host, port)
        self._on_event = on_event
        self._timeout = timeout
        self._retries = retries
        self._max_transfers = max_transfers
        self._factory = TftpPacketFactory()
        self._sock = None
        self._wake_reader = self._wake_writer = None
        self._empty_root = None
        self._thread = None
        self._stopping = threading.Event()
        self._transfers = {}
        self._transfer_by_sock = {}
        self.malformed_packets = 0

    @property
    def address(self):
        """The (host, port) the server listens on, once started (port 0 binds a free port)."""
        return self._sock.getsockname()

    def start(self):
        """Bind (errors such as EADDRINUSE raise here, in the caller) and start the server thread."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(self._bind)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock
        # tftpy opens a request relative to a root before asking the dynamic-file hook; an empty private
        # directory makes sure that first lookup never finds anything, so every file comes from the hook.
        self._empty_root = tempfile.mkdtemp(prefix="nixie-tftp-empty-")
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="nixie-tftp", daemon=True)
        self._thread.start()
        return self.address

    def stop(self, timeout=5.0):
        """Drop all transfers and stop the thread; returns once it has ended."""
        if self._thread is None:
            return
        self._stopping.set()
        self._wake_writer.send(b"\0")
        self._thread.join(timeout)
        self._thread = None

    # -- the server thread ---------------------------------------------------------------------------

    def _serve(self):
        try:
            while not self._stopping.is_set():
                watched = [self._sock, self._wake_reader] + list(self._transfer_by_sock)
                ready = select.select(watched, [], [], _TICK)[0]
                for sock in ready:
                    if sock is self._sock:
                        self._on_request()
                    elif sock in self._transfer_by_sock:
                        self._on_transfer_packet(sock)
                self._check_timeouts(time.time())
        finally:
            for key in list(self._transfers):
                self._finish(key, "server stopped")
            self._sock.close()
            self._wake_reader.close()
            self._wake_writer.close()
            shutil.rmtree(self._empty_root, ignore_errors=True)

    def _emit(self, step, client_ip, **fields):
        if self._on_event is None:
            return
        try:
            self._on_event(step, client_ip, **fields)
        except Exception:  # a broken observer must not stop transfers
            _log.exception("TFTP event callback failed")

    def _open_binary(self, name, **_client):
        path = self._binaries.get(name)
        if path is None:
            return None
        try:
            return open(path, "rb")
        except OSError:
            return None

    @staticmethod
    def _refuse_upload(path, context):
        # Returning None makes tftpy answer "access violation": this server never writes.
        return None

    def _on_request(self):
        try:
            buffer, (client_ip, client_port) = self._sock.recvfrom(_MAX_DATAGRAM)
        except OSError:
            return
        key = (client_ip, client_port)
        if key in self._transfers or len(self._transfers) >= self._max_transfers:
            # A retransmitted request of a running transfer, or overload: the client will retry.
            return
        try:
            request = self._factory.parse(buffer)
        except Exception:  # tftpy's codec raises struct, Unicode and tftpy errors on malformed input
            self.malformed_packets += 1
            return
        if not isinstance(request, TftpPacketInitial):
            return
        transfer = TftpContextServer(client_ip, client_port, self._timeout, self._empty_root,
                                     self._open_binary, self._refuse_upload, retries=self._retries)
        try:
            transfer.start(buffer)
        except Exception as err:  # refused name or path, upload, bad option value: end this transfer only
            transfer.end()
            self._emit("refused", client_ip, file=request.filename, reason=str(err) or type(err).__name__)
            return
        self._transfers[key] = transfer
        self._transfer_by_sock[transfer.sock] = key
        self._emit("tftp_start", client_ip, file=request.filename, options=dict(transfer.options or {}))

    def _on_transfer_packet(self, sock):
        key = self._transfer_by_sock[sock]
        transfer = self._transfers[key]
        try:
            source = sock.recvfrom(_MAX_DATAGRAM, socket.MSG_PEEK)[1]
        except OSError as err:
            self._finish(key, str(err))
            return
        if source != key:
            # tftpy would act on a packet from anyone who learns the transfer's port: drop strangers'.
            sock.recvfrom(_MAX_DATAGRAM)
            return
        transfer.timeout_expectACK = False
        try:
            transfer.cycle()
        except TftpTimeoutExpectACK:
            transfer.timeout_expectACK = True
            return
        except Exception as err:  # peer error, malformed packet: this transfer ends, the server goes on
            self._finish(key, str(err) or type(err).__name__)
            return
        if transfer.state is None:
            self._finish(key, None)

    def _check_timeouts(self, now):
        for key, transfer in list(self._transfers.items()):
            try:
                transfer.checkTimeout(now)
                continue
            except TftpTimeout:
                transfer.retry_count += 1
            if transfer.retry_count >= transfer.retries:
                self._finish(key, "timed out")
                continue
            # Restart the clock, or a busy server would spend all retries of a stalled transfer at once.
            transfer.last_update = now
            try:
                transfer.state.resendLast()
            except Exception as err:
                self._finish(key, str(err) or type(err).__name__)

    def _finish(self, key, error):
        transfer = self._transfers.pop(key)
        del self._transfer_by_sock[transfer.sock]
        transfer.end()
        metrics = transfer.metrics
        self._emit("tftp_done", key[0], file=transfer.file_to_transfer, ok=error is None, error=error,
                   bytes=metrics.bytes, seconds=round(metrics.end_time - metrics.start_time, 6))
