"""The six measurements of issue 6. Each returns Rows; Nixie and the reference are measured in alternation.

Sizes come from a Profile (full run or smoke). Every figure names its unit; ratios are Nixie / reference.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from nixielab import LabError, append_cpio, build_installer
from nixielab.capture import Capture
from nixielab.netboot import AGENT
from nixielab.playbook import run_playbook
from nixielab.processes import in_netns

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract

from . import burst, files, netns, nixcost, sim, timeline
from .lab import SERVER_IP, Meter, sides, source_addresses, timed_run
from .servers import BASE, NixieServer, ReferenceServer

MIB = 1 << 20
GIB = 1 << 30
BENCH_DIR = Path(__file__).resolve().parent


@dataclasses.dataclass
class Row:
    """One line of the table. ``better`` is "higher" or "lower"; ``target`` is text, ``met`` True/False/None."""

    part: str
    figure: str
    nixie: float
    reference: float | None
    unit: str
    better: str = "lower"
    target: str = ""
    met: bool | None = None
    # The runs behind the medians, (Nixie's, the reference's): the table shows their range.
    spread: tuple = ()

    @property
    def ratio(self):
        return self.nixie / self.reference if self.reference else None


@dataclasses.dataclass(frozen=True)
class Profile:
    """How big and how often: FULL for `make bench`, SMOKE for CI."""

    repetitions: int
    http_size: int
    http_clients: tuple
    tftp_size: int
    tftp_clients: tuple
    dhcp_bursts: tuple
    fleet_sizes: tuple
    fleet_initrd: int
    orchestration_runs: int
    vm_boots: int
    nix_fleet_sizes: tuple
    lossy_boots: int


FULL = Profile(repetitions=5, http_size=512 * MIB, http_clients=(1, 20), tftp_size=MIB, tftp_clients=(1, 50), dhcp_bursts=(500, 5000),
               fleet_sizes=(62, 125, 250), fleet_initrd=64 * MIB, orchestration_runs=3, vm_boots=3,
               nix_fleet_sizes=(1, 5, 20), lossy_boots=10)
SMOKE = Profile(repetitions=1, http_size=4 * MIB, http_clients=(1, 4), tftp_size=MIB, tftp_clients=(1, 4), dhcp_bursts=(50,),
                fleet_sizes=(2, 4), fleet_initrd=MIB, orchestration_runs=1, vm_boots=0,
                nix_fleet_sizes=(1, 2), lossy_boots=0)


def alternate(repetitions, nixie, reference):
    """Run the two measurements ``repetitions`` times each, N R R N N R ...: drift in the machine's load hits both alike."""
    results = {"nixie": [], "reference": []}
    for index in range(repetitions):
        order = (("nixie", nixie), ("reference", reference))
        for name, measure in order if index % 2 == 0 else reversed(order):
            results[name].append(measure())
    return results["nixie"], results["reference"]


def _booted_script(client):
    """``client``'s script, parsed (sim.parse_script), fetched as a machine does: after the DHCP exchange that the
    server gives the script's token for."""
    holder = {}

    def fetch():  # in a thread of its own: sim.boot enters the client's namespace
        try:
            holder["script"] = sim.boot(client, SERVER_IP, script_only=True)
        except BaseException as error:  # raised again below, in the caller
            holder["error"] = error

    thread = threading.Thread(target=fetch)
    thread.start()
    thread.join()
    if "error" in holder:
        raise holder["error"]
    return holder["script"]


def _nixie_initrd_url(client):
    """The signed initrd URL of ``client``'s script, as iPXE would get it."""
    return _booted_script(client)[1]


def _parallel_curl(client, url, count, extra=()):
    """``count`` curl processes at once from ``client``'s namespace, each from its own address; seconds until all are
    done (a failed one fails the run)."""
    curl = " ".join(["curl", "-sf", "-o", "/dev/null", "--interface", "$address", *extra, url])
    addresses = " ".join(source_addresses(client, count))
    # Each job waited for by its pid: a bare `wait` returns 0 whatever the downloads did.
    return timed_run(in_netns(client.netns, ["sh", "-c", "pids=; for address in %s; do %s & pids=\"$pids $!\"; done; "
                                                         "failed=0; for pid in $pids; do wait $pid || failed=1; done; exit $failed"
                                                         % (addresses, curl)]), 900)


