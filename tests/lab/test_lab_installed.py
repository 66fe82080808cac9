"""The lab's stand-in nixos-anywhere "installs" a machine running the test installer over real SSH, with the command
line Nixie's install module builds; the machine then boots from its own disk, through its firmware's boot order, as the
installed host: Nixie's generated host key, os-release without VARIANT_ID, /run/current-system
pointing at the flake's toplevel. Also: the installed-disk image's layout, and the stand-in's refusals."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from ansible_collections.nixie.provision.plugins.module_utils import _nix, _systems
from ansible_collections.nixie.provision.plugins.module_utils._install import ensure_host_key, nixos_anywhere_command
from nixielab import Installer, append_cpio
from nixielab.installed import BOOT_START, SECTOR, STATE_SIZE, SYSLINUX_MBR, build_installed_image
from nixielab.netboot import fixture_flake_helper

STANDIN = Path(__file__).resolve().parent / "nixielab" / "files" / "nixos-anywhere"
BOOT_TIMEOUT = 90  # the test installer: ~15 s from QEMU start to "ready" under TCG
# Power-on to the installed system's /init. SeaBIOS keeps the network first (no boot server answers here): ~34 s,
# iPXE gets a lease without a boot file, then the disk. OVMF has the disk first, as a UEFI machine has once its OS
# registered its boot entry; network first it would take ~170 s (300 s next to another VM), every one of EDK2's
# PXEv4, PXEv6, HTTPv4 and HTTPv6 entries timing out before the disk's.
DISK_BOOT_TIMEOUT = {"bios": 120, "uefi": 120}
BOOT_ORDER = {"bios": "network-first", "uefi": "disk-first"}
INSTALL_TIMEOUT = 180
FIRST_MIB_IS_ZERO = "head -c 1048576 /dev/vda | tr -d '\\0' | wc -c"


def _ssh(lab, key, known_hosts, address, command):
    """Run `command` as root on `address` from the controller, trusting only the host keys in `known_hosts`."""
    return lab.run_ctl(["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "UserKnownHostsFile=%s" % known_hosts,
                        "-o", "StrictHostKeyChecking=yes", "root@%s" % address, command], capture_output=True, text=True, timeout=60)


def _records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_image_layout(tmp_path):
    """Two MBR partitions: an active FAT boot partition with both loaders, then the zeroed state partition; cached."""
    (tmp_path / "vmlinuz").write_bytes(os.urandom(3 << 20))
    (tmp_path / "initrd.gz").write_bytes(os.urandom(1 << 20))
    installer = Installer(kernel=tmp_path / "vmlinuz", initrd=tmp_path / "initrd.gz", kernel_version="test", cmdline="console=ttyS0 quiet")
    image = build_installed_image(installer, cache_root=tmp_path / "cache")
    assert build_installed_image(installer, cache_root=tmp_path / "cache") == image

    table = json.loads(subprocess.run(["sfdisk", "-J", str(image.path)], capture_output=True, text=True, check=True).stdout)["partitiontable"]
    boot, state = table["partitions"]
    assert table["label"] == "dos"
    assert (boot["start"] * SECTOR, boot["type"], boot.get("bootable")) == (BOOT_START, "ef", True)
    assert boot["size"] * SECTOR >= (4 << 20)
    assert (state["start"] * SECTOR, state["size"] * SECTOR, state["type"]) == (image.state_offset, STATE_SIZE, "da")
    assert image.path.stat().st_size == image.state_offset + STATE_SIZE
    data = image.path.read_bytes()
    assert data[:440] == SYSLINUX_MBR.read_bytes()[:440]
    assert data[image.state_offset:] == bytes(STATE_SIZE)

    def listing(path):
        return subprocess.run(["mdir", "-a", "-b", "-i", "%s@@%d" % (image.path, BOOT_START), path], capture_output=True, text=True, check=True).stdout

    assert {"::/vmlinuz", "::/initrd.gz", "::/ldlinux.sys", "::/syslinux.cfg"} <= set(listing("::/").split())
    assert "::/EFI/BOOT/BOOTX64.EFI" in listing("::/EFI/BOOT").split()
    entry = subprocess.run(["mtype", "-i", "%s@@%d" % (image.path, BOOT_START), "::/loader/entries/nixielab.conf"],
                           capture_output=True, text=True, check=True).stdout
    assert "options console=ttyS0 quiet nixielab.boot=disk" in entry


@pytest.mark.parametrize("argv, message", [
    (["--flake", "path:/x#a", "--target-host", "root@10.0.0.1", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--target-host", "root@10.0.0.1"], "flake must be set"),
    (["--flake", "path:/x#a"], "ssh-host must be set"),
    (["--store-paths", "/nix/store/absent-disko", "/nix/store/absent-toplevel", "--target-host", "root@a"],
     "--store-paths: /nix/store/absent-disko does not exist"),
    (["--flake", "path:/x#a", "--target-host", "root@10.0.0.1", "--phases", "disko,magic"], "unknown phase"),
])
def test_standin_refuses_bad_command_lines(tmp_path, argv, message):
    log = tmp_path / "standin.jsonl"
    result = subprocess.run([str(STANDIN), *argv], capture_output=True, text=True, timeout=30, check=False,
                            env=dict(os.environ, NIXIE_STANDIN_LOG=str(log), NIXIE_STANDIN_IMAGE=str(tmp_path / "absent.img")))
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert [record["argv"][1:] for record in _records(log)] == [argv]


@dataclasses.dataclass
class Deployment:
    """What Nixie hands nixos-anywhere for host nixie-01, and what the installed host must then show."""

    key: Path
    initrd: Path
    flake: str
    environment: dict
    extra_files: Path
    host_key: str
    expected_system: str
    store_paths: tuple[str, str]


def _deployment(directory: Path, installer: Installer, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    key = directory / "deployer"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deployer@lab", "-f", str(key)], check=True)
    initrd = append_cpio(installer.initrd, {"/root/.ssh/authorized_keys": key.with_suffix(".pub").read_bytes()}, directory / "initrd.gz")
    helper = fixture_flake_helper()
    flake = helper.materialise(directory / "flake", installer.kernel, initrd, installer.cmdline)
    environment = dict(os.environ, **helper.offline_nix_env(directory / "nix-conf"), NIXIE_STANDIN_LOG=str(directory / "standin.jsonl"),
                       NIXIE_STANDIN_IMAGE=str(build_installed_image(installer).path))
    # Built as a provisioning run builds it: the whole run's systems in one nix build (here, the one host's).
    for name, value in helper.offline_nix_env(directory / "nix-conf").items():
        monkeypatch.setenv(name, value)
    nix = _nix.Nix()
    systems = _systems.evaluate(nix, flake, {"nixie-01": "nixie-01"})
    assert _systems.build(nix, systems, ["nixie-01"], str(directory / "systems-build.log")) == {"nixie-01": None}
    system = systems["nixie-01"]
    extra_files = directory / "extra-files"
    host_key = ensure_host_key(str(extra_files), "nixie-01")
    return Deployment(key, initrd, flake, environment, extra_files, host_key, system["toplevel"], (system["disko_script"], system["toplevel"]))


@pytest.mark.lab
@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_standin_installs_and_the_machine_boots_from_disk(lab, installer, firmware, monkeypatch):
    deployment = _deployment(lab.run_dir, installer, monkeypatch)
    key, log = deployment.key, Path(deployment.environment["NIXIE_STANDIN_LOG"])

    # Rebooting makes QEMU exit: the test then powers the machine on again without -kernel, so it boots as
    # its firmware's boot order says (see BOOT_ORDER).
    machine = lab.add_machine("inst-%s" % firmware, "52:54:00:52:00:0%d" % (1 + (firmware == "uefi")), firmware=firmware, disk_size="64M",
                              kernel=installer.kernel, initrd=deployment.initrd, append=installer.cmdline, no_reboot=True,
                              boot_order=BOOT_ORDER[firmware])
    machine.start()
    machine.wait_for_serial(r"NIXIELAB: ready", BOOT_TIMEOUT)
    address = machine.wait_for_serial(r"NIXIELAB: dhcp ok (\S+)", 0).group(1)
    installer_key = machine.wait_for_serial(r"NIXIELAB: hostkey (ssh-ed25519 \S+)", 0).group(1)
    installer_hosts = lab.run_dir / "known_hosts-installer"
    installer_hosts.write_text("%s %s\n" % (address, installer_key))
    answer = _ssh(lab, key, installer_hosts, address, "grep VARIANT_ID /etc/os-release; %s" % FIRST_MIB_IS_ZERO)
    assert answer.stdout.split() == ["VARIANT_ID=installer", "0"], answer

    command = nixos_anywhere_command(str(STANDIN), "nixie-01", address, str(key), str(deployment.extra_files), False, ["--debug"],
                                     store_paths=deployment.store_paths)
    assert command[1:8] == ["--store-paths", *deployment.store_paths, "--target-host", "root@nixie-01", "--ssh-option", "HostName=" + address]
    failed = lab.run_ctl(command, capture_output=True, text=True, timeout=60, env=dict(deployment.environment, NIXIE_STANDIN_FAIL="nixie-00,nixie-01"))
    assert failed.returncode == 1 and "fault injected" in failed.stderr, failed
    assert _ssh(lab, key, installer_hosts, address, FIRST_MIB_IS_ZERO).stdout.split() == ["0"], "the failed install touched the disk"

    started = time.time()
    result = lab.run_ctl(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, env=dict(deployment.environment, NIXIE_STANDIN_FAIL="nixie-02"))
    assert result.returncode == 0, result.stderr
    print("%s: stand-in install %.1f s" % (firmware, time.time() - started))
    assert "### Rebooting ###" in result.stdout
    first, second = _records(log)
    assert first["argv"] == second["argv"] == command
    assert started <= second["start"] <= started + 5 and second["pid"] != first["pid"]

    deadline = time.monotonic() + 60
    while machine.running and time.monotonic() < deadline:
        time.sleep(0.2)
    assert machine.reap() == 0
    machine.kernel = machine.initrd = machine.append = None
    powered_on = time.monotonic()
    machine.start()
    try:
        booted = machine.wait_for_serial(r"NIXIELAB: installed (\S+)", DISK_BOOT_TIMEOUT[firmware]).group(1)
        print("%s: power-on to the installed system's /init %.1f s" % (firmware, time.monotonic() - powered_on))
        machine.wait_for_serial(r"NIXIELAB: ready", BOOT_TIMEOUT)
        assert booted == deployment.expected_system
        assert "NIXIELAB: hook" not in machine.serial_text()
        address = machine.wait_for_serial(r"NIXIELAB: dhcp ok (\S+)", 0).group(1)
        known_hosts = lab.run_dir / "known_hosts"
        known_hosts.write_text("%s %s\n" % (address, deployment.host_key))
        answer = _ssh(lab, key, known_hosts, address, "cat /etc/os-release; readlink /run/current-system")
        assert answer.returncode == 0, answer.stderr
        lines = answer.stdout.splitlines()
        assert "ID=nixos" in lines and not any(line.startswith("VARIANT_ID=") for line in lines)
        assert lines[-1] == deployment.expected_system
        # The pinning is real: the installer's key no longer answers at this address.
        installer_hosts.write_text("%s %s\n" % (address, installer_key))
        assert _ssh(lab, key, installer_hosts, address, "true").returncode != 0
    finally:
        machine.stop()
