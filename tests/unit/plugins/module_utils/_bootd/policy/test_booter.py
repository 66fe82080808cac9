# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The boot policy: golden decisions for every architecture and client generation."""

from __future__ import annotations

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import script_path
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.booter import Booter
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import (
    HTTP_CLIENT,
    PXE_CLIENT,
    Firmware,
    Host,
    ServerAddress,
)

SERVER = ServerAddress("10.213.0.1", 8080)
MAC = "52:54:00:aa:00:01"
X86_BINARIES = ("undionly.kpxe", "ipxe.efi")
ALL_BINARIES = X86_BINARIES + ("ipxe-arm64.efi",)
SCRIPT_URL = "http://10.213.0.1:8080/boot/52-54-00-aa-00-01.ipxe"


def make_booter(binaries=X86_BINARIES, installed=False):
    return Booter(HostTable([Host("node-1", MAC, installed=installed), Host("node-2", "52:54:00:aa:00:02")]), SERVER, binaries)


# (arch, vendor class, is iPXE, binaries on the server) -> (boot file, option 60) or None for silence.
GOLDEN = [
    # Vendor PXE ROMs (Intel Boot Agent...) send no option 77: chainload iPXE over TFTP.
    pytest.param(0, PXE_CLIENT, False, X86_BINARIES, ("undionly.kpxe", PXE_CLIENT), id="bios-pxe-rom"),
    pytest.param(7, PXE_CLIENT, False, X86_BINARIES, ("ipxe.efi", PXE_CLIENT), id="uefi-x64-edk2-pxe"),
    pytest.param(9, PXE_CLIENT, False, X86_BINARIES, ("ipxe.efi", PXE_CLIENT), id="uefi-x64-as-9"),
    # Code 16 is x64 UEFI HTTP boot (not arm64): a URL of the x64 binary, echoing HTTPClient.
    pytest.param(16, HTTP_CLIENT, False, X86_BINARIES, ("http://10.213.0.1:8080/ipxe/ipxe.efi", HTTP_CLIENT), id="uefi-x64-http"),
    pytest.param(11, PXE_CLIENT, False, ALL_BINARIES, ("ipxe-arm64.efi", PXE_CLIENT), id="uefi-arm64-pxe"),
    pytest.param(11, PXE_CLIENT, False, X86_BINARIES, None, id="uefi-arm64-pxe-no-binary"),
    pytest.param(19, HTTP_CLIENT, False, ALL_BINARIES, ("http://10.213.0.1:8080/ipxe/ipxe-arm64.efi", HTTP_CLIENT), id="uefi-arm64-http"),
    pytest.param(19, HTTP_CLIENT, False, X86_BINARIES, None, id="uefi-arm64-http-no-binary"),
    pytest.param(6, PXE_CLIENT, False, ALL_BINARIES, None, id="uefi-ia32"),
    pytest.param(10, PXE_CLIENT, False, ALL_BINARIES, None, id="uefi-arm32"),
    pytest.param(15, HTTP_CLIENT, False, ALL_BINARIES, None, id="uefi-x86-http"),
    pytest.param(4242, PXE_CLIENT, False, ALL_BINARIES, None, id="unknown-arch"),
    # iPXE (QEMU's BIOS ROM, undionly.kpxe, ipxe.efi) gets its script whatever its architecture.
    pytest.param(0, PXE_CLIENT, True, X86_BINARIES, (SCRIPT_URL, PXE_CLIENT), id="ipxe-bios"),
    pytest.param(7, PXE_CLIENT, True, X86_BINARIES, (SCRIPT_URL, PXE_CLIENT), id="ipxe-efi"),
    pytest.param(6, PXE_CLIENT, True, (), (SCRIPT_URL, PXE_CLIENT), id="ipxe-ia32-needs-no-binary"),
]


@pytest.mark.parametrize("arch, vendor_class, is_ipxe, binaries, expected", GOLDEN)
def test_golden_decisions(arch, vendor_class, is_ipxe, binaries, expected):
    decision = make_booter(binaries).decide(MAC, Firmware(arch, vendor_class, is_ipxe))
    if expected is None:
        assert decision.spec is None
        assert str(arch) in decision.reason
    else:
        assert (decision.spec.boot_file, decision.spec.vendor_class) == expected
        assert decision.spec.host.name == "node-1"
        assert decision.reason == ""


def test_missing_binary_is_named_in_the_reason():
    decision = make_booter(X86_BINARIES).decide(MAC, Firmware(11, PXE_CLIENT, False))
    assert "ipxe-arm64.efi" in decision.reason


def test_x64_pxe_client_is_not_sent_to_tftp_when_the_binary_is_missing():
    decision = make_booter(("undionly.kpxe",)).decide(MAC, Firmware(7, PXE_CLIENT, False))
    assert decision.spec is None
    assert "ipxe.efi" in decision.reason


def test_unknown_mac_gets_no_answer():
    decision = make_booter().decide("52:54:00:ff:ff:ff", Firmware(0, PXE_CLIENT, True))
    assert decision.spec is None
    assert decision.reason == "unknown MAC address"


def test_installed_host_still_gets_its_script():
    decision = make_booter(installed=True).decide(MAC, Firmware(0, PXE_CLIENT, True))
    assert decision.spec.boot_file == SCRIPT_URL
    assert decision.spec.host.installed is True


@pytest.mark.parametrize("firmware", [Firmware(0, PXE_CLIENT, True), Firmware(7, PXE_CLIENT, False), Firmware(16, HTTP_CLIENT, False)])
def test_an_installed_host_whose_ipxe_cannot_boot_its_disk_is_left_to_its_firmware(firmware):
    table = HostTable([Host("node-1", MAC, installed=True), Host("node-2", "52:54:00:aa:00:02", installed=True)])
    booter = Booter(table, SERVER, X86_BINARIES)
    booter.note_boot_address(MAC, "10.213.0.50")
    table.note_local_boot_failed(MAC, "10.213.0.50")
    decision = booter.decide(MAC, firmware)
    assert decision.spec is None and "cannot boot its disk" in decision.reason
    assert booter.decide("52:54:00:aa:00:02", firmware).spec is not None, "only that host is left alone"
    table.set_installed(MAC, False)  # a reinstall
    assert booter.decide(MAC, firmware).spec is not None


def test_each_host_gets_its_own_script():
    booter = make_booter()
    first = booter.decide(MAC, Firmware(7, PXE_CLIENT, True)).spec
    second = booter.decide("52:54:00:aa:00:02", Firmware(7, PXE_CLIENT, True)).spec
    assert (first.host.name, second.host.name) == ("node-1", "node-2")
    assert second.boot_file == "http://10.213.0.1:8080/boot/52-54-00-aa-00-02.ipxe"


def test_host_mac_is_normalised_and_found():
    booter = Booter(HostTable([Host("node-1", "52-54-00-AA-00-01")]), SERVER, X86_BINARIES)
    assert booter.host(MAC).name == "node-1"
    assert booter.host("52:54:00:aa:00:09") is None


def test_invalid_mac_is_rejected():
    with pytest.raises(ValueError):
        Host("node-1", "52:54:00:aa:00")


def test_script_path_uses_hyphens():
    assert script_path("bc:24:11:d0:28:34") == "/boot/bc-24-11-d0-28-34.ipxe"


def test_server_address_http_base():
    assert ServerAddress("192.0.2.7", 80).http_base == "http://192.0.2.7:80"
