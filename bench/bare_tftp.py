"""The least a TFTP server in Python does per packet, as P3's floor: what Nixie's CPU per GiB cannot go below.

``python bench/bare_tftp.py HOST PORT FILE`` serves FILE to any read request, prints "ready" once bound, and runs
until killed. Per packet it does what Nixie's TFTP does at the least: an epoll wait, a recv on the transfer's connected
socket, a header unpacked and one send of a DATA packet built before the first request. Nothing else: no timeouts or
retransmission, no caps, no events, no checks of what a client sends. It is for measuring on a quiet lab network
only, never for serving machines.
"""

from __future__ import annotations

import select
import socket
import struct
import sys

_OPCODE_BLOCK = struct.Struct("!HH")
_RRQ, _DATA, _ACK, _OACK = 1, 3, 4, 6
DEFAULT_BLKSIZE = 512


def request_options(request: bytes) -> dict:
    """The options of a read request (RFC 2347), names in lower case; {} for any other packet."""
    if len(request) < 2 or _OPCODE_BLOCK.unpack_from(request + b"\0\0")[0] != _RRQ:
        return {}
    fields = request[2:].split(b"\0")[2:-1]
    return {name.decode("ascii", "replace").lower(): value.decode("ascii", "replace") for name, value in zip(fields[::2], fields[1::2])}


def data_packets(data: bytes, blksize: int) -> list:
    """DATA packets 1.. of ``data`` at ``blksize`` (index 0 unused); the last is short, empty if the size divides."""
    return [b""] + [_OPCODE_BLOCK.pack(_DATA, block & 0xFFFF) + data[(block - 1) * blksize:block * blksize]
                    for block in range(1, len(data) // blksize + 2)]


def serve(host: str, port: int, data: bytes) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind((host, port))
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    packets_by_size = {}
    # fd -> [socket, block last sent, packets, last block]
    transfers = {}
    print("ready", flush=True)
    while True:
        for fd, _mask in poller.poll():
            if fd == listener.fileno():
                request, client = listener.recvfrom(65536)
                options = request_options(request)
                blksize = int(options.get("blksize", DEFAULT_BLKSIZE))
                packets = packets_by_size.get(blksize)
                if packets is None:
                    packets = packets_by_size[blksize] = data_packets(data, blksize)
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((host, 0))
                sock.connect(client)
                sock.setblocking(False)
                poller.register(sock.fileno(), select.EPOLLIN)
                if options:
                    agreed = {"blksize": blksize, "tsize": len(data)} if "tsize" in options else {"blksize": blksize}
                    first_block, first = 0, struct.pack("!H", _OACK) + b"".join(b"%s\0%d\0" % (name.encode(), value) for name, value in agreed.items())
                else:
                    first_block, first = 1, packets[1]
                transfers[sock.fileno()] = [sock, first_block, packets, len(packets) - 1]
                sock.send(first)
                continue
            transfer = transfers[fd]
            sock, block, packets, last = transfer
            try:
                opcode, acknowledged = _OPCODE_BLOCK.unpack_from(sock.recv(1024))
            except (BlockingIOError, struct.error):
                continue
            if opcode != _ACK or acknowledged != block & 0xFFFF:
                continue
            if block == last:
                del transfers[fd]
                sock.close()
                continue
            transfer[1] = block + 1
            sock.send(packets[block + 1])


if __name__ == "__main__":
    with open(sys.argv[3], "rb") as served:
        serve(sys.argv[1], int(sys.argv[2]), served.read())
