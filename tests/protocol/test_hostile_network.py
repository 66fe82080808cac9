# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A boot server that holds on a hostile network: a soak of about a minute of floods on every port, while a real
client keeps booting.

The server runs as the Ansible module starts it, in the lab's controller namespace, with two listed hosts: the
real client's MAC and a second one the attacker spoofs. The attacker, a client namespace of its own with many
addresses, floods DHCP (67, 4011), HTTP (8080) and TFTP (69) at the rates below (tests/support/hostile.py). The
real client, in another namespace, loops through what a machine does to boot: a lease from the site's DHCP server,
the proxy's PXE answer, the iPXE binary over TFTP, its script, kernel and initrd, and the phone-home. Every cycle
must finish within a stated time; the server's memory, open files and log sizes must stay under stated bounds;
the attacker's takeover (the listed MACs' scripts, phone-homes with forged tokens) must fail throughout while the
real installer's phone-home is accepted; and once the floods stop the server serves as before.
"""

import hashlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from dhcp_packets import ask_proxy
from hostile import flood_argv, flood_summary, wait_ready
from ipxe_scripts import script_values
from nixielab.ansiblerun import run_module
from nixielab.net import LabNetwork
from nixielab.processes import LabError, python_environment
from scapy.layers.dhcp import BOOTP

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract, daemon
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.http import HTTP_CONNECTIONS, HTTP_CONNECTIONS_PER_CLIENT, HTTP_IDLE_TIMEOUT
from ansible_collections.nixie.provision.plugins.module_utils._bootd.server import files_needed

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and ports below 1024")

# What the attacker's floods import: tests/support, and the collection (ansible_collections/nixie/provision/plugins/...).
SUPPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")
COLLECTIONS = str(Path(contract.__file__).parents[6])

REAL_MAC = "52:54:00:5a:00:01"
SPOOFED_MAC = "52:54:00:5a:00:02"
ATTACKER_MAC = "02:00:00:00:66:66"
HOSTS = [{"name": "nixie-01", "mac": REAL_MAC}, {"name": "nixie-02", "mac": SPOOFED_MAC}]
SERVER_IP = "10.213.0.1"
SERVER_URL = "http://%s:%d" % (SERVER_IP, contract.DEFAULT_HTTP_PORT)
IPXE_BINARY = "/usr/lib/ipxe/undionly.kpxe"  # what a BIOS PXE ROM is told to fetch; the module's default ipxe_dir
DEPLOYER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOq3Ae8ciXvwSBoPHmIZVbHJU8KeUiJp6oNX8nn7UBsD deployer@test"
INSTALLER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ7n8yY9tDm3rPsn0pO3m2b3QH7O0Y1pFq3u1cJ3B0Zx root@installer"
ATTACKER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEvilEvilEvilEvilEvilEvilEvilEvilEvilEvilEvi root@attacker"

# The attacker's addresses (the site's DHCP hands out .100-.199): one it floods UDP from, one group that holds HTTP
# connections open, one that makes requests. Addresses nobody has, for the spoofed ciaddr and giaddr: some on the
# link (their replies would wait on ARP) and some off it (TEST-NET-1, which nothing routes).
ATTACKER_IP = "10.213.0.10"
HOLD_SOURCES = ["10.213.0.%d" % host for host in range(20, 40)]
REQUEST_SOURCES = ["10.213.0.%d" % host for host in range(40, 44)]
UNUSED_ON_LINK = ["10.213.0.%d" % host for host in range(200, 255)]
UNROUTABLE = ["192.0.2.%d" % host for host in range(1, 255)]

# How long the floods run: the bounded run of about a minute.
FLOOD_SECONDS = 60
# Packets per second of each DHCP flood, 600 in all. An unknown MAC's packet costs the server ~45 us, a listed MAC's
# (answered: the reply is built with scapy) ~650 us, so this takes about a fifth of a core from the server and leaves
# the real client, the site's dnsmasq (which answers every broadcast DISCOVER too) and a CI run beside the rest.
DHCP_RATES = {"random_broadcast": 300, "random_pxe_port": 100, "ciaddr": 100, "giaddr": 100}
# Unacknowledged read requests per second, each from a fresh port held open for TFTP_HOLD seconds (longer than the
# server retries an unanswered transfer), so every request costs the server a slot for as long as it keeps one.
TFTP_RATE = 20
TFTP_HOLD = 15
# Connections held open without a whole request from each HOLD_SOURCE, half of them sending a header line every few
# seconds: four more than the server admits from one address, so the per-client cap is exercised. 20 addresses x 16
# admitted = 320 held connections, under the total of 384 (HTTP_CONNECTIONS): past the total every newcomer is reset,
# the real client included (with 30 addresses it got through 4 times in 56 tries over 30 s), so the total cap alone
# cannot keep an attacker with 24 addresses from locking boot clients out; this test holds what the caps let through.
HOLDS_PER_SOURCE = HTTP_CONNECTIONS_PER_CLIENT + 4
# Requests per second from each REQUEST_SOURCE (40 in all): random MACs' scripts, listed MACs' scripts, forged phone-homes;
# at most REQUESTS_IN_FLIGHT of them open at once, so that held and requesting connections together (320 + 4 x 8) stay
# under the total cap even when a loaded server answers slowly.
REQUESTS_PER_SOURCE = 10
REQUESTS_IN_FLIGHT = 8

# The bounds, from runs on a 2-core machine beside a CI run (load average 4 to 8):
# A boot cycle of the real client: lease, PXE answer, TFTP, script, kernel and initrd, phone-home. Measured 0.3-1.1 s
# unloaded; under the floods a median of 0.55-2 s and the slowest 1.3-6.7 s, the more the busier the machine (the
# site's dnsmasq, which answers the flood's broadcasts too, is then slowest). A cycle slower than this is an outage.
CYCLE_BOUND = 15.0
# How long one step may take before the cycle counts as failed: the ProxyDHCP answer (asked again each second, as a PXE
# ROM does), a TFTP transfer (tftp-hpa retrying each second), an HTTP download.
PROXY_TIMEOUT = 10.0
TFTP_TIMEOUT = 10
# Cycles that must complete within the flood: measured 24-104; fewer than 12 means 5 s a cycle on average.
MIN_CYCLES = 12
# Once the floods stop, a cycle is back to its unloaded time (measured 0.3 s), with margin for a busy machine.
AFTER_CYCLE_BOUND = 5.0
# The server's resident memory: 65 MB idle (Python, aiohttp, scapy), 69-73 MB at the floods' peak. The absolute bound
# is about twice that; the growth bound, four times what the held connections' buffers and the budgets' tables added.
MAX_RSS_KB = 160 * 1024
MAX_RSS_GROWTH_KB = 32 * 1024
# Open files: 20 idle, 354-432 at the peak (320 held connections, up to 64 TFTP transfers, requests in flight). What
# the caps let this attacker hold is about 470; the server budgets files_needed (964 for two hosts) for any attacker. A leak of one
# descriptor per request or packet would cross this bound within seconds.
MAX_OPEN_FILES = 600
# Open files once the floods have stopped: back to within this of what the server held before, by the idle timeout.
QUIET_OPEN_FILES_MARGIN = 10
# server.log: measured 45 KB (a few lines per kind and client per 10 s, then a count); a line per packet would be
# megabytes within the minute.
MAX_SERVER_LOG = 128 * 1024
# events.jsonl: measured 320-430 KB (20 events per sender and step in 10 s, about 20 such keys here, the real client's
# own events among them); a line per packet would be 20 MB.
MAX_EVENTS_LOG = 1536 * 1024
# A held connection is closed by the idle timeout (HTTP_IDLE_TIMEOUT, 15 s) plus what the loaded event loops add
# (measured up to 2.4 s).
IDLE_CLOSE_SLACK = 5.0
# How often the server process is sampled.
SAMPLE_EVERY = 0.5


@pytest.fixture
def lab():
    with LabNetwork(tag="soak-%d" % os.getpid(), site_dhcp=True) as net:
        yield net


@pytest.fixture
def installer(tmp_path):
    """Kernel and initrd of a few MB (real downloads), and where the client puts what it fetched."""
    files = {"kernel": tmp_path / "bzImage", "initrd": tmp_path / "initrd"}
    files["kernel"].write_bytes(os.urandom(1024 * 1024 + 7))
    files["initrd"].write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    digests = {kind: hashlib.sha256(path.read_bytes()).hexdigest() for kind, path in files.items()}
    with open(IPXE_BINARY, "rb") as handle:
        digests["ipxe"] = hashlib.sha256(handle.read()).hexdigest()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    run_dir = tmp_path / "run"
    yield {"kernel": str(files["kernel"]), "initrd": str(files["initrd"]), "digests": digests, "downloads": downloads, "run_dir": str(run_dir)}
    daemon.stop(str(run_dir))


def digest(path):
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return None


def boot_cycle(client, installer):
    """One boot of the real client, as its firmware, iPXE and installer do it: ``(address, seconds per step)``.

    Raises AssertionError naming the step that failed (LabError when no lease came, TimeoutExpired when tftp hung).
    """
    steps = {}
    started = time.monotonic()

    def step(name):
        now = time.monotonic()
        steps[name] = round(now - started - sum(steps.values()), 3)

    # The lease from the site's DHCP server: its broadcast REQUEST is where the proxy hears the address.
    address = str(client.dhcp4(timeout=10))
    step("lease")
    # Sent again every second for PROXY_TIMEOUT, as a PXE ROM retransmits (for longer, with backoff).
    reply = ask_proxy(client.run, client.iface, client.mac, SERVER_IP, timeout=PROXY_TIMEOUT)
    assert reply is not None, "no ProxyDHCP answer within %g s" % PROXY_TIMEOUT
    assert BOOTP(reply).file.rstrip(b"\0") == b"undionly.kpxe" and BOOTP(reply).siaddr == SERVER_IP, BOOTP(reply).summary()
    step("proxy")
    fetched = installer["downloads"] / "undionly.kpxe"
    fetched.unlink(missing_ok=True)
    # tftp-hpa retrying as a PXE ROM does: every second.
    client.run(["tftp", SERVER_IP], input="binary\nrexmt 1\ntimeout %d\nget undionly.kpxe %s\nquit\n" % (TFTP_TIMEOUT, fetched),
               capture_output=True, text=True, timeout=TFTP_TIMEOUT + 10)
    assert digest(fetched) == installer["digests"]["ipxe"], "TFTP: undionly.kpxe not fetched whole within %d s" % TFTP_TIMEOUT
    step("tftp")
    status, script = client.curl(SERVER_URL + contract.script_path(client.mac))
    assert status == 200, "script: HTTP %d" % status
    values = script_values(script)
    step("script")
    for kind in ("kernel", "initrd"):
        target = installer["downloads"] / kind
        status, dummy = client.curl(values[kind], output=str(target), timeout=20)
        assert status == 200 and digest(target) == installer["digests"][kind], "%s: HTTP %d, or not the whole file" % (kind, status)
        target.unlink()
    step("files")
    report = {"macs": [client.mac], "ip": address, "ssh_host_keys": [INSTALLER_KEY], "disks": [],
              "os_release": {"ID": "nixos", "VARIANT_ID": "installer"}}
    status, answer = client.curl("-H", "Authorization: Bearer %s" % values["token"], "-H", "Content-Type: application/json",
                                 "--data-binary", json.dumps(report), values["api"] + "/phone-home")
    assert status == 200 and json.loads(answer) == {contract.ANSWER_FIELD: DEPLOYER_KEY}, "phone-home: HTTP %d %s" % (status, answer[:200])
    step("phone_home")
    return address, steps


class ServerSampler:
    """The server process seen from /proc every SAMPLE_EVERY seconds: resident memory, open files, CPU, log sizes."""

    def __init__(self, pid, run_dir):
        self.pid = pid
        self.paths = {"server_log": contract.run_file(run_dir, contract.LOG_FILE), "events": contract.run_file(run_dir, contract.EVENTS_FILE)}
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="server-sampler", daemon=True)

    def sample(self):
        with open("/proc/%d/status" % self.pid, encoding="ascii") as handle:
            status = dict(line.split(":", 1) for line in handle if ":" in line)
        sample = {"t": time.monotonic(), "rss_kb": int(status["VmRSS"].split()[0]), "threads": int(status["Threads"]),
                  "fds": len(os.listdir("/proc/%d/fd" % self.pid)), "cpu_seconds": cpu_seconds(self.pid)}
        for name, path in self.paths.items():
            sample[name] = os.path.getsize(path) if os.path.exists(path) else 0
        self.samples.append(sample)
        return sample

    def _run(self):
        while not self._stop.wait(SAMPLE_EVERY):
            self.sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(5)

    def peak(self, key, since=0.0):
        return max(sample[key] for sample in self.samples if sample["t"] >= since)

    def low(self, key, since=0.0):
        return min(sample[key] for sample in self.samples if sample["t"] >= since)


def cpu_seconds(pid):
    """User and system CPU time of process ``pid`` so far."""
    with open("/proc/%d/stat" % pid, encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_entry(lab, run_dir, mac):
    """The controller's view of a host, asked with this run's controller secret."""
    with open(contract.run_file(run_dir, contract.CONTROLLER_SECRET_FILE), encoding="ascii") as handle:
        secret = handle.read().strip()
    status, body = lab.curl_ctl("-H", "%s: %s" % (contract.CONTROLLER_SECRET_HEADER, secret),
                                SERVER_URL + contract.host_route(contract.mac_path(mac)))
    assert status == 200, body
    return json.loads(body)


def start_floods(lab, attacker, victim_ip):
    """The attacker's three floods, each ready to send (its set-up, scapy's import included, done) when this returns."""
    server_mac = json.loads(lab.run_ctl(["ip", "-j", "link", "show", lab.ctl_if], capture_output=True, text=True, check=True).stdout)[0]["address"]
    listed = [contract.mac_path(host["mac"]) for host in HOSTS]
    configs = {
        "dhcp": {"interface": attacker.iface, "own_mac": ATTACKER_MAC, "server_mac": server_mac, "server_ip": SERVER_IP,
                 "source_ip": ATTACKER_IP, "rates": DHCP_RATES, "unused_addresses": UNUSED_ON_LINK, "off_link_addresses": UNROUTABLE,
                 # A ciaddr in a listed MAC's DISCOVER counts as that host's address, and a host keeps its last 8: spoofed
                 # for the real MAC at 200/s they push the real address out between its lease and its script request (69
                 # of 75 cycles refused, measured), a denial of that one host which the README's threat model allows. So
                 # ciaddr is spoofed for the second MAC only, the one nobody boots; giaddr, which is not kept, for both.
                 "ciaddr_macs": [SPOOFED_MAC], "giaddr_macs": [REAL_MAC, SPOOFED_MAC], "seconds": FLOOD_SECONDS},
        "http": {"server_ip": SERVER_IP, "port": contract.DEFAULT_HTTP_PORT, "hold_sources": HOLD_SOURCES, "holds_per_source": HOLDS_PER_SOURCE,
                 "request_sources": REQUEST_SOURCES, "rate_per_source": REQUESTS_PER_SOURCE, "in_flight_per_source": REQUESTS_IN_FLIGHT,
                 "listed": listed, "victim_ip": victim_ip,
                 "key": ATTACKER_KEY, "seconds": FLOOD_SECONDS},
        "tftp": {"server_ip": SERVER_IP, "source_ip": ATTACKER_IP, "file": "undionly.kpxe", "rate": TFTP_RATE, "hold": TFTP_HOLD,
                 "seconds": FLOOD_SECONDS},
    }
    environment = python_environment()
    environment["PYTHONPATH"] = os.pathsep.join([SUPPORT, COLLECTIONS, environment["PYTHONPATH"]])
    floods = {kind: attacker.popen(flood_argv(kind, config), stdout=-1, text=True, env=environment) for kind, config in configs.items()}
    for process in floods.values():
        wait_ready(process)
    return floods


def test_the_server_holds_through_a_minute_of_floods_and_the_takeover_fails(lab, installer):
    real = lab.add_client("real", REAL_MAC)
    attacker = lab.add_client("evil", ATTACKER_MAC)
    for address in [ATTACKER_IP] + HOLD_SOURCES + REQUEST_SOURCES:
        attacker.run(["ip", "addr", "add", "%s/24" % address, "dev", attacker.iface], check=True)
    started = run_module("nixie.provision.server", {
        "kernel": installer["kernel"], "initrd": installer["initrd"], "cmdline": "init=/nix/store/x/init console=ttyS0",
        "authorized_key": DEPLOYER_KEY, "interface": lab.ctl_if, "hosts": HOSTS, "run_dir": installer["run_dir"]}, netns=lab.ctl_ns)
    assert not started["failed"], started
    budget = files_needed(len(HOSTS))
    assert budget >= HTTP_CONNECTIONS and MAX_OPEN_FILES < budget, "the bound must sit below the server's own budget"

    with ServerSampler(started["pid"], installer["run_dir"]) as sampler:
        # Unloaded first: the baseline, and the address the real installer claims its MAC from.
        real_ip, steps = boot_cycle(real, installer)
        baseline = {"seconds": sum(steps.values()), "steps": steps, **sampler.sample()}

        floods = start_floods(lab, attacker, real_ip)
        flood_start = time.monotonic()
        site_dhcp = int(lab.site_dhcp.pid_path.read_text())
        cpu_before = {"server": cpu_seconds(started["pid"]), "site_dhcp": cpu_seconds(site_dhcp)}
        cycles, failures = [], []
        while time.monotonic() - flood_start < FLOOD_SECONDS:
            cycle_start = time.monotonic()
            try:
                address, steps = boot_cycle(real, installer)
            except (AssertionError, LabError, subprocess.TimeoutExpired) as failure:
                failures.append((round(time.monotonic() - flood_start, 1), str(failure).split("\n", maxsplit=1)[0]))
                continue
            cycles.append({"seconds": round(time.monotonic() - cycle_start, 3), "steps": steps})
            assert address == real_ip, "the site's DHCP server moved the client: the phone-home would be a second machine's"
        flood_end = time.monotonic()
        summaries = {kind: flood_summary(process, timeout=30) for kind, process in floods.items()}
        cpu = {"server": cpu_seconds(started["pid"]) - cpu_before["server"], "site_dhcp": cpu_seconds(site_dhcp) - cpu_before["site_dhcp"],
               **{"attacker_" + kind: summary["cpu_seconds"] for kind, summary in summaries.items()}}
        during = {key: sampler.peak(key, since=flood_start) for key in ("rss_kb", "fds", "server_log", "events")}
        during["fewest_threads"] = sampler.low("threads", since=flood_start)

        # The floods have stopped: the server serves as before, at once.
        after_start = time.monotonic()
        boot_cycle(real, installer)
        after_seconds = time.monotonic() - after_start
        # What the floods held is given back: by the idle timeout at the latest (the attacker's sockets are closed).
        quiet_deadline = time.monotonic() + HTTP_IDLE_TIMEOUT + 5
        while sampler.sample()["fds"] > baseline["fds"] + QUIET_OPEN_FILES_MARGIN and time.monotonic() < quiet_deadline:
            time.sleep(0.5)
        quiet = sampler.sample()

    slowest = max(cycles, key=lambda cycle: cycle["seconds"], default=None)
    measured = {"baseline_cycle": baseline["seconds"], "cycles": len(cycles), "slowest": slowest, "failures": failures,
                "median_cycle": sorted(cycle["seconds"] for cycle in cycles)[len(cycles) // 2] if cycles else None, "after_cycle": after_seconds,
                "baseline": {key: baseline[key] for key in ("rss_kb", "fds", "threads")}, "during": during, "quiet": quiet, "cpu_seconds": cpu,
                "floods": summaries, "flood_seconds": flood_end - flood_start}
    # What the soak measured, for the record (pytest -s shows it) and for choosing the bounds above.
    print("\nSOAK " + json.dumps(measured, sort_keys=True))

    # The real client kept booting, every cycle within the bound.
    assert not failures, "cycles failed during the floods: %s" % failures
    assert len(cycles) >= MIN_CYCLES, measured
    assert slowest["seconds"] < CYCLE_BOUND, slowest
    assert after_seconds < AFTER_CYCLE_BOUND
    # The floods really ran at their rates, and the server's caps held: refused over the per-client cap at once,
    # and no connection kept past the idle timeout.
    dhcp, http, tftp = summaries["dhcp"], summaries["http"], summaries["tftp"]
    assert dhcp["rate"] > 0.9 * sum(DHCP_RATES.values()) and not dhcp["errors"], dhcp
    assert tftp["rate"] > 0.9 * TFTP_RATE, tftp
    # (What the attacker counts as held includes connections still in the kernel's accept queue, so no upper bound here:
    # the server's open files below are the measure of what it admitted.)
    assert http["refused_at_once"] > 0 and http["most_held"] >= 0.9 * len(HOLD_SOURCES) * HTTP_CONNECTIONS_PER_CLIENT, http
    assert http["closed_by_server"] > 0 and http["longest_held"] < HTTP_IDLE_TIMEOUT + IDLE_CLOSE_SLACK, http
    # The server's costs stayed bounded, and it still runs as it did: no thread of it (TFTP's) ended.
    assert during["fewest_threads"] >= baseline["threads"] and quiet["threads"] >= baseline["threads"], (baseline, during, quiet)
    assert during["rss_kb"] < MAX_RSS_KB and during["rss_kb"] - baseline["rss_kb"] < MAX_RSS_GROWTH_KB, (baseline, during)
    assert during["fds"] < MAX_OPEN_FILES, during
    assert during["server_log"] < MAX_SERVER_LOG and during["events"] < MAX_EVENTS_LOG, during
    assert quiet["fds"] <= baseline["fds"] + QUIET_OPEN_FILES_MARGIN, (baseline, quiet)
    with open(contract.run_file(installer["run_dir"], contract.LOG_FILE), encoding="utf-8", errors="replace") as handle:
        assert "Traceback" not in handle.read()

    # The takeover failed throughout: the listed MACs' scripts were refused to the attacker, as were its phone-homes...
    # (Never a success; a request the loaded server did not answer in time is no success either.)
    statuses = http["statuses"]
    for kind, expected in (("listed script", "403"), ("phone-home, own ip", "403"), ("phone-home, victim's ip", "403"), ("random script", "404")):
        answered = {key.split(": ", 1)[1]: count for key, count in statuses.items() if key.startswith(kind + ": ")}
        assert not any(status.startswith("2") for status in answered), (kind, statuses)
        assert answered.get(expected, 0) > 100 and answered[expected] >= 0.95 * sum(answered.values()), (kind, statuses)
    # ...and the controller sees the real installer's report, from the real client's address, for the real MAC alone.
    entry = host_entry(lab, installer["run_dir"], REAL_MAC)
    assert entry["token"] == "claimed" and entry["conflict"] is None, entry
    assert entry["report"]["ip"] == entry["report"]["source_ip"] == real_ip and entry["report"]["ssh_host_keys"] == [INSTALLER_KEY], entry
    spoofed = host_entry(lab, installer["run_dir"], SPOOFED_MAC)
    assert spoofed["token"] == "none" and spoofed["report"] is None and spoofed["conflict"] is None, spoofed
