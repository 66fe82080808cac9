"""The BMC glue: the lab's wiring between each machine's BMC and its QEMU, as the power daemon is for Wake-on-LAN.

It runs in the controller namespace (`python -m nixielab.bmcd --config FILE`), where the lab's BMCs listen on
loopback (nixielab.bmc), and follows what each BMC says about its machine:

- Redfish (sushy-emulator --fake): it GETs the machine's System every POLL seconds, through the emulator's own API,
  for `PowerState` and `Boot.BootSourceOverrideTarget`. Its reads are also what make the fake driver carry out a
  pending power change: the driver applies one only when somebody reads the system after its random 1-11 s delay.
  A reset cannot be seen in those reads: ForceRestart and GracefulRestart set the power Off at once and back On
  after the delay, so a read after the delay finds it On as before (and the driver refuses PowerCycle, which it
  does not offer). The fake driver's external notifier, though, PUTs the system's whole record to this daemon on
  every change, and a reset's record carries `pending_power` with the reset type: that is what counts resets here.
- IPMI (tests/support/ipmi_bmc.py): it reads the BMC's state file, which counts cycles and hard resets.

When a BMC says On, the machine's QEMU starts with the boot order its boot override asks for (network first for a
network boot, disk first for a disk boot), otherwise with the machine's own. When it says Off, QEMU stops; after a
reset, QEMU starts afresh. QEMU runs with -no-reboot, so that a reboot from inside the machine ends it and the glue
starts it again: as an override set since the last start says (Nixie's one-time disk boot before nixos-anywhere
reboots the installer), else with the machine's own boot order. An override is for one boot (Nixie asks for Once),
and a real BMC clears it once it has served that boot. The emulator stores every override as Continuous and keeps
reporting it; Nixie's flow clears it after the install (on this emulator, which keeps an override enabled whatever
it is told, by setting the disk). A machine shutting itself down also ends QEMU and reads here as a reboot; nothing
in the lab does that.

Every action is logged as one JSON line: what the BMC was asked ("request"), "start" and "stop" with their cause
and boot order, QEMU ending by itself ("exited"), a BMC that cannot be read once it has answered ("bmc-error", once per
message), and "ready" once every BMC has answered.

`BmcGlue` is the lab-side handle: it starts the BMC servers and the daemon, and reads the daemon's log.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from .bmc import USER, FakeSystem, IpmiServer, RedfishEmulator
from .machine import Machine
from .processes import LabError, ProcessTracker, daemon_config, in_netns, json_lines, python_environment, wait_for_entry

DRIVERS = ("redfish", "ipmi")
POLL = 0.5
LOOPBACK = "127.0.0.1"
REDFISH_PORT = 8443
NOTIFY_PORT = 8623
IPMI_FIRST_PORT = 6230  # VirtualBMC's habit: one BMC per machine on 6230, 6231, ...
PASSWORD_ENV = "NIXIELAB_BMC_PASSWORD"
BOOT_ORDERS = {"network": "network-first", "disk": "disk-first"}
REDFISH_TARGETS = {"Pxe": "network", "Hdd": "disk"}
# IPMI boot flags (IPMI 2.0 table 28-14): data 1 bit 7 "valid", data 2 bits 5:2 the device (0001b PXE, 0010b disk).
IPMI_FLAGS_VALID = 0x80
IPMI_SELECTORS = {0x1: "network", 0x2: "disk"}


@dataclasses.dataclass
class Reading:
    """What a BMC says about its machine."""

    power_on: bool
    boot_override: str | None  # "network", "disk" or None
    resets: int
    requests: list[str]


class RedfishSystem:
    """One fake system of the emulator, read over HTTPS; resets and requests come from the emulator's notifications."""

    def __init__(self, url: str, path: str, ca_path: str, password: str):
        self.url = url + path
        self.ca_path = ca_path
        self._password = password
        self._lock = threading.Lock()
        self._pending = None
        self._resets = 0
        self._requests: list[str] = []

    def notified(self, record: dict) -> None:
        """Take one of the fake driver's notifications (the system's record, in the notifier's thread)."""
        pending = record.get("pending_power")
        with self._lock:
            if pending and pending != self._pending:
                self._requests.append(pending["power_state"])
                self._resets += "Restart" in pending["power_state"]
            self._pending = pending

    def read(self) -> Reading:
        response = requests.get(self.url, auth=(USER, self._password), verify=self.ca_path, timeout=5)
        response.raise_for_status()
        system = response.json()
        with self._lock:
            requested, self._requests = self._requests, []
            resets = self._resets
        target = system.get("Boot", {}).get("BootSourceOverrideTarget")
        return Reading(system.get("PowerState") == "On", REDFISH_TARGETS.get(target), resets, requested)


