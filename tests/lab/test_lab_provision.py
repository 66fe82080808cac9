"""The whole mission in the lab: three powered-off machines, the collection's provision playbook, Nixie's boot server,
the real agent, a recording stand-in for nixos-anywhere first on PATH, and real disk boots afterwards.

nixie-01 (SeaBIOS) and nixie-02 (OVMF with EDK2's own PXE client) both keep the network first in their boot order, as
machines racked for network provisioning do, and end `installed` with their new, pinned host keys, from the store
paths the run built once for both (nixos-anywhere gets --store-paths and the host's name with HostName=<address>).
After the install, nixie-01's iPXE is told to leave for the disk, and nixie-02's iPXE (2024-03 or later, as nixpkgs
has) boots its disk itself (test_lab_netboot shows the other way, with an older iPXE). nixie-01 also has a filled data
disk its layout does not name: it installs, and that disk stays byte-identical. nixie-03's disk holds data: it is
refused and its disk stays byte-identical. The first run uses the free strategy (the playbook pins linear where hosts
share the server); a rerun, with the default linear strategy, changes nothing. A last run gives nixie-03 a layout
naming /dev/nvme0n1, which it lacks: it is refused before anything is written, though wiping it is allowed.
"""

from __future__ import annotations

import json

import pytest
from nixielab import netboot
from nixielab.machine import DATA_DISK_SERIAL

pytestmark = pytest.mark.lab

# From nixos-anywhere's reboot to the installed system's SSH (README, "Installed machines that keep the network first"),
# with two VMs at a time: SeaBIOS and OVMF both 40-80 s.
REBOOT_BOUND = {"nixie-01": 180, "nixie-02": 180}
MIB, GIB = 2 ** 20, 2 ** 30
ROTATIONAL = {True: " (hdd)", False: " (ssd)", None: ""}


