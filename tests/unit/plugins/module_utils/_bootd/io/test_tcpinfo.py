# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A download's TCP connection, on real loopback sockets: bytes acknowledged, and corking around a file response."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.tcpinfo import bytes_acked, corked


@pytest.fixture
def connection():
    """(server side, client side) of one loopback TCP connection."""
    with contextlib.closing(socket.create_server(("127.0.0.1", 0))) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        served, dummy = listener.accept()
    served.settimeout(5)
    yield served, client
    served.close()
    client.close()


def _cork(sock):
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)


def _receive(sock, count):
    received = b""
    while len(received) < count:
        chunk = sock.recv(count - len(received))
        assert chunk, "the connection closed after %d of %d bytes" % (len(received), count)
        received += chunk
    return received


def test_corked_only_within_the_block_and_what_was_held_back_goes_after(connection):
    served, client = connection
    body = b"HTTP/1.1 200 OK\r\n\r\n" + bytes(range(256)) * 40
    assert _cork(served) == 0
    with corked(served):
        assert _cork(served) == 1
        served.sendall(body)
    assert _cork(served) == 0, "left corked, the next small answer on a kept-alive connection would wait 200 ms"
    assert _receive(client, len(body)) == body


def test_a_connection_closed_within_the_block_or_none_at_all_raises_nothing(connection):
    served, dummy = connection
    with corked(served):
        served.close()
    with corked(None):
        pass


def test_bytes_acked_counts_what_the_peer_acknowledged(connection):
    served, client = connection
    before = bytes_acked(served)
    served.sendall(b"x" * 100000)
    _receive(client, 100000)
    # The receiver may delay its last ACK (40 ms at most on Linux): the count gets there, and no further.
    deadline = time.monotonic() + 5
    while bytes_acked(served) - before < 100000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bytes_acked(served) - before == 100000
    assert bytes_acked(None) is None