def _sequential_curl(client, url, count, extra=()):
    curl = " ".join(["curl", "-sf", "-o", "/dev/null", *extra, url])
    return timed_run(in_netns(client.netns, ["sh", "-c", "for i in $(seq %d); do %s || exit 1; done" % (count, curl)]), 900)


def _transfer_rows(part, what, nixie_runs, reference_runs, served, target, floor, cpu_ceiling=None):
    """Rows for a throughput measurement: runs are (seconds, cpu) pairs; ``served`` bytes per run. ``floor`` is the
    lowest throughput ratio that meets ``target``; ``cpu_ceiling``, when given, the highest CPU-per-GiB ratio."""
    rates = tuple([served / seconds / MIB for seconds, _cpu in runs] for runs in (nixie_runs, reference_runs))
    cpus = tuple([cpu / (served / GIB) for _seconds, cpu in runs] for runs in (nixie_runs, reference_runs))
    rate_n, rate_r = (statistics.median(values) for values in rates)
    cpu_n, cpu_r = (statistics.median(values) for values in cpus)
    return [Row(part, "%s throughput" % what, rate_n, rate_r, "MiB/s", "higher", target, rate_n / rate_r >= floor, spread=rates),
            Row(part, "%s server CPU" % what, cpu_n, cpu_r, "CPU s/GiB", "lower", "ratio <= %g" % cpu_ceiling if cpu_ceiling else "",
                cpu_n / cpu_r <= cpu_ceiling if cpu_ceiling and cpu_r else None, spread=cpus)]


def _boot_files(workdir):
    """The test installer with the real agent hook, as Files both sides serve."""
    installer = build_installer()
    initrd = append_cpio(installer.initrd, {"/etc/nixie/hooks.d/50-nixie-agent": AGENT}, Path(workdir) / "installer-initrd.gz")
    return files.Files(kernel=installer.kernel, initrd=initrd, cmdline=installer.cmdline, ipxe_dir=files.IPXE_DIR)


# SeaBIOS boots QEMU's iPXE ROM (no TFTP); OVMF without the ROM runs EDK2's PXE, which fetches ipxe.efi over TFTP.
FIRMWARES = (("bios", "e1000", "SeaBIOS"), ("uefi", "virtio-native", "OVMF"))


def _power_on_together(machines, timeout):
    """Start ``machines`` at once; the wall-clock start, once each has reached its installer (or ``timeout`` passed).

    Returns (started, names of the machines that did not get there)."""
    started = time.time()
    for machine in machines:
        # QEMU truncates the console log only once it is up: the last boot's "ready" must not count.
        machine.serial_path.unlink(missing_ok=True)
        machine.start()
    late = []
    deadline = time.monotonic() + timeout
    for machine in machines:
        try:
            machine.wait_for_serial(r"NIXIELAB: ready", timeout=max(deadline - time.monotonic(), 1))
        except LabError:
            late.append(machine.name)
    return started, late