class IpmiState:
    """One IPMI BMC, read from its state file."""

    def __init__(self, state_path: str):
        self.state_path = Path(state_path)
        self._controls = 0

    def read(self) -> Reading:
        state = json.loads(self.state_path.read_text(encoding="utf-8"))
        flags = state["boot_flags"]
        requested, self._controls = state["controls"][self._controls:], len(state["controls"])
        device = IPMI_SELECTORS.get((flags[1] >> 2) & 0xF) if flags[0] & IPMI_FLAGS_VALID else None
        return Reading(state["power"] == "on", device, state["resets"], requested)


class Link:
    """One machine and its BMC: turns what the BMC says into QEMU starting and stopping."""

    def __init__(self, machine: Machine, driver: str, bmc, log):
        self.machine, self.driver, self.bmc, self._log = machine, driver, bmc, log
        self._was_on = False
        self._resets: int | None = None
        self._reset_pending = False
        self._error: str | None = None
        # The override the last start used: a one-time override is spent by the boot it sends, and sushy-tools reads
        # every override as Continuous, so only an override that changed since counts for a warm reboot.
        self._override_used: str | None = None

    def step(self) -> bool:
        """Read the BMC once and act on it; False when it could not be read."""
        exited = self.machine.reap()
        if exited is not None:
            self._write("exited", status=exited)
        try:
            reading = self.bmc.read()
        except (OSError, ValueError, KeyError, requests.RequestException) as error:
            # Before its first answer a BMC is still starting (BmcGlue waits for "ready"); later, an error is news.
            if self._resets is not None and str(error) != self._error:
                self._error = str(error)
                self._write("bmc-error", error=self._error)
            return False
        self._error = None
        for request in reading.requests:
            self._write("request", request=request)
        if self._resets is not None and reading.resets > self._resets:
            self._reset_pending = True
            if self.machine.running:
                self._stop("reset")
        self._resets = reading.resets
        if reading.boot_override is None:
            self._override_used = None
        if not reading.power_on:
            if self.machine.running:
                self._stop("power-off")
        elif not self.machine.running:
            if self._reset_pending:
                self._start("reset", reading.boot_override)
            elif not self._was_on:
                self._start("power-on", reading.boot_override)
            elif exited is not None:
                # A real BMC's one-time boot also decides a reboot from the running system, like nixos-anywhere's.
                fresh = reading.boot_override if reading.boot_override != self._override_used else None
                self._start("guest-reboot", fresh)
        self._reset_pending = self._reset_pending and not reading.power_on
        self._was_on = reading.power_on
        return True

    def _start(self, cause: str, boot_override: str | None) -> None:
        boot_order = BOOT_ORDERS.get(boot_override, self.machine.boot_order)
        if boot_override is not None:
            self._override_used = boot_override
        try:
            self.machine.start(boot_order)
        except (LabError, OSError) as error:
            self._write("start-failed", cause=cause, error=str(error))
        else:
            self._write("start", cause=cause, boot_order=boot_order, pid=self.machine.pid)

    def _stop(self, cause: str) -> None:
        self.machine.stop()
        self._write("stop", cause=cause)

    def _write(self, event: str, **fields) -> None:
        self._log({"event": event, "machine": self.machine.name, "mac": self.machine.mac, "bmc": self.driver, **fields})


