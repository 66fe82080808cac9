# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""iPXE script builders: installer and local-boot scripts, IPv4 and bracketed IPv6 URLs."""

from __future__ import annotations

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import api_url, base_url, mac_path, url_host
from ansible_collections.nixie.provision.plugins.module_utils._bootd.policy.ipxe import autoexec_script, installer_script, local_boot_script

CMDLINE = "init=/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-installer/init loglevel=4 console=ttyS0,115200"
TOKEN = "soVu51WQjsCTo25MXveoVTvgInCdsOKoTc-Ks1b8HQM"


@pytest.mark.parametrize("address, expected", [
    ("10.213.0.1", "http://10.213.0.1:8080"),
    ("fd5e:213::1", "http://[fd5e:213::1]:8080"),
    ("FD5E:0213:0:0::1", "http://[fd5e:213::1]:8080"),
    ("::1", "http://[::1]:8080"),
    ("boot.example", "http://boot.example:8080"),
])
def test_base_url_brackets_ipv6(address, expected):
    assert base_url(address, 8080) == expected


def test_url_host_leaves_ipv4_bare():
    assert url_host("192.0.2.1") == "192.0.2.1"


def installer(base):
    return installer_script(base + "/boot/m.ipxe", base + "/files/m/s/kernel", base + "/files/m/s/initrd", CMDLINE, api_url(base), TOKEN)


def test_installer_script_v4():
    script = installer("http://10.213.0.1:8080")
    assert script.splitlines() == [
        "#!ipxe",
        "kernel http://10.213.0.1:8080/files/m/s/kernel initrd=initrd " + CMDLINE
        + " nixie.api=http://10.213.0.1:8080/api/v1 nixie.token=" + TOKEN + " || goto retry",
        "initrd --name initrd http://10.213.0.1:8080/files/m/s/initrd || goto retry",
        "boot || goto retry",
        ":retry",
        "echo Nixie: loading the installer failed; asking the boot server again in 10 s",
        "sleep 10",
        "imgfree",
        "ifconf --configurator dhcp || goto retry",
        "chain --replace http://10.213.0.1:8080/boot/m.ipxe || goto retry",
    ]


def test_installer_script_v6_urls_are_bracketed():
    script = installer(base_url("fd5e:213::1", 8080))
    assert "kernel http://[fd5e:213::1]:8080/files/m/s/kernel " in script
    assert "nixie.api=http://[fd5e:213::1]:8080/api/v1 " in script
    assert "initrd --name initrd http://[fd5e:213::1]:8080/files/m/s/initrd || goto retry\n" in script
    assert "ifconf --configurator ipv6 || goto retry\nchain --replace http://[fd5e:213::1]:8080/boot/m.ipxe || goto retry\n" in script


def test_initrd_parameter_is_not_doubled():
    script = installer_script("s", "k", "i", "initrd=initrd " + CMDLINE, "a", TOKEN)
    assert script.count("initrd=initrd") == 1


@pytest.mark.parametrize("cmdline", ["init=/x\nshell", "init=/x\r", "a\x00b"])
def test_control_characters_cannot_inject_ipxe_commands(cmdline):
    with pytest.raises(ValueError):
        installer_script("s", "k", "i", cmdline, "a", TOKEN)


FAILURE_URL = "http://10.213.0.1:8080/boot/52-54-00-aa-00-01/local-boot-failed"


def test_installed_host_leaves_network_boot_for_its_disk_on_bios_and_uefi():
    script = local_boot_script("nixie-01", FAILURE_URL)
    commands = [line for line in script.splitlines() if line and not line.startswith("#")]
    assert script.startswith("#!ipxe\n")
    # BIOS leaves at once; UEFI must not `exit` with success (EDK2 then waits in its boot manager), so iPXE boots
    # the disk itself, or reports that it cannot and restarts, failing the firmware's boot entry at the worst.
    assert commands == [
        "iseq ${platform} efi || exit",
        "sanboot --no-describe --drive 0 ||",
        "imgfetch --name local-boot-failed %s ||" % FAILURE_URL,
        "reboot ||",
        "exit 1",
    ]
    assert "kernel" not in script and "nixie.token" not in script


@pytest.mark.parametrize("name, url", [("nixie-01\nchain http://evil/", FAILURE_URL), ("nixie-01", FAILURE_URL + "\nshell")])
def test_local_boot_script_refuses_control_characters(name, url):
    with pytest.raises(ValueError):
        local_boot_script(name, url)


def test_mac_path_uses_hyphens():
    assert mac_path("52:54:00:aa:00:01") == "52-54-00-aa-00-01"


@pytest.mark.parametrize("base, configure", [
    ("http://[fd5e:213::1]:8080", "ifconf --configurator ipv6"),
    ("http://10.213.0.1:8080", "ifconf --configurator dhcp"),
])
def test_autoexec_configures_the_network_then_chains_the_boot_nics_script(base, configure):
    assert autoexec_script(base).splitlines() == [
        "#!ipxe",
        ":attempt",
        configure + " || goto retry",
        "chain --replace " + base + "/boot/${netX/mac:hexhyp}.ipxe || goto retry",
        ":retry",
        "echo Nixie: fetching the boot script failed; asking the boot server again in 10 s",
        "sleep 10",
        "goto attempt",
    ]
