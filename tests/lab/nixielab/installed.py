"""The lab's "installed NixOS" disk image, which the stand-in nixos-anywhere (files/nixos-anywhere) writes to a machine.

No real NixOS can be built here, so an installed lab machine boots the test installer's kernel and initramfs
from its own disk; the initramfs's /init, told by the boot entry's DISK_BOOT_PARAMETER that it came from the disk,
finds the installed host's state there and becomes that host (files/init). The image is a raw disk with an MBR
partition table, which both firmwares boot:

- partition 1, FAT, active, type EF: the kernel, the initramfs, syslinux for SeaBIOS (syslinux's MBR boot
  code loads the active partition's syslinux boot sector) and systemd-boot as EFI/BOOT/BOOTX64.EFI (BOOTAA64.EFI
  for an arm64 installer), the removable-media path OVMF and AAVMF boot when no boot entry names a loader;
- partition 2, raw, STATE_SIZE bytes of zeros: the stand-in writes the per-host tar there after the image.

It is built from files, without mounting anything (mkfs.vfat, mtools, syslinux's mtools installer,
sfdisk), and cached under `.cache/lab-installed/`, keyed on every input, this module's code included.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
from pathlib import Path

from .installer import CACHE_ROOT as INSTALLER_CACHE_ROOT, Installer, _publish
from .processes import run_checked

CACHE_ROOT = INSTALLER_CACHE_ROOT.parent / "lab-installed"
SECTOR = 512
MIB = 1 << 20
BOOT_START = MIB  # the first partition starts at 1 MiB, as partitioning tools align it
STATE_SIZE = MIB
BOOT_SLACK = 2 * MIB  # room for the FAT's own tables and the loaders beside kernel and initramfs
MBR_BOOT_CODE_SIZE = 440  # the boot code's share of the MBR, before the disk signature and partition table
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
# Each architecture's systemd-boot, under the installer's userland root, and the removable-media path its firmware boots.
SYSTEMD_BOOT = {"amd64": (Path("usr/lib/systemd/boot/efi/systemd-bootx64.efi"), "BOOTX64.EFI"),
                "arm64": (Path("usr/lib/systemd/boot/efi/systemd-bootaa64.efi"), "BOOTAA64.EFI")}
LABEL = "NIXIELAB"
STATE_TYPE = "da"  # "non-FS data": nothing mounts or probes it
# On the boot entries' kernel command line: tells files/init it was booted from this disk, not from the network.
DISK_BOOT_PARAMETER = "nixielab.boot=disk"


@dataclasses.dataclass(frozen=True)
class InstalledImage:
    """A built installed-disk image: write `path` to the disk, then the host's tar at byte `state_offset`."""

    path: Path
    state_offset: int
    state_size: int = STATE_SIZE


def build_installed_image(installer: Installer, cache_root: Path = CACHE_ROOT) -> InstalledImage:
    """Build (or take from the cache) the disk image that boots `installer`'s kernel and initramfs with its command line."""
    kernel, initrd = installer.kernel.read_bytes(), installer.initrd.read_bytes()
    digest = hashlib.sha256()
    for part in (kernel, initrd, installer.cmdline.encode(), SYSLINUX_MBR.read_bytes(), _systemd_boot(installer)[0].read_bytes(),
                 _tool_version("syslinux"), Path(__file__).read_bytes()):
        digest.update(hashlib.sha256(part).digest())
    boot_size = _round_up(len(kernel) + len(initrd) + BOOT_SLACK, MIB)
    state_offset = BOOT_START + boot_size
    target = cache_root / digest.hexdigest()[:16]
    if not (target / "disk.img").exists():
        cache_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_root) as scratch:
            built = Path(scratch) / "image"
            built.mkdir()
            boot = _boot_filesystem(installer, boot_size, Path(scratch))
            _disk_image(built / "disk.img", boot, boot_size)
            _publish(built, target)
    return InstalledImage(target / "disk.img", state_offset)


def _boot_filesystem(installer: Installer, size: int, scratch: Path) -> Path:
    """The boot partition's FAT file system, in a file of `size` bytes."""
    fat = scratch / "boot.fat"
    run_checked(["mkfs.vfat", "-n", LABEL, "-C", str(fat), str(size // 1024)])
    files = scratch / "files"
    cmdline = "%s %s" % (installer.cmdline, DISK_BOOT_PARAMETER)
    for path, content in {
        "syslinux.cfg": "DEFAULT nixielab\nLABEL nixielab\n  LINUX /vmlinuz\n  INITRD /initrd.gz\n  APPEND %s\n" % cmdline,
        "loader/loader.conf": "default nixielab.conf\ntimeout 0\n",
        "loader/entries/nixielab.conf": "title Nixie lab installed system\nlinux /vmlinuz\ninitrd /initrd.gz\noptions %s\n" % cmdline,
    }.items():
        (files / path).parent.mkdir(parents=True, exist_ok=True)
        (files / path).write_text(content)
    (files / "EFI" / "BOOT").mkdir(parents=True)
    loader, name = _systemd_boot(installer)
    shutil.copyfile(loader, files / "EFI" / "BOOT" / name)
    shutil.copyfile(installer.kernel, files / "vmlinuz")
    shutil.copyfile(installer.initrd, files / "initrd.gz")
    # mcopy -s copies the tree into the image file; -i names the image, so nothing is mounted.
    run_checked(["mcopy", "-s", "-i", str(fat), *(str(path) for path in sorted(files.iterdir())), "::/"])
    # syslinux's mtools installer writes its boot sector and ldlinux.sys/.c32 into the unmounted file system.
    run_checked(["syslinux", "--install", str(fat)])
    return fat


def _disk_image(path: Path, boot: Path, boot_size: int) -> None:
    """Assemble the disk: MBR with syslinux's boot code, the boot file system, a zeroed state partition."""
    with open(path, "wb") as image:
        image.truncate(BOOT_START + boot_size + STATE_SIZE)
    run_checked(["sfdisk", "--quiet", str(path)], input="label: dos\nstart=%d, size=%d, type=ef, bootable\nstart=%d, size=%d, type=%s\n" % (
        BOOT_START // SECTOR, boot_size // SECTOR, (BOOT_START + boot_size) // SECTOR, STATE_SIZE // SECTOR, STATE_TYPE))
    with open(path, "r+b") as image:
        image.write(SYSLINUX_MBR.read_bytes()[:MBR_BOOT_CODE_SIZE])
        image.seek(BOOT_START)
        with open(boot, "rb") as source:
            shutil.copyfileobj(source, image)


def _systemd_boot(installer: Installer) -> tuple[Path, str]:
    """The installer architecture's systemd-boot file, and the name its firmware looks for on removable media."""
    loader, name = SYSTEMD_BOOT[installer.arch]
    return installer.userland / loader, name


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def _tool_version(tool: str) -> bytes:
    result = run_checked([tool, "--version"])
    return (result.stdout + result.stderr).encode()