class Glue:
    """The daemon's inside: every link, polled in turn, and the receiver of the Redfish emulator's notifications."""

    def __init__(self, config: dict):
        self._log_file = open(config["log"], "a", buffering=1, encoding="utf-8")  # pylint: disable=consider-using-with  # open for the daemon's life
        self._lock = threading.Lock()
        self.links: list[Link] = []
        self.systems: dict[str, RedfishSystem] = {}
        for entry in config["links"]:
            # -no-reboot: a reboot from inside ends QEMU, so the next boot follows the machine's own boot order.
            machine = Machine.from_config(dict(entry["machine"], no_reboot=True))
            password = Path(entry["password_file"]).read_text(encoding="utf-8")
            if entry["driver"] == "redfish":
                bmc = self.systems[entry["uuid"]] = RedfishSystem(entry["url"], entry["path"], entry["ca_path"], password)
            else:
                bmc = IpmiState(entry["state"])
            self.links.append(Link(machine, entry["driver"], bmc, self.write))
        self._notifications = _notification_server(config["notify_port"], self)

    def serve(self) -> None:
        """Follow the BMCs until SIGTERM/SIGINT, then power off every machine."""
        threading.Thread(target=self._notifications.serve_forever, daemon=True).start()
        ready = False
        try:
            while True:
                read = [link.step() for link in self.links]
                if not ready and all(read):
                    ready = True
                    self.write({"event": "ready", "machines": [link.machine.name for link in self.links]})
                time.sleep(POLL)
        finally:
            self._notifications.shutdown()
            for link in self.links:
                link.machine.stop()
            self.write({"event": "stopped"})
            self._log_file.close()

    def notified(self, record: dict) -> None:
        system = self.systems.get(record.get("uuid"))
        if system is not None:
            system.notified(record)

    def write(self, entry: dict) -> None:
        with self._lock:
            self._log_file.write(json.dumps({"time": time.time(), **entry}) + "\n")


def _notification_server(port: int, glue: Glue) -> http.server.ThreadingHTTPServer:
    class Notification(http.server.BaseHTTPRequestHandler):
        """The fake driver's external notifier: PUT / with the system's record, for every change."""

        def do_PUT(self):  # pylint: disable=invalid-name  # the name http.server calls
            record = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            glue.notified(record)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args):
            pass  # the glue logs what it does with a notification, not the request

    # Its own threads: the emulator sends a notification while it answers the glue's read, and waits for the answer.
    return http.server.ThreadingHTTPServer((LOOPBACK, port), Notification)


