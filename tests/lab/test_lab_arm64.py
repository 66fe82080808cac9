"""An arm64 machine, end to end: QEMU's `virt` under TCG with AAVMF and virtio-net (no option ROM), powered off,
goes to `installed` through the collection's provision playbook and the recording stand-in nixos-anywhere.

AAVMF's own EDK2 PXE client asks with architecture 11; Nixie answers it with ipxe-arm64.efi over TFTP (trixie's iPXE,
as bootstrap.sh fetches it), whose script boots the arm64 test installer (Debian's arm64 kernel, an arm64 busybox and
dropbear) with the real agent inside. After the install, the machine boots its disk: AAVMF runs the image's arm64
systemd-boot, and the installed host answers SSH. One machine only: an arm64 boot under TCG is slow.
"""

from __future__ import annotations

import time

import pytest
from nixielab import build_installer, netboot

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def arm64_installer(installer):  # installer: the x86 one, which also skips this test without root
    return build_installer(arch="arm64")


def test_an_arm64_machine_goes_from_off_to_installed_through_edk2_pxe(lab, arm64_installer, tmp_path):
    machine = lab.add_machine("nixie-arm64", "52:54:00:5e:0a:01", firmware="uefi-arm64", nic="virtio-native", memory_mib=768)
    lab.start_power_daemon()
    run = netboot.with_stand_in(netboot.prepare(lab, arm64_installer, [machine], tmp_path), arm64_installer)
    started = time.monotonic()
    # The fixture flake's installer is the arm64 test installer here: the run's own installer is an aarch64-linux one.
    result = netboot.provision(lab, run, extra_vars={"nixie_ipxe_dir": str(netboot.CURRENT_IPXE), "nixie_installer_system": "aarch64-linux"})
    elapsed = time.monotonic() - started
    print(result.stdout[-6000:])
    print("arm64 provision took %.0f s" % elapsed)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "failed=0" in netboot.recap(result.stdout)["nixie-arm64"]

    steps = [(event["step"], event.get("file")) for event in run.events() if event.get("mac") == machine.mac]
    assert ("tftp_done", "ipxe-arm64.efi") in steps, steps
    offers = [event for event in run.events() if event["step"] == "dhcp_offer" and event.get("mac") == machine.mac]
    assert offers and offers[0].get("arch") == 11, offers[:1]
    leases = lab.site_dhcp.leases()
    (record,) = run.stand_in_records()
    assert record["argv"][1:] == run.stand_in_command("nixie-arm64", leases[machine.mac])
    agent = run.facts("nixie-arm64")["nixie_agent"]
    assert agent["os_release"]["ID"] == "nixos" and agent["disks"][0]["name"] == "vda", agent
    hardware = run.facts("nixie-arm64")["nixie_hardware"]
    assert hardware["cpu"]["cores"] == 1 and [nic["driver"] for nic in hardware["nics"]] == ["virtio_net"], hardware
    machine.wait_for_serial(r"NIXIELAB: installed " + run.toplevel("nixie-arm64"), timeout=5)
    assert "Linux version %s" % arm64_installer.kernel_version.split("-arm64")[0] in machine.serial_text()