def p1_boot(profile, workdir, log):
    """Lab VM power-on -> phone-home through each side, SeaBIOS and OVMF, the two sides' VMs booting at the same time."""
    boot_files = _boot_files(workdir)
    rows = []
    mac = "52:54:00:be:00:01"
    for firmware, nic, name in FIRMWARES:
        # IPv6 on: the site server's router advertisements spare iPXE its ~13 s IPv6 wait on both sides.
        with sides(ipv6=True) as (nixie_side, reference_side):
            machines = {side.name: side.lab.add_machine("vm", mac, firmware=firmware, nic=nic) for side in (nixie_side, reference_side)}
            with NixieServer(nixie_side, Path(workdir) / "p1n", [mac], boot_files) as nixie, \
                    ReferenceServer(reference_side, Path(workdir) / "p1r", [mac], boot_files) as reference:
                times = {"nixie": [], "reference": []}
                initrd_times = {"nixie": [], "reference": []}
                for boot in range(profile.vm_boots):
                    started, late = _power_on_together(machines.values(), 300)
                    if late:
                        raise LabError("P1 %s boot %d: %s did not reach the installer in 300 s" % (firmware, boot + 1, late))
                    homes = [event["ts"] for event in nixie.events(contract.STEP_PHONE_HOME) if event["ts"] > started]
                    fetched = [event["ts"] for event in nixie.events(contract.STEP_INITRD) if event["ts"] > started]
                    posts = [entry[0] for entry in reference.access_log() if entry[0] > started and entry[3] == contract.PHONE_HOME_ROUTE]
                    gets = [entry[0] for entry in reference.access_log() if entry[0] > started and entry[3] == "/initrd"]
                    times["nixie"].append(homes[0] - started)
                    times["reference"].append(posts[0] - started)
                    initrd_times["nixie"].append(fetched[0] - started)
                    initrd_times["reference"].append(gets[0] - started)
                    log("P1 %s boot %d: nixie %.1f s, reference %.1f s" % (firmware, boot + 1, times["nixie"][-1], times["reference"][-1]))
                    for machine in machines.values():
                        machine.stop()
            n, r = statistics.median(times["nixie"]), statistics.median(times["reference"])
            rows.append(Row("P1", "%s power-on -> phone-home" % name, n, r, "s", "lower", "ratio <= 1.05", n / r <= 1.05))
            rows.append(Row("P1", "%s power-on -> initrd request" % name, statistics.median(initrd_times["nixie"]),
                            statistics.median(initrd_times["reference"]), "s"))
    return rows


# A lossy boot that has not phoned home by then counts as failed (a firmware that fell through its boot entries
# takes minutes to come back to the network, if it does).
LOSSY_BOOT_TIMEOUT = 600


# Where P8 keeps what a failed or slow lossy boot left (capture, console, boot server events), past the run.
LOSSY_EVIDENCE = BENCH_DIR / "output" / "p8"
# Console lines worth printing from such a boot: the firmware's boot entries and iPXE's verdicts.
_BOOT_CONSOLE_LINE = re.compile(r"PXE|HTTP|Boot|iPXE|Nothing|fail|error|rror", re.IGNORECASE)


def _keep_lossy_boot(label, tap, machine, server, started, log):
    """Keep a failed or slow lossy boot's tap capture, console and boot server events, and log its timeline."""
    kept = LOSSY_EVIDENCE / label
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(parents=True)
    shutil.copy(tap.path, kept / "tap.pcap")
    console = machine.serial_text()
    (kept / "serial.log").write_text(console, encoding="utf-8")
    events = [event for event in server.events() if event["ts"] > started]
    (kept / "events.json").write_text(json.dumps(events, indent=1), encoding="utf-8")
    lines = timeline.boot_timeline(tap.packets(), machine.mac, started)
    (kept / "timeline.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    log("P8 %s, kept in %s; what the machine sent and got:\n  %s\nits console:\n  %s" % (
        label, kept, "\n  ".join(lines[:80]),
        "\n  ".join(line for line in console.splitlines() if _BOOT_CONSOLE_LINE.search(line))[-4000:]))