class BmcGlue:  # pylint: disable=too-many-instance-attributes  # the BMCs' addresses are its interface
    """Lab-side handle: the lab's BMC servers and the glue, all in namespace `netns`, for `machines` ((machine, driver) pairs)."""

    def __init__(self, netns: str, run_dir: Path, tracker: ProcessTracker, machines: list[tuple[Machine, str]]):
        self.netns = netns
        self.directory = Path(run_dir) / "bmc"
        self.machines = machines
        self.drivers = {machine.name: driver for machine, driver in machines}
        self.password = secrets.token_urlsafe(12)
        self.password_path = self.directory / "password"
        self.config_path = self.directory / "bmcd.json"
        self.log_path = self.directory / "bmcd.jsonl"
        self.stderr_path = self.directory / "bmcd.stderr"
        self._tracker = tracker
        self._processes: list[tuple[str, subprocess.Popen]] = []
        redfish = [machine for machine, driver in machines if driver == "redfish"]
        self.redfish = RedfishEmulator(self.directory / "redfish", [FakeSystem(machine.name, machine.mac) for machine in redfish], self.password,
                                       port=REDFISH_PORT, address=LOOPBACK, notify_url="http://%s:%d/" % (LOOPBACK, NOTIFY_PORT)) if redfish else None
        self.ipmi = {machine.name: IpmiServer(self.directory / "ipmi" / machine.name, self.password_path, port=IPMI_FIRST_PORT + index)
                     for index, machine in enumerate(machine for machine, driver in machines if driver == "ipmi")}

    def power(self, machine: Machine, *, password_env: str = PASSWORD_ENV) -> dict:
        """The hosts.json `power` object for `machine`: its BMC, and where Nixie finds the password."""
        if self.drivers[machine.name] == "redfish":
            return {"driver": "redfish", "address": self.redfish.url, "system": self.redfish.path(machine.name), "username": USER,
                    "password_env": password_env, "ca_path": str(self.redfish.ca_path), "boot_mode": machine.firmware}
        return {"driver": "ipmi", "address": LOOPBACK, "port": self.ipmi[machine.name].port, "username": USER,
                "password_env": password_env, "boot_mode": machine.firmware}

    def start(self, timeout: float = 30.0) -> None:
        """Start the BMC servers and the glue, and wait until the glue has read every BMC."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.password_path.write_text(self.password, encoding="utf-8")
        self.password_path.chmod(0o600)
        links = []
        for machine, driver in self.machines:
            machine.prepare()  # disks exist before the first power-on, so tests can inspect them
            link = {"machine": machine.to_config(), "driver": driver, "password_file": str(self.password_path)}
            if driver == "redfish":
                link.update(url=self.redfish.url, path=self.redfish.path(machine.name), uuid=self.redfish.systems[machine.name].uuid,
                            ca_path=str(self.redfish.ca_path))
            else:
                link.update(state=str(self.ipmi[machine.name].state_path))
            links.append(link)
        self.config_path.write_text(json.dumps({"log": str(self.log_path), "notify_port": NOTIFY_PORT, "links": links}, indent=2), encoding="utf-8")
        try:
            if self.redfish is not None:
                self._spawn("sushy-emulator", self.redfish.argv(), self.redfish.log_path)
            for name, server in self.ipmi.items():
                self._spawn("ipmi-bmc-%s" % name, server.argv(), server.directory / "server.log")
            self._spawn("bmcd", [sys.executable, "-m", "nixielab.bmcd", "--config", str(self.config_path)], self.stderr_path,
                        env=python_environment())
            self.wait_for(lambda entry: entry["event"] == "ready", timeout)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, label: str, argv: list[str], output: Path, **kwargs) -> None:
        with open(output, "wb") as stream:
            self._processes.append((label, self._tracker.spawn(label, in_netns(self.netns, argv), stdin=subprocess.DEVNULL, stdout=stream,
                                                               stderr=subprocess.STDOUT, **kwargs)))

    def stop(self) -> None:
        """Stop the glue (it powers off its machines), then the BMC servers."""
        for _label, process in reversed(self._processes):
            self._tracker.stop(process, timeout=15.0)
        self._processes.clear()

    def events(self, machine: Machine | None = None) -> list[dict]:
        """Everything the glue logged so far (about `machine` only, when given), oldest first."""
        return [entry for entry in json_lines(self.log_path) if machine is None or entry.get("machine") == machine.name]

    def wait_for(self, predicate, timeout: float) -> dict:
        """Wait for the first logged entry for which `predicate(entry)` is true."""
        return wait_for_entry(self.events, predicate, timeout, self._alive, "BMC glue (logs under %s)" % self.directory)

    def _alive(self) -> None:
        for label, process in self._processes:
            if process.poll() is not None:
                raise LabError("%s exited with %s; see its log under %s" % (label, process.returncode, self.directory))


def main(argv: list[str] | None = None) -> None:
    glue = Glue(daemon_config(argv, "bmcd", __doc__))
    try:
        glue.serve()
    except (KeyboardInterrupt, SystemExit):
        pass  # the way the lab stops the glue; serve() has cleaned up


if __name__ == "__main__":
    main()
