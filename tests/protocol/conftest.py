# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Generic fixtures for protocol tests: a private two-namespace network and code running inside it.

``netns_pair`` gives a server namespace and a client namespace joined by one veth pair, and nothing
else: no route out, so test traffic cannot leave the machine. ``netns_pair.event_loop(ns)`` runs an
asyncio event loop in a thread that has entered a namespace, so a real server under test binds its
sockets there while the test drives clients from the other one; ``netns_pair.call(ns, fn)`` runs a
function (e.g. opening a socket) inside a namespace. Needs root. Test modules reach these helpers
through the fixture because conftest.py cannot be imported from them (no package, importlib mode).
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import os
import shutil
import subprocess
import threading

import pytest

CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)
_NAMES = itertools.count()


def enter_netns(name):
    """Move the calling thread (only) into network namespace ``name``; sockets it opens stay there."""
    with open("/run/netns/%s" % name, "rb") as handle:
        if _LIBC.setns(handle.fileno(), CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, "setns(%s): %s" % (name, os.strerror(error)))


def call_in_netns(name, function, *args):
    """Run ``function(*args)`` in a short-lived thread inside namespace ``name`` and return its result.

    Use it to open sockets there; the sockets can then be used from any thread.
    """
    result = {}

    def target():
        try:
            enter_netns(name)
            result["value"] = function(*args)
        except BaseException as exc:  # handed to the calling thread below
            result["error"] = exc

    thread = threading.Thread(target=target, name="netns-%s" % name)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


class NetnsLoop:
    """An asyncio loop running in its own thread inside namespace ``name``.

    ``run(coro)`` runs a coroutine there and returns its result; ``errors`` collects what the loop's
    exception handler saw (a callback that raised), so a test can assert the server never crashed.
    """

    def __init__(self, name):
        self.name = name
        self.errors = []
        self.loop = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="netns-loop-%s" % name, daemon=True)
        self._startup_error = None

    def _main(self):
        try:
            enter_netns(self.name)
        except OSError as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(lambda _loop, context: self.errors.append(context))
        self._ready.set()
        self.loop.run_forever()
        self.loop.close()

    def __enter__(self):
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error
        return self

    def run(self, coroutine, timeout=10):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, function, *args, timeout=10):
        """Run a plain function on the loop thread (e.g. closing a server) and return its result."""

        async def wrapper():
            return function(*args)

        return self.run(wrapper(), timeout)

    def __exit__(self, *exc_info):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class NetnsPair:
    """Two fresh namespaces joined by a veth pair: ``server_if`` with ``server_ip``/24 and ``client_if``."""

    server_ip = "10.213.0.1"
    client_ip = "10.213.0.50"  # added only by tests that need the client to have an address
    server_if = "srv0"
    client_if = "cli0"

    def __init__(self):
        tag = "nxt%d%d" % (os.getpid(), next(_NAMES))
        self.server_ns = tag + "s"
        self.client_ns = tag + "c"

    def ip(self, *argv):
        subprocess.run(["ip"] + list(argv), check=True, capture_output=True, text=True)

    def setup(self):
        self.ip("netns", "add", self.server_ns)
        self.ip("netns", "add", self.client_ns)
        self.ip("link", "add", self.server_if, "netns", self.server_ns, "type", "veth", "peer", "name", self.client_if, "netns", self.client_ns)
        self.ip("-n", self.server_ns, "address", "add", "%s/24" % self.server_ip, "dev", self.server_if)
        for namespace, interface in ((self.server_ns, self.server_if), (self.client_ns, self.client_if)):
            self.ip("-n", namespace, "link", "set", "lo", "up")
            self.ip("-n", namespace, "link", "set", interface, "up")
        # IPv6 would add router solicitations and DAD to every capture; this network is IPv4 only.
        for namespace in (self.server_ns, self.client_ns):
            self.run(namespace, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])

    def teardown(self):
        for namespace in (self.client_ns, self.server_ns):
            subprocess.run(["ip", "netns", "delete", namespace], check=False, capture_output=True)

    def run(self, namespace, argv, check=True, **kwargs):
        """subprocess.run ``argv`` inside ``namespace``, output captured as text unless told otherwise."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(["ip", "netns", "exec", namespace] + list(argv), check=check, **kwargs)

    def call(self, namespace, function, *args):
        """``call_in_netns``: run ``function(*args)`` inside ``namespace`` (e.g. to open a socket there)."""
        return call_in_netns(namespace, function, *args)

    def event_loop(self, namespace):
        """A NetnsLoop for ``namespace``, to use as a context manager."""
        return NetnsLoop(namespace)

    def set_client_mac(self, mac):
        self.ip("-n", self.client_ns, "link", "set", "dev", self.client_if, "address", mac)

    def give_client_address(self):
        self.ip("-n", self.client_ns, "address", "add", "%s/24" % self.client_ip, "dev", self.client_if)


def _can_make_namespaces():
    return os.geteuid() == 0 and shutil.which("ip") is not None and os.path.isdir("/run") and hasattr(_LIBC, "setns")


@pytest.fixture
def netns_pair():
    """A NetnsPair, created for the test and deleted after it."""
    if not _can_make_namespaces():
        pytest.skip("needs root and iproute2 to create network namespaces")
    pair = NetnsPair()
    try:
        pair.setup()
        yield pair
    finally:
        pair.teardown()