def p8_lossy_boot(profile, workdir, log):
    """Lab VM power-on -> phone-home through Nixie with one frame in ten dropped on the bridge, against the same boot
    through Nixie without loss (the "reference" column), SeaBIOS and OVMF, both VMs booting at the same time."""
    boot_files = _boot_files(workdir)
    rows = []
    mac = "52:54:00:be:00:08"
    for firmware, nic, name in FIRMWARES:
        with sides(ipv6=True) as (lossy_side, clean_side):
            lossy_side.lab.drop_one_frame_in(10)
            machines = {side.name: side.lab.add_machine("vm", mac, firmware=firmware, nic=nic) for side in (lossy_side, clean_side)}
            with NixieServer(lossy_side, Path(workdir) / "p8l", [mac], boot_files) as lossy, \
                    NixieServer(clean_side, Path(workdir) / "p8c", [mac], boot_files) as clean:
                times = {"lossy": [], "clean": []}
                for boot in range(profile.lossy_boots):
                    tap = Capture(lossy_side.lab, "p8-%d" % boot, timeline.CAPTURE_FILTER, netns=machines["nixie"].netns, interface=machines["nixie"].tap)
                    with tap:
                        started, late = _power_on_together(machines.values(), LOSSY_BOOT_TIMEOUT)
                    for label, server in (("lossy", lossy), ("clean", clean)):
                        homes = [event["ts"] for event in server.events(contract.STEP_PHONE_HOME) if event["ts"] > started]
                        times[label].append(homes[0] - started if homes else None)
                    lossy_time, clean_time = times["lossy"][-1], times["clean"][-1]
                    if lossy_time is None or clean_time is None or lossy_time > 2 * clean_time:
                        _keep_lossy_boot("%s-boot%d" % (firmware, boot + 1), tap, machines["nixie"], lossy, started, log)
                    log("P8 %s boot %d: lossy %s, clean %s (frames dropped so far: %d)%s" % (
                        firmware, boot + 1, *("no phone-home" if t is None else "%.1f s" % t for t in (lossy_time, clean_time)),
                        lossy_side.lab.dropped_frames("lossy"), "; not in the installer: %s" % late if late else ""))
                    for machine in machines.values():
                        machine.stop()
            # A failed boot counts as the timeout: a boot that never arrives is as slow as any can be.
            counted = tuple([t if t is not None else LOSSY_BOOT_TIMEOUT for t in times[label]] for label in ("lossy", "clean"))
            lossy_p90, clean_p90 = (_percentile(values, 0.9) for values in counted)
            home = sum(t is not None for t in times["lossy"])
            rows.append(Row("P8", "%s, 10 %% frame loss: boots that phoned home" % name, home, profile.lossy_boots, "boots", "higher",
                            "all", home == profile.lossy_boots))
            rows.append(Row("P8", "%s, 10 %% frame loss: p90 power-on -> phone-home (reference: no loss)" % name, lossy_p90, clean_p90,
                            "s", "lower", "ratio <= 2", lossy_p90 <= 2 * clean_p90))
            rows.append(Row("P8", "%s, 10 %% frame loss: median power-on -> phone-home (reference: no loss)" % name,
                            statistics.median(counted[0]), statistics.median(counted[1]), "s", spread=counted))
    return rows


