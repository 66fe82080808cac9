"""The lab's BMCs, with no Nixie: curl drives the Redfish emulator and Debian's ipmitool the IPMI server, only from the
controller namespace, and the glue starts, resets and stops each machine's QEMU as its BMC says, with the boot order
the BMC's override asks for on that boot only."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

REDFISH_MAC, IPMI_MAC = "52:54:00:b3:00:01", "52:54:00:b3:00:02"
# The fake driver applies a power change 1 to 11 s after the request; the glue reads every 0.5 s.
POWER_TIMEOUT = 20


def _nic_boot_index(pid: int) -> int:
    """The bootindex of the running QEMU's NIC, from its command line: 1 when it boots from the network first."""
    argv = Path("/proc/%d/cmdline" % pid).read_bytes().decode().split("\0")
    nic = next(arg for arg in argv if "netdev=net0" in arg and "bootindex=" in arg)
    return int(nic.rsplit("bootindex=", 1)[1])


class Redfish:
    """curl in the controller namespace against one fake system of the lab's emulator."""

    def __init__(self, lab, machine):
        self.lab, self.bmcs = lab, lab.bmcs
        self.url = lab.bmcs.redfish.url + lab.bmcs.redfish.path(machine.name)
        self.options = ["--cacert", str(lab.bmcs.redfish.ca_path), "-u", "admin:%s" % lab.bmcs.password]

    def get(self) -> dict:
        status, body = self.lab.curl_ctl(*self.options, self.url)
        assert status == 200, body
        return json.loads(body)

    def send(self, method: str, path: str, body: dict) -> None:
        status, answer = self.lab.curl_ctl(*self.options, "-X", method, "-H", "Content-Type: application/json", "-d", json.dumps(body),
                                           self.url + path)
        assert status == 204, (status, answer)


def _wait_event(bmcs, machine, after: int, event: str, timeout: float = POWER_TIMEOUT) -> dict:
    """The first `event` the glue logs about `machine` after its first `after` entries."""
    deadline = time.monotonic() + timeout
    while not (found := [entry for entry in bmcs.events(machine)[after:] if entry["event"] == event]):
        assert time.monotonic() < deadline, "no %s for %s within %.0f s: %s" % (event, machine.name, timeout, bmcs.events(machine)[after:])
        time.sleep(0.2)
    return found[0]


def test_redfish_and_ipmi_drive_their_machines(lab):
    uefi = lab.add_machine("rf1", REDFISH_MAC, firmware="uefi", nic="virtio-native", boot_order="disk-first", bmc="redfish")
    bios = lab.add_machine("ipmi1", IPMI_MAC, firmware="bios", nic="e1000", bmc="ipmi")
    bmcs = lab.start_bmcs()
    redfish = Redfish(lab, uefi)

    # Only the controller reaches the BMCs: not the machines' side of the bridge, at either address.
    for url in ("https://%s:8443/redfish/v1/" % lab.ctl_ip4, bmcs.redfish.url + "/redfish/v1/"):
        assert lab.run_lab(["curl", "-sk", "--max-time", "3", url], capture_output=True).returncode != 0, url
    status, body = lab.curl_ctl("--cacert", str(bmcs.redfish.ca_path), redfish.url)
    assert status == 401, body
    assert redfish.get()["PowerState"] == "Off" and not uefi.running

    # Redfish: a one-time network boot, then On. The emulator reports the override as Continuous whatever it is told.
    redfish.send("PATCH", "", {"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}})
    assert redfish.get()["Boot"]["BootSourceOverrideTarget"] == "Pxe"
    redfish.send("POST", "/Actions/ComputerSystem.Reset", {"ResetType": "On"})
    started = _wait_event(bmcs, uefi, 0, "start")
    assert started["cause"] == "power-on" and started["boot_order"] == "network-first", started
    assert uefi.running and _nic_boot_index(uefi.pid) == 1
    assert {"event": "request", "request": "On"}.items() <= bmcs.events(uefi)[0].items()

    # A reboot from inside the machine (here QEMU's reset) ends QEMU (-no-reboot); the override served one boot.
    seen = len(bmcs.events(uefi))
    uefi.monitor("system_reset")
    rebooted = _wait_event(bmcs, uefi, seen, "start")
    assert rebooted["cause"] == "guest-reboot" and rebooted["boot_order"] == "disk-first", bmcs.events(uefi)[seen:]
    assert _nic_boot_index(uefi.pid) == 2 and rebooted["pid"] != started["pid"]

    # ForceRestart: Off at once and On again later, which only the notification shows; the override serves again.
    seen = len(bmcs.events(uefi))
    redfish.send("POST", "/Actions/ComputerSystem.Reset", {"ResetType": "ForceRestart"})
    restarted = _wait_event(bmcs, uefi, seen, "start")
    assert restarted["cause"] == "reset" and restarted["boot_order"] == "network-first", bmcs.events(uefi)[seen:]
    assert [entry["event"] for entry in bmcs.events(uefi)[seen:]][:3] == ["request", "stop", "start"]

    seen = len(bmcs.events(uefi))
    redfish.send("POST", "/Actions/ComputerSystem.Reset", {"ResetType": "ForceOff"})
    stopped = _wait_event(bmcs, uefi, seen, "stop")
    assert stopped["cause"] == "power-off" and not uefi.running

    # IPMI, through Debian's ipmitool: the same, with the BMC's own chassis commands.
    def ipmitool(*argv):
        done = lab.run_ctl(["ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", str(bmcs.ipmi["ipmi1"].port), "-U", "admin",
                            "-P", bmcs.password, *argv], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert ipmitool("chassis", "power", "status").strip() == "Chassis Power is off"
    ipmitool("chassis", "bootdev", "pxe")
    ipmitool("chassis", "power", "on")
    on = _wait_event(bmcs, bios, 0, "start")
    assert on["cause"] == "power-on" and on["boot_order"] == "network-first" and _nic_boot_index(bios.pid) == 1
    assert ipmitool("chassis", "power", "status").strip() == "Chassis Power is on"

    # A disk override turns the network-first machine's order round for the boot after the hard reset.
    seen = len(bmcs.events(bios))
    ipmitool("chassis", "bootdev", "disk")
    ipmitool("chassis", "power", "reset")
    reset = _wait_event(bmcs, bios, seen, "start")
    assert reset["cause"] == "reset" and reset["boot_order"] == "disk-first" and reset["pid"] != on["pid"]
    assert _nic_boot_index(bios.pid) == 2

    seen = len(bmcs.events(bios))
    ipmitool("chassis", "power", "off")
    off = _wait_event(bmcs, bios, seen, "stop")
    assert off["cause"] == "power-off" and not bios.running
    assert bmcs.ipmi["ipmi1"].state()["controls"] == ["on", "reset", "off"]
    assert not any(entry["event"] == "bmc-error" for entry in bmcs.events())
