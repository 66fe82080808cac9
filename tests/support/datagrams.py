# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Collecting what a UDP socket receives in a time window, for tests of servers that answer more than once."""

from __future__ import annotations

import socket
import time


def received_within(sock, seconds):
    """Every datagram ``sock`` receives in the next ``seconds``, each as ``(payload, monotonic time it came)``."""
    received = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            received.append((sock.recv(70000), time.monotonic()))
        except socket.timeout:
            break
    return received