def p2_http(profile, workdir, log):
    """A large initrd over HTTP to 1 and N curl clients through a veth: throughput and server CPU per GiB."""
    served_files = files.synthetic(workdir, profile.http_size)
    rows = []
    with sides(site_dhcp=False) as (nixie_side, reference_side):
        nixie_client = nixie_side.add_clients(1)[0]
        reference_client = reference_side.add_clients(1)[0]
        with NixieServer(nixie_side, Path(workdir) / "p2n", [nixie_client.mac], served_files) as nixie, \
                ReferenceServer(reference_side, Path(workdir) / "p2r", [reference_client.mac], served_files) as reference:
            nixie_url = _nixie_initrd_url(nixie_client)
            for clients in profile.http_clients:
                def measure(server, client, url, clients=clients):
                    with Meter(server.pids) as meter:
                        seconds = _parallel_curl(client, url, clients)
                    return seconds, meter.cpu

                # One download takes about 0.25 s, and whether curl shares a core with the server moves it by half:
                # three times the runs, for a few seconds more.
                runs = profile.repetitions * (3 if clients == 1 else 1)
                nixie_runs, reference_runs = alternate(runs, lambda measure=measure: measure(nixie, nixie_client, nixie_url),
                                                       lambda measure=measure: measure(reference, reference_client, BASE + "/initrd"))
                log("P2 %d clients: nixie %s, reference %s" % (clients, nixie_runs, reference_runs))
                rows += _transfer_rows("P2", "HTTP %d MiB x %d" % (profile.http_size // MIB, clients), nixie_runs, reference_runs,
                                       clients * profile.http_size, "ratio >= 1", 1.0)
    return rows


def p3_tftp(profile, workdir, log):
    """A 1 MiB ipxe.efi over TFTP, blksize 1468: 20 fetches one after the other, and N clients at once."""
    served_files = files.synthetic(workdir, MIB, ipxe_efi_size=profile.tftp_size)
    rows = []
    with sides(site_dhcp=False) as (nixie_side, reference_side):
        nixie_client = nixie_side.add_clients(1)[0]
        reference_client = reference_side.add_clients(1)[0]
        url = "tftp://%s/ipxe.efi" % SERVER_IP
        blksize = ("--tftp-blksize", "1468")
        with NixieServer(nixie_side, Path(workdir) / "p3n", [nixie_client.mac], served_files) as nixie, \
                ReferenceServer(reference_side, Path(workdir) / "p3r", [reference_client.mac], served_files) as reference:
            for clients in profile.tftp_clients:
                # One client: 20 fetches in a row, so curl's start-up is not most of what is timed.
                count = 20 if clients == 1 else clients

                def measure(server, client, url=url, clients=clients, count=count):
                    with Meter(server.pids) as meter:
                        if clients == 1:
                            seconds = _sequential_curl(client, url, count, blksize)
                        else:
                            seconds = _parallel_curl(client, url, count, blksize)
                    return seconds, meter.cpu

                runs = max(3, profile.repetitions * 2)
                nixie_runs, reference_runs = alternate(runs, lambda measure=measure: measure(nixie, nixie_client),
                                                       lambda measure=measure: measure(reference, reference_client))
                log("P3 %d clients: nixie %s, reference %s" % (clients, nixie_runs, reference_runs))
                label = "TFTP 1 MiB x 20 in a row" if clients == 1 else "TFTP 1 MiB x %d at once" % clients
                rows += _transfer_rows("P3", label, nixie_runs, reference_runs, count * profile.tftp_size, "ratio >= 1", 1.0, 1.2)
                if clients > 1:
                    with _BareTftp(nixie_side, served_files) as bare:
                        bare_runs, reference_runs = alternate(runs, lambda measure=measure: measure(bare, nixie_client, bare.url),
                                                              lambda measure=measure: measure(reference, reference_client))
                    log("P3 %d clients, bare Python loop: %s, reference %s" % (clients, bare_runs, reference_runs))
                    cpus = tuple([cpu / (count * profile.tftp_size / GIB) for _seconds, cpu in runs] for runs in (bare_runs, reference_runs))
                    rows.append(Row("P3", "%s: server CPU of a bare Python loop (bench/bare_tftp.py, the floor for Python)" % label,
                                    statistics.median(cpus[0]), statistics.median(cpus[1]), "CPU s/GiB", "lower", spread=cpus))
    return rows


class _BareTftp:
    """bench/bare_tftp.py serving ``files``' ipxe.efi in ``side``'s controller namespace, on a port of its own."""

    PORT = 6969

    def __init__(self, side, served_files):
        self.argv = in_netns(side.lab.ctl_ns, [sys.executable, str(Path(__file__).with_name("bare_tftp.py")), SERVER_IP, str(self.PORT),
                                               str(Path(served_files.ipxe_dir, contract.IPXE_EFI))])
        self.url = "tftp://%s:%d/%s" % (SERVER_IP, self.PORT, contract.IPXE_EFI)
        self.process = None

    @property
    def pids(self):
        return [self.process.pid]

    def __enter__(self):
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            self.process.kill()
            raise RuntimeError("P3: bench/bare_tftp.py did not start (exit %s)" % self.process.wait())
        return self

    def __exit__(self, *exc_info):
        self.process.kill()
        self.process.wait()
        self.process.stdout.close()


def p4_proxydhcp(profile, workdir, log):
    """N PXE DISCOVERs from N distinct known MACs within one second, for each N of the profile: drops and answer latency."""
    served_files = files.synthetic(workdir, MIB)
    macs = ["02:bd:00:%02x:%02x:%02x" % (index >> 16, (index >> 8) & 0xFF, index & 0xFF) for index in range(max(profile.dhcp_bursts))]
    rows = []
    with sides(site_dhcp=False) as (nixie_side, reference_side):
        nixie_client = nixie_side.add_clients(1)[0]
        reference_client = reference_side.add_clients(1)[0]
        with NixieServer(nixie_side, Path(workdir) / "p4n", macs, served_files), \
                ReferenceServer(reference_side, Path(workdir) / "p4r", macs, served_files):
            for count in profile.dhcp_bursts:
                burst_macs = macs[:count]
                nixie_runs, reference_runs = alternate(profile.repetitions, lambda: burst.run_burst(nixie_client, burst_macs, 1.0, SERVER_IP),
                                                       lambda: burst.run_burst(reference_client, burst_macs, 1.0, SERVER_IP))
                rows += _burst_rows(count, nixie_runs, reference_runs, log)
    return rows


def _burst_rows(count, nixie_runs, reference_runs, log):
    def summary(runs):
        drops = sum(sent - len(latencies) for latencies, sent in runs)
        p50s = [statistics.median(latencies) * 1000 for latencies, _sent in runs if latencies]
        p99s = [_percentile(latencies, 0.99) * 1000 for latencies, _sent in runs if latencies]
        return drops, p50s, p99s

    (drops_n, p50s_n, p99s_n), (drops_r, p50s_r, p99s_r) = summary(nixie_runs), summary(reference_runs)
    log("P4 %d: nixie drops %d p50 %s p99 %s ms; reference drops %d p50 %s p99 %s ms; load %s"
        % (count, drops_n, _spread(p50s_n), _spread(p99s_n), drops_r, _spread(p50s_r), _spread(p99s_r), _load()))
    label = "%d DISCOVERs in 1 s" % count
    p99_n = statistics.median(p99s_n)
    return [Row("P4", "%s: drops (all runs)" % label, drops_n, drops_r, "packets", "lower", "0", drops_n == 0),
            Row("P4", "%s: p50 answer" % label, statistics.median(p50s_n), statistics.median(p50s_r), "ms",
                spread=(p50s_n, p50s_r)),
            Row("P4", "%s: p99 answer" % label, p99_n, statistics.median(p99s_r), "ms", "lower", "<= 10 ms", p99_n <= 10,
                spread=(p99s_n, p99s_r))]


def _spread(values):
    return "%.2f [%.2f-%.2f]" % (statistics.median(values), min(values), max(values))


def _load():
    return "%.2f %.2f %.2f" % os.getloadavg()


def _percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _fleet(server, clients):
    """Boot every client at once; return (seconds, server CPU s, server peak RSS bytes, failures)."""
    barrier = threading.Barrier(len(clients) + 1)
    failures = []

    def machine(client):
        try:
            sim.boot(client, SERVER_IP, barrier)
        except (sim.BootFailed, OSError) as error:
            failures.append("%s: %s" % (client.name, error))

    threads = [threading.Thread(target=machine, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    with Meter(server.pids, sample_every=0.05) as meter:
        barrier.wait()
        for thread in threads:
            thread.join()
    return meter.seconds, meter.cpu, meter.peak_rss, failures


def p5_fleet(profile, workdir, log):
    """62/125/250 simulated machines (no VMs) through the whole chain at once: time, server CPU and RSS, scaling."""
    served_files = files.synthetic(workdir, profile.fleet_initrd)
    rows = []
    largest = max(profile.fleet_sizes)
    results = {}
    with sides(site_dhcp=False) as (nixie_side, reference_side):
        nixie_clients = nixie_side.add_clients(largest)
        reference_clients = reference_side.add_clients(largest)
        with NixieServer(nixie_side, Path(workdir) / "p5n", [c.mac for c in nixie_clients], served_files) as nixie, \
                ReferenceServer(reference_side, Path(workdir) / "p5r", [c.mac for c in reference_clients], served_files) as reference:
            for size in profile.fleet_sizes:
                results[size] = alternate(profile.repetitions, lambda size=size: _fleet(nixie, nixie_clients[:size]),
                                          lambda size=size: _fleet(reference, reference_clients[:size]))
                log("P5 %d machines: nixie %s, reference %s" % (size, [run[:3] for run in results[size][0]], [run[:3] for run in results[size][1]]))
    medians = {}
    for size in profile.fleet_sizes:
        failures = [[failure for run in runs for failure in run[3]] for runs in results[size]]
        # Per side, the run of median total time (its CPU and RSS belong with it).
        nixie_run, reference_run = medians[size] = tuple(sorted(runs)[len(runs) // 2] for runs in results[size])
        label = "%d machines, %d MiB initrd" % (size, profile.fleet_initrd // MIB)
        # A row, not an abort: a side's failed boots are a result (the reference's too, which would otherwise cost the
        # whole run its table), and its times then include the waits of the failed ones.
        for side, failed in zip(("nixie", "reference"), failures):
            if failed:
                log("P5 %d machines: %s: %d boots failed: %s" % (size, side, len(failed), "; ".join(failed[:5])))
        rows.append(Row("P5", "%s: boots failed (all runs)" % label, len(failures[0]), len(failures[1]), "boots", "lower", "0",
                        not failures[0]))
        runs = [[run[0] for run in side] for side in results[size]]
        rss = nixie_run[2] / reference_run[2]
        rows += [Row("P5", "%s: total time" % label, nixie_run[0], reference_run[0], "s", spread=runs),
                 Row("P5", "%s: server CPU" % label, nixie_run[1], reference_run[1], "CPU s"),
                 Row("P5", "%s: server peak RSS" % label, nixie_run[2] / MIB, reference_run[2] / MIB, "MiB", "lower",
                     "ratio <= 2", rss <= 2),
                 Row("P5", "%s: server peak RSS per machine served" % label, nixie_run[2] / size / 1024, reference_run[2] / size / 1024, "KiB")]
        log("P5 %d machines: total time nixie %s s, reference %s s; load %s" % (size, _spread(runs[0]), _spread(runs[1]), _load()))
    for small, large in zip(profile.fleet_sizes, profile.fleet_sizes[1:]):
        growth = [medians[large][index][0] / (medians[small][index][0] * large / small) for index in (0, 1)]
        rows.append(Row("P5", "time growth %d -> %d, / linear" % (small, large), growth[0], growth[1], "x", "lower",
                        "<= 1.1", growth[0] <= 1.1))
    return rows


# P6 ends at the exec of nixos-anywhere by this task of the install role: the recording stand-in (first on PATH) logs
# its start time there, then fails, so the role stops.
STANDIN_DIR = BENCH_DIR / "bin"
ORCHESTRATION_END = "Run nixos-anywhere"
BETWEEN_TASKS = "(between tasks: Ansible)"


def _ssh_keys(directory):
    """The simulated installer's dropbear host key (file, public line) and the deployer's private key."""
    host_key, deployer_key = directory / "dropbear_ed25519", directory / "id_ed25519"
    for path in (host_key, deployer_key, deployer_key.with_suffix(".pub")):
        path.unlink(missing_ok=True)
    subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(host_key)], capture_output=True, check=True)
    public = subprocess.run(["dropbearkey", "-y", "-f", str(host_key)], capture_output=True, text=True, check=True).stdout
    line = next(line for line in public.splitlines() if line.startswith("ssh-ed25519 "))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(deployer_key)], capture_output=True, check=True)
    return host_key, line, deployer_key


def _wait_for_ssh(lab, address, timeout=10.0):
    """Until the controller namespace gets an SSH host key from ``address`` (dropbear is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scan = subprocess.run(in_netns(lab.ctl_ns, ["ssh-keyscan", "-T", "1", address]), capture_output=True, text=True, check=False)
        if scan.stdout.strip():
            return
        time.sleep(0.2)
    raise RuntimeError("P6: no SSH server answers at %s" % address)


def _short(task, width=60):
    return task if len(task) <= width else task[:width - 3] + "..."


def _task_breakdown(times, home, end):
    """Seconds of [home, end] spent in each task (start -> result, clipped) and between tasks."""
    spans, started = {}, {}
    for entry in map(json.loads, times.read_text().splitlines()):
        if entry["event"] == "start":
            started[entry["task"]] = entry["time"]
        elif entry["task"] in started:
            spans[entry["task"]] = (started.pop(entry["task"]), entry["time"])
    spans.update({task: (begun, end) for task, begun in started.items()})  # a task without a result ends at the exec
    breakdown = {task: max(0.0, min(stop, end) - max(begun, home)) for task, (begun, stop) in spans.items()}
    breakdown = {task: seconds for task, seconds in breakdown.items() if seconds > 0}
    breakdown[BETWEEN_TASKS] = (end - home) - sum(breakdown.values())
    return breakdown


def p6_orchestration(profile, workdir, log):
    """Phone-home event -> the install role's exec of nixos-anywhere (a recording stand-in), as the lab playbook runs it."""
    served_files = files.synthetic(workdir, MIB)
    delays, breakdowns = [], []
    directory = Path(workdir) / "p6"
    directory.mkdir(parents=True, exist_ok=True)
    host_key, host_key_line, deployer_key = _ssh_keys(directory)
    with sides(site_dhcp=False) as (nixie_side, _reference_side):
        client = nixie_side.add_clients(1)[0]
        # The installer's SSH server, whose key the agent reports: the install module scans it before the exec.
        dropbear = client.popen(["dropbear", "-F", "-E", "-s", "-r", str(host_key), "-p", "22"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_ssh(nixie_side.lab, client.address)
            inventory = directory / "inventory.json"
            host = {"nixie_mac": client.mac, "ansible_connection": "local", "nixie_flake": "/nonexistent",
                    "nixie_interface": nixie_side.lab.ctl_if, "nixie_ssh_private_key": str(deployer_key)}
            inventory.write_text(json.dumps({"all": {"hosts": {"m0": host}}}))
            for run in range(profile.orchestration_runs):
                # A fresh server each run: the last one remembers the phone-home, and wait_for_agent would not wait.
                with NixieServer(nixie_side, directory / ("server-%d" % run), [client.mac], served_files) as nixie:
                    marker, times = directory / ("started-%d" % run), directory / ("times-%d.jsonl" % run)
                    standin_log = directory / ("standin-%d.jsonl" % run)
                    for path in (marker, times, standin_log):
                        path.unlink(missing_ok=True)
                    agent = threading.Thread(target=_late_agent, args=(client, marker, [host_key_line]))
                    agent.start()
                    # The install role fails on purpose (the stand-in exits 1 after logging): the run is checked below.
                    result = run_playbook(nixie_side.lab, BENCH_DIR / "orchestration.yml", inventory, timeout=120, check=False,
                                          extra_vars={"nixie_run_dir": str(nixie.run_dir), "marker": str(marker)},
                                          environment={"ANSIBLE_CALLBACK_PLUGINS": str(BENCH_DIR / "callback_plugins"),
                                                       "ANSIBLE_CALLBACKS_ENABLED": "bench_task_times", "BENCH_TASK_TIMES": str(times),
                                                       "NIXIE_STANDIN_LOG": str(standin_log),
                                                       "PATH": "%s:%s" % (STANDIN_DIR, os.environ.get("PATH", ""))})
                    agent.join()
                    if not standin_log.exists():
                        raise RuntimeError("P6: the install role did not exec nixos-anywhere (exit %d):\n%s%s"
                                           % (result.returncode, result.stdout[-4000:], result.stderr[-2000:]))
                    home = nixie.events(contract.STEP_PHONE_HOME)[0]["ts"]
                    exec_time = json.loads(standin_log.read_text().splitlines()[0])["start"]
                    delays.append(exec_time - home)
                    breakdowns.append(_task_breakdown(times, home, exec_time))
                    log("P6 run %d: %.3f s (%s)" % (run + 1, delays[-1], ", ".join(
                        "%s %.3f" % (_short(task), seconds) for task, seconds in breakdowns[-1].items())))
        finally:
            client.tracker.stop(dropbear)
    median = statistics.median(delays)
    # Where the time goes: each task's median share of phone-home -> exec, in playbook order.
    tasks = list(dict.fromkeys(task for breakdown in breakdowns for task in breakdown))
    for task in tasks:
        log("P6   %-62s median %.3f s" % (_short(task), statistics.median(breakdown.get(task, 0.0) for breakdown in breakdowns)))
    log("P6: %s s; load %s" % (_spread(delays), _load()))
    return [Row("P6", "phone-home -> nixos-anywhere exec", median, None, "s", "lower", "<= 0.6 s", median <= 0.6, spread=(delays, []))]


def _late_agent(client, marker, ssh_host_keys):
    """Phone home as the agent does, once the playbook is waiting (its first task made ``marker``)."""
    dummy_kernel, dummy_initrd, api, token = _booted_script(client)
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # wait_for_agent is then waiting on the server for the next event
    done = threading.Thread(target=lambda: (netns.enter(client.netns),
                                            sim.phone_home(api, token, client.mac, client.address, ssh_host_keys, [sim.BLANK_DISK])))
    done.start()
    done.join()


def p7_nix_cost(profile, workdir, log):
    return nixcost.measure(profile.nix_fleet_sizes, profile.repetitions, workdir, log, Row, alternate)


PARTS = {"P1": p1_boot, "P2": p2_http, "P3": p3_tftp, "P4": p4_proxydhcp, "P5": p5_fleet, "P6": p6_orchestration, "P7": p7_nix_cost,
         "P8": p8_lossy_boot}