def test_provision_three_machines_end_to_end(lab, installer, tmp_path):
    bios = lab.add_machine("nixie-01", "52:54:00:5e:00:01", firmware="bios", nic="e1000", data_disk=True)
    uefi = lab.add_machine("nixie-02", "52:54:00:5e:00:02", firmware="uefi", nic="virtio-native", boot_order="network-first")
    full = lab.add_machine("nixie-03", "52:54:00:5e:00:03", firmware="bios", nic="e1000", prefill=True)
    lab.start_power_daemon()
    full.prepare()
    full_disk_before = full.disk_sha256()
    bios.prepare()
    data_disk_before = bios.disk_sha256(bios.data_disk_path)

    run = netboot.with_stand_in(netboot.prepare(lab, installer, [bios, uefi, full], tmp_path), installer)
    # Two machines at a time on this 2-core host; each host on its own (strategy free) once the boot server runs.
    run.environment["ANSIBLE_STRATEGY"] = "free"
    first = netboot.provision(lab, run, extra_vars={"nixie_batch_size": 2, "nixie_ipxe_dir": str(netboot.CURRENT_IPXE)})
    del run.environment["ANSIBLE_STRATEGY"]
    output = first.stdout
    print(output[-6000:])
    assert first.returncode != 0, "nixie-03 must fail: its disk holds data"
    assert "refusing to install nixie-03: vda (2.0 GiB" in output and "holds partitions" in output
    recap = netboot.recap(output)
    assert "failed=0" in recap["nixie-01"] and "failed=0" in recap["nixie-02"] and "failed=1" in recap["nixie-03"], recap

    leases = lab.site_dhcp.leases()
    records = run.stand_in_records()
    assert sorted(run.stand_in_hosts()) == ["nixie-01", "nixie-02"], records
    for record, host in zip(records, run.stand_in_hosts()):
        machine = {"nixie-01": bios, "nixie-02": uefi}[host]
        assert record["argv"][1:] == run.stand_in_command(host, leases[machine.mac])
        # Its connections went through the ssh that trusts only the keys the agent reported, under the host's name.
        assert record["ssh"] == run.pinning_ssh(host), record
        assert (run.run_dir / host / "installer_known_hosts").read_text().split("\n")[:-1] == [
            "%s %s" % (host, key) for key in run.facts(host)["nixie_agent"]["ssh_host_keys"]]
    # Every netbooted host's system came out of the one build, logged in the run directory.
    build_log = (run.run_dir / "systems-build.log").read_text()
    assert build_log.splitlines()[0].endswith("nix build of 6 derivations for nixie-01, nixie-02, nixie-03"), build_log[:500]
    # The agent named the data disk as udev would, from sysfs (the lab's busybox installer has no udev).
    data_disk = run.facts("nixie-01")["nixie_agent"]["disks"][1]
    assert data_disk["name"] == "vdb" and data_disk["by_id"] == ["virtio-nixie-data"] and data_disk["has_filesystem"], data_disk
    assert len(data_disk["by_path"]) == 1 and data_disk["by_path"][0].startswith("pci-0000:"), data_disk
    # Its hardware report is the machine QEMU was started as, and nothing it was not told.
    hardware = run.facts("nixie-01")["nixie_hardware"]
    assert hardware["dmi"]["vendor"] == "QEMU" and hardware["dmi"]["product"].startswith("Standard PC (Q35"), hardware
    assert hardware["dmi"]["serial"] is None and hardware["cpu"]["cores"] == hardware["cpu"]["threads"] == 1, hardware
    assert 0.8 * bios.memory_mib * MIB < hardware["memory_bytes"] <= bios.memory_mib * MIB, hardware
    assert [(nic["mac"], nic["link"], nic["driver"], nic["speed_mbps"]) for nic in hardware["nics"]] == [(bios.mac, True, "e1000", 1000)], hardware
    assert [(disk["name"], disk["size_bytes"], disk["serial"], disk["model"]) for disk in hardware["disks"]] == [
        ("vda", 2 * GIB, None, None), ("vdb", 128 * MIB, DATA_DISK_SERIAL, None)], hardware
    assert json.loads((run.run_dir / "nixie-01" / "hardware.json").read_text()) == hardware
    line = netboot.host_recap(output, "nixie-01")["hardware"]
    assert line.startswith("1 core ") and ", QEMU Standard PC (Q35" in line and line.endswith(", 1 NIC, disks vda 2.0 GiB%s, vdb 128 MiB%s" % (
        ROTATIONAL[hardware["disks"][0]["rotational"]], ROTATIONAL[hardware["disks"][1]["rotational"]])), line

    known_hosts = tmp_path / "known_hosts"
    for machine in (bios, uefi):
        expected = run.toplevel(machine.name)
        machine.wait_for_serial(r"NIXIELAB: installed " + expected, timeout=5)
        answer = lab.run_ctl(["ssh", "-i", str(run.key), "-o", "UserKnownHostsFile=%s" % known_hosts, "-o", "StrictHostKeyChecking=yes",
                              "-o", "HostKeyAlias=%s" % machine.name, "-o", "BatchMode=yes", "root@%s" % leases[machine.mac],
                              "cat /etc/os-release; readlink /run/current-system"], capture_output=True, text=True, timeout=60)
        assert answer.returncode == 0, answer.stderr
        assert "ID=nixos" in answer.stdout and "VARIANT_ID" not in answer.stdout
        assert answer.stdout.strip().splitlines()[-1] == expected
        injected = (run.run_dir / machine.name / "extra-files" / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[1]
        assert injected in known_hosts.read_text()

    steps = {}
    for event in run.events():
        steps.setdefault(event["host"], []).append(event["step"])
    # After their installs, Nixie's local-boot script sent both to their disks, within the bound.
    for host in ("nixie-01", "nixie-02"):
        after_install = steps[host][steps[host].index("marked_installed"):]
        assert "boot_local" in after_install and "local_boot_failed" not in after_install, steps[host]
        reboot = float(netboot.host_recap(output, host)["seconds"]["reboot"])
        print("%s: from the post-install reboot to the installed system's SSH %.1f s" % (host, reboot))
        assert reboot < REBOOT_BOUND[host], (host, reboot)

    full.stop()
    assert full.disk_sha256() == full_disk_before

    rerun = netboot.provision(lab, run, limit="nixie-01,nixie-02", timeout=600)
    for host, machine in (("nixie-01", bios), ("nixie-02", uefi)):
        line = netboot.recap(rerun.stdout)[host]
        assert "changed=0" in line and "failed=0" in line, line
        assert "%s is installed at %s: skipped, it is installed" % (host, leases[machine.mac]) in rerun.stdout
    assert len(run.stand_in_records()) == len(records), "the rerun must not install again"
    bios.stop()
    assert bios.disk_sha256(bios.data_disk_path) == data_disk_before, "the data disk the layout does not name was written"

    run.update_host("nixie-03", flake_attr="nixie-nvme", disks_may_be_wiped=True)
    missing = netboot.provision(lab, run, limit="nixie-03", timeout=600)
    assert missing.returncode != 0
    assert ("refusing to install nixie-03: its disk layout wants /dev/nvme0n1 (disko.devices.disk.main); this machine has vda (2.0 GiB"
            in missing.stdout), missing.stdout[-3000:]
    assert len(run.stand_in_records()) == len(records)
    full.stop()
    assert full.disk_sha256() == full_disk_before
