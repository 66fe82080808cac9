"""Machines powered through their BMCs by the provision playbook, end to end: the lab's Redfish emulator and IPMI
servers, the glue that runs each machine's QEMU as its BMC says, real firmware, the real agent, the recording stand-in
for nixos-anywhere, and real disk boots afterwards.

- A UEFI machine (OVMF with EDK2's own PXE client) that keeps the network first in its boot order, with a Redfish BMC,
  goes from off to installed through a one-time network boot; the power daemon sees no magic packet at all. The install's
  reboot goes straight to the disk through the BMC's one-time disk boot. Given another configuration and
  nixie_reinstall=true, the same machine, now installed, is power-cycled into a one-time network boot, reinstalled, and
  boots the new toplevel from its disk the same way.
- A SeaBIOS machine with an IPMI BMC and one woken by Wake-on-LAN install side by side, while a host whose BMC refuses
  the password fails alone; neither that password nor the right one appears in the output or under the run directory.

Each test prints power-on to installed per host (from the power request to the boot server's marked_installed).
"""

from __future__ import annotations

import json
import secrets

import pytest
from nixielab import netboot

pytestmark = pytest.mark.lab

WRONG_PASSWORD_ENV = "NIXIELAB_WRONG_BMC_PASSWORD"


def _power_to_installed(run: netboot.NetbootRun, machine, requested: float) -> float:
    """Seconds from the power request at `requested` to the boot server marking `machine` installed afterwards."""
    marked = [event["ts"] for event in run.events() if event["mac"] == machine.mac and event["step"] == "marked_installed" and event["ts"] > requested]
    assert marked, "%s was never marked installed after %.0f" % (machine.name, requested)
    return marked[0] - requested


def _starts(bmcs, machine, after: int = 0) -> list[tuple[str, str]]:
    """(cause, boot order) of each QEMU start the BMC glue made for `machine`, past its first `after` log entries."""
    return [(entry["cause"], entry["boot_order"]) for entry in bmcs.events(machine)[after:] if entry["event"] == "start"]


def _redfish_system(lab, machine) -> dict:
    bmcs = lab.bmcs
    status, body = lab.curl_ctl("--cacert", str(bmcs.redfish.ca_path), "-u", "admin:%s" % bmcs.password,
                                bmcs.redfish.url + bmcs.redfish.path(machine.name))
    assert status == 200, body
    return json.loads(body)


def test_redfish_uefi_network_first_installs_then_reinstalls(lab, installer, tmp_path):
    machine = lab.add_machine("nixie-02", "52:54:00:5e:02:02", firmware="uefi", nic="virtio-native", boot_order="network-first", bmc="redfish")
    wol = lab.start_power_daemon()  # for no machine: it logs every magic packet that arrives
    bmcs = lab.start_bmcs()
    run = netboot.with_stand_in(netboot.prepare(lab, installer, [machine], tmp_path), installer)

    # (a) From off to installed, with no magic packet.
    first = netboot.provision(lab, run)
    print(first.stdout[-6000:])
    assert first.returncode == 0 and "failed=0" in netboot.recap(first.stdout)["nixie-02"], first.stdout[-6000:] + first.stderr[-3000:]
    installed = run.toplevel("nixie-02")
    machine.wait_for_serial(r"NIXIELAB: installed " + installed, timeout=5)
    # The network boot the override asked for, then the install's reboot, which the one-time disk boot sends to the disk
    # although the machine's own order has the network first.
    assert _starts(bmcs, machine) == [("power-on", "network-first"), ("guest-reboot", "disk-first")], bmcs.events(machine)
    assert wol.packets() == []
    assert _redfish_system(lab, machine)["Boot"]["BootSourceOverrideTarget"] != "Pxe", "the override is still pending"
    requested = next(entry["time"] for entry in bmcs.events(machine) if entry["event"] == "request")
    print("Redfish (OVMF, network first): power-on to installed %.1f s, reboot to SSH %s s"
          % (_power_to_installed(run, machine, requested), netboot.host_recap(first.stdout, "nixie-02")["seconds"]["reboot"]))

    # (b) Another configuration for the same host: reinstalled through a one-time network boot and a power cycle. Its
    # disk holds the installed system, so the user lets Nixie wipe it.
    run.update_host("nixie-02", flake_attr="nixie-03", disks_may_be_wiped=True)
    reinstalled = run.toplevel("nixie-03")
    assert reinstalled != installed
    seen = len(bmcs.events(machine))
    second = netboot.provision(lab, run, extra_vars={"nixie_reinstall": True})
    print(second.stdout[-6000:])
    assert second.returncode == 0 and "failed=0" in netboot.recap(second.stdout)["nixie-02"], second.stdout[-6000:] + second.stderr[-3000:]
    assert [record["argv"][2] for record in run.stand_in_records()] == ["%s#nixie-02" % run.flake, "%s#nixie-03" % run.flake]
    # The fake driver's ForceRestart reads Off at once and On again 1-11 s later: on a loaded host the glue may see that Off
    # and start the machine once more, still with the override's order. Every start before the install's reboot boots the
    # network, and that reboot boots the disk.
    starts = _starts(bmcs, machine, seen)
    assert starts[0] == ("reset", "network-first") and starts[-1] == ("guest-reboot", "disk-first"), bmcs.events(machine)[seen:]
    assert all(order == "network-first" for dummy, order in starts[:-1]), bmcs.events(machine)[seen:]
    # Its disk boots the new toplevel.
    machine.wait_for_serial(r"NIXIELAB: installed " + reinstalled, timeout=5)
    assert wol.packets() == []
    assert _redfish_system(lab, machine)["Boot"]["BootSourceOverrideTarget"] != "Pxe", "the override is still pending"
    requested = next(entry["time"] for entry in bmcs.events(machine)[seen:] if entry["event"] == "request")
    print("Redfish (OVMF, network first): power cycle to reinstalled %.1f s" % _power_to_installed(run, machine, requested))


