"""Two identical lab networks per measurement, one for Nixie and one for the reference tools.

Each side gets its own nixielab.LabNetwork (controller namespace with ``nixie0`` 10.213.0.1, bridge, client
namespaces), so both servers bind the same address and ports with the same files, never hear each other's
DHCP, and can be measured in alternation without restarting anything.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import threading
import time
from pathlib import Path

from nixielab import LabNetwork

SERVER_IP = "10.213.0.1"
HTTP_PORT = 8080
# Client namespaces get 10.213.0.3 and up (.1 is the server, .2 the bridge): room for P5's 250 machines. The parts that
# also take source addresses (SOURCE_BASE and up) have one client, so the two ranges never meet in one lab. Labs with
# clients run no site DHCP.
CLIENT_BASE = 3
# A client's further source addresses, 10.213.0.201 and up: parallel downloads come from as many addresses, as a
# fleet's machines do, rather than from one address that the server's per-client caps would hold back.
SOURCE_BASE = 201
SOURCE_LIMIT = 54
CLK_TCK = 100


class Side:
    """One lab (``name`` is "nixie" or "reference") with its client namespaces."""

    def __init__(self, name, network):
        self.name = name
        self.lab = network
        self.clients = []

    def add_clients(self, count):
        """Make sure ``count`` client namespaces exist, each with a static address; return them."""
        while len(self.clients) < count:
            index = len(self.clients)
            client = self.lab.add_client("m%d" % index, "02:be:%02x:00:%02x:%02x" % (ord(self.name[0]), index >> 8, index & 0xFF))
            client.address = "10.213.0.%d" % (CLIENT_BASE + index)
            client.run(["ip", "addr", "add", client.address + "/24", "dev", client.iface], check=True)
            self.clients.append(client)
        return self.clients[:count]


def timed_run(argv, timeout):
    """Seconds from starting ``argv`` to its exit; CalledProcessError if it failed, TimeoutExpired past ``timeout`` s.

    Not subprocess.run: given a timeout, it polls for the exit at intervals growing to 50 ms, which rounds each time up
    to a grid of 0.064 + k * 0.05 s, as much as the whole difference between two 0.25 s downloads. A blocking wait
    returns at the exit, and a timer kills a child still running at the timeout.
    """
    started = time.monotonic()
    process = subprocess.Popen(argv)
    expired = threading.Event()

    def kill():
        expired.set()
        process.kill()

    killer = threading.Timer(timeout, kill)
    killer.start()
    try:
        code = process.wait()
    finally:
        killer.cancel()
    seconds = time.monotonic() - started
    if expired.is_set():
        raise subprocess.TimeoutExpired(argv, timeout)
    if code:
        raise subprocess.CalledProcessError(code, argv)
    return seconds


def source_addresses(client, count):
    """``count`` addresses of ``client`` (configured on its interface the first time) for one download each."""
    if count > SOURCE_LIMIT:
        raise ValueError("at most %d source addresses per client, not %d" % (SOURCE_LIMIT, count))
    addresses = ["10.213.0.%d" % (SOURCE_BASE + index) for index in range(count)]
    configured = getattr(client, "source_addresses", set())
    for address in addresses:
        if address not in configured:
            client.run(["ip", "addr", "add", address + "/24", "dev", client.iface], check=True)
            configured.add(address)
    client.source_addresses = configured
    return addresses


@contextlib.contextmanager
def sides(**options):
    """Yield (nixie, reference) Sides on fresh labs; ``options`` go to LabNetwork (site_dhcp, ipv6)."""
    tag = secrets.token_hex(2)
    with LabNetwork("bn-" + tag, **options) as nixie_lab, LabNetwork("br-" + tag, **options) as reference_lab:
        yield Side("nixie", nixie_lab), Side("reference", reference_lab)


def proc_stat(pid):
    """(CPU seconds, RSS bytes) of one process."""
    stat = Path("/proc/%d/stat" % pid).read_text(encoding="ascii")
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[21]) * 4096


def family(pids):
    """``pids`` and all their descendants (nginx's workers)."""
    found = set(pids)
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = path.read_text(encoding="ascii")
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) in found:
            found.add(int(path.parent.name))
    return sorted(found)


def usage(pids):
    """Total (CPU seconds, RSS bytes) of ``pids`` and their children."""
    cpu = rss = 0
    for pid in family(pids):
        try:
            seconds, resident = proc_stat(pid)
        except (OSError, ValueError):
            continue
        cpu += seconds
        rss += resident
    return cpu, rss


class Meter:
    """CPU seconds and peak RSS of a server's processes over a ``with`` block; with ``sample_every``, the RSS is also
    sampled that often by a thread of its own, so the block can wait for its work to end rather than poll."""

    def __init__(self, pids, sample_every=None):
        self.pids = family(pids)
        self.cpu = 0.0
        self.peak_rss = 0
        self.seconds = 0.0
        self._cpu0 = self._t0 = 0.0
        self._sample_every = sample_every
        self._done = threading.Event()
        self._sampler = None

    def __enter__(self):
        self._cpu0, self.peak_rss = usage(self.pids)
        self._t0 = time.monotonic()
        if self._sample_every is not None:
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self):
        while not self._done.wait(self._sample_every):
            self.peak_rss = max(self.peak_rss, usage(self.pids)[1])

    def __exit__(self, *exc_info):
        self.seconds = time.monotonic() - self._t0
        self._done.set()
        if self._sampler is not None:
            self._sampler.join()
        cpu, rss = usage(self.pids)
        self.cpu = cpu - self._cpu0
        self.peak_rss = max(self.peak_rss, rss)
