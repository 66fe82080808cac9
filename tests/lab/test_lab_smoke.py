"""Smoke test of the whole lab: ansible-playbook, through Nixie's inventory plugin and wake module, powers a
machine on; its real firmware then asks for a network boot, which the site DHCP server does not offer."""

from __future__ import annotations

import pytest

from nixielab.capture import DHCP_OFFER, Capture, boot_file, client_arch, dhcp_options
from nixielab.playbook import WAKE_PLAYBOOK, run_playbook, write_inventory

pytestmark = pytest.mark.lab

# From power-on to the first DHCPDISCOVER under TCG: SeaBIOS ~3 s, OVMF ~7 s (measured); generous for a busy host.
DISCOVER_TIMEOUT = 60
PXE_OPTIONS = {43, 60, 66, 67}  # vendor-specific (PXE menu), vendor class, TFTP server, boot file


@pytest.mark.parametrize(("firmware", "nic", "arch"), [
    ("bios", "e1000", 0),          # SeaBIOS + QEMU's iPXE ROM
    ("uefi", "e1000", 7),          # OVMF + iPXE's EFI driver from the same ROM
    ("uefi", "virtio-native", 7),  # OVMF's own EDK2 PXE client, no iPXE anywhere
])
def test_wake_playbook_powers_on_a_machine_that_asks_for_a_network_boot(lab, firmware, nic, arch):
    machine = lab.add_machine("smoke-%s" % firmware, "52:54:00:41:00:%02x" % (arch + 1), firmware=firmware, nic=nic)
    power = lab.start_power_daemon()
    inventory = write_inventory(lab.run_dir, [machine])
    with Capture(lab) as capture:
        run_playbook(lab, WAKE_PLAYBOOK, inventory)
        discovers = capture.wait_for(lambda: capture.pxe_discovers(machine.mac), DISCOVER_TIMEOUT, "PXE DHCPDISCOVER")
        offers = capture.wait_for(lambda: capture.dhcp(machine.mac, DHCP_OFFER), DISCOVER_TIMEOUT, "site DHCP offer")

    assert client_arch(discovers[0]) == arch
    assert dhcp_options(discovers[0])[60].startswith(b"PXEClient:Arch:%05d:" % arch)

    # The wake module sends several packets to the subnet broadcast: the first powers on, the rest find it running.
    packets = power.packets(machine.mac)
    assert [packet["action"] for packet in packets][:2] == ["started", "already-running"]
    assert {(packet["via"], packet["destination"], packet["port"]) for packet in packets} == {("udp4", "10.213.0.255", 9)}
    assert packets[0]["source"].startswith("10.213.0.1:")
    assert machine.running

    # The site DHCP server hands out an address and nothing to boot (dnsmasq's own address in siaddr is no boot offer).
    assert boot_file(offers[0]) == b""
    assert PXE_OPTIONS.isdisjoint(dhcp_options(offers[0]))
