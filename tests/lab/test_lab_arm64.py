"""arm64 machines, end to end: QEMU's `virt` under TCG with AAVMF and virtio-net (no option ROM), powered off, go to
`installed` through the collection's provision playbook and the recording stand-in nixos-anywhere, in one run.

nixie-arm64's own EDK2 PXE client asks with architecture 11; Nixie answers it with ipxe-arm64.efi over TFTP (trixie's
iPXE, as bootstrap.sh fetches it). nixie-http-arm64 has PXE switched off (fw_cfg), so EDK2's HTTP boot asks with
architecture 19 and gets the URL of ipxe-arm64.efi. Either iPXE's script boots the arm64 test installer (Debian's arm64
kernel, an arm64 busybox and dropbear) with the real agent inside. After the install, each machine boots its disk:
AAVMF runs the image's arm64 systemd-boot, and the installed host comes up.
"""

from __future__ import annotations

import time

import pytest
from nixielab import build_installer, netboot

pytestmark = pytest.mark.lab

EDK2_HTTP_BOOT_ONLY = {"opt/org.tianocore/IPv4PXESupport": "no", "opt/org.tianocore/IPv6PXESupport": "no"}


@pytest.fixture(scope="module")
def arm64_installer(installer):  # installer: the x86 one, which also skips this test without root
    return build_installer(arch="arm64")


def test_arm64_machines_go_from_off_to_installed_through_edk2_pxe_and_http_boot(lab, arm64_installer, tmp_path):
    pxe = lab.add_machine("nixie-arm64", "52:54:00:5e:0a:01", firmware="uefi-arm64", nic="virtio-native", memory_mib=768)
    http = lab.add_machine("nixie-http-arm64", "52:54:00:5e:0a:02", firmware="uefi-arm64", nic="virtio-native", memory_mib=768,
                           fw_cfg=EDK2_HTTP_BOOT_ONLY)
    lab.start_power_daemon()
    run = netboot.with_stand_in(netboot.prepare(lab, arm64_installer, [pxe, http], tmp_path), arm64_installer)
    started = time.monotonic()
    # The fixture flake's installer is the arm64 test installer here: the run's own installer is an aarch64-linux one.
    result = netboot.provision(lab, run, extra_vars={"nixie_ipxe_dir": str(netboot.CURRENT_IPXE), "nixie_installer_system": "aarch64-linux"})
    print(result.stdout[-6000:])
    print("arm64 provision of both took %.0f s" % (time.monotonic() - started))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    recap = netboot.recap(result.stdout)
    assert "failed=0" in recap["nixie-arm64"] and "failed=0" in recap["nixie-http-arm64"], recap

    events = run.events()
    pxe_offer = next(event for event in events if event["step"] == "dhcp_offer" and event["mac"] == pxe.mac)
    assert (pxe_offer["arch"], pxe_offer["client"]) == (11, "PXEClient"), pxe_offer
    assert any(event["step"] == "tftp_done" and event["mac"] == pxe.mac and event["file"] == "ipxe-arm64.efi" and event["ok"]
               for event in events)
    http_offer = next(event for event in events if event["step"] == "dhcp_offer" and event["mac"] == http.mac)
    assert (http_offer["arch"], http_offer["client"]) == (19, "HTTPClient"), http_offer
    assert http_offer["boot_file"].endswith("/ipxe/ipxe-arm64.efi"), http_offer
    assert not any(event["step"] == "tftp_start" and event.get("mac") == http.mac for event in events)

    leases = lab.site_dhcp.leases()
    records = dict(zip(run.stand_in_hosts(), run.stand_in_records()))
    for machine in (pxe, http):
        assert records[machine.name]["argv"][1:] == run.stand_in_command(machine.name, leases[machine.mac])
        hardware = run.facts(machine.name)["nixie_hardware"]
        assert [nic["driver"] for nic in hardware["nics"]] == ["virtio_net"], hardware
        machine.wait_for_serial(r"NIXIELAB: installed " + run.toplevel(machine.name), timeout=5)
        assert "Linux version %s" % arm64_installer.kernel_version.split("-arm64")[0] in machine.serial_text()