def test_ipmi_and_wol_install_while_a_refused_bmc_fails_alone(lab, installer, tmp_path):
    ipmi = lab.add_machine("nixie-01", "52:54:00:5e:02:11", firmware="bios", nic="e1000", bmc="ipmi")
    refused = lab.add_machine("nixie-02", "52:54:00:5e:02:12", firmware="uefi", nic="virtio-native", boot_order="disk-first", bmc="redfish")
    woken = lab.add_machine("nixie-03", "52:54:00:5e:02:13", firmware="bios", nic="e1000")
    wol = lab.start_power_daemon()
    bmcs = lab.start_bmcs()
    run = netboot.with_stand_in(netboot.prepare(lab, installer, [ipmi, refused, woken], tmp_path), installer)
    wrong = secrets.token_urlsafe(12)
    run.update_host("nixie-02", power=bmcs.power(refused, password_env=WRONG_PASSWORD_ENV))
    run.environment[WRONG_PASSWORD_ENV] = wrong
    # At -vvv Ansible prints every task's module arguments: the password must be masked there too.
    run.environment.update(ANSIBLE_STRATEGY="free", ANSIBLE_VERBOSITY="3")

    result = netboot.provision(lab, run, extra_vars={"nixie_batch_size": 2})
    output = result.stdout + result.stderr
    print(result.stdout[-6000:])
    recap = netboot.recap(result.stdout)
    assert result.returncode != 0, "nixie-02's BMC refuses the password"
    assert "failed=0" in recap["nixie-01"] and "failed=0" in recap["nixie-03"] and "failed=1" in recap["nixie-02"], recap
    # At -vvv the failed result is a JSON object over many lines.
    start = output.index("fatal: [nixie-02")
    refusal = output[start:output.index("\n}\n", start)]
    print(refusal[-3000:])
    assert bmcs.redfish.url in refusal and "401" in refusal, refusal
    for secret in (bmcs.password, wrong):
        assert secret not in output
        for path in tmp_path.rglob("*"):
            assert not path.is_file() or secret.encode() not in path.read_bytes(), path

    for machine in (ipmi, woken):
        machine.wait_for_serial(r"NIXIELAB: installed " + run.toplevel(machine.name), timeout=5)
    assert _starts(bmcs, refused) == [] and _redfish_system(lab, refused)["PowerState"] == "Off"
    assert _starts(bmcs, ipmi)[0] == ("power-on", "network-first"), bmcs.events(ipmi)
    # Magic packets for the woken machine only (Nixie sends more than one, as packets get lost); the first powered it on.
    assert {packet["mac"] for packet in wol.packets()} == {woken.mac} and wol.packets()[0]["action"] == "started", wol.packets()

    ipmi_requested = next(entry["time"] for entry in bmcs.events(ipmi) if entry["event"] == "request")
    print("IPMI (SeaBIOS): power-on to installed %.1f s" % _power_to_installed(run, ipmi, ipmi_requested))
    print("Wake-on-LAN (SeaBIOS): power-on to installed %.1f s" % _power_to_installed(run, woken, wol.packets()[0]["time"]))
