"""Per-thread network namespaces: one process drives many simulated machines, each in its own namespace.

``setns(CLONE_NEWNET)`` moves only the calling thread, and a socket stays in the namespace it was created
in, so a thread enters its machine's namespace once and then opens that machine's sockets. Python 3.11 has
no ``os.setns``; libc's is called directly.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)


def enter(netns):
    """Move the calling thread into the named network namespace (``ip netns`` name)."""
    fd = os.open("/run/netns/%s" % netns, os.O_RDONLY)
    try:
        if _LIBC.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, "setns %s: %s" % (netns, os.strerror(error)))
    finally:
        os.close(fd)
