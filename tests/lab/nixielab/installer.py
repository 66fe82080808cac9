"""The lab's test installer: Debian's kernel plus a small busybox initramfs with an SSH server.

It stands in for the NixOS netboot installer in lab tests that are about the flow (network boot,
agent phone-home, SSH) rather than NixOS itself, and boots in seconds under TCG. The kernel comes
from the current `linux-image-amd64` dependency (resolved, never pinned: Debian retires ABI
numbers), extracted, not installed. The initramfs is written by this module as a newc cpio archive
with root-owned entries, so building it needs no root and no `cpio` binary, and is reproducible.
Both are cached under `.cache/lab-installer/`, keyed on the kernel version and a hash of every
file that goes into the archive.

Linux unpacks several concatenated (compressed) cpio archives in a row, later files winning, so
`append_cpio` adds files (an agent hook, an authorized_keys) to a built initrd without rebuilding it.

The same kernel and initramfs, booted from a disk written by the lab's stand-in nixos-anywhere, act as
the installed host instead (installed.py, files/init).

An arm64 installer (`build_installer(arch="arm64")`) is built the same way from Debian's arm64 packages
(linux-image-arm64, busybox-static, dropbear-bin and its libraries), which apt resolves and downloads with a
private state and `APT::Architecture=arm64`, so the host needs no multiarch setup. Its files are extracted
into `.cache/lab-installer/userland-arm64/`, and their libraries are found from their ELF headers, since
an arm64 ldd cannot run here.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import re
import stat
import subprocess
import tempfile
from pathlib import Path

from .processes import REPO_ROOT, LabError, run_checked

CACHE_ROOT = REPO_ROOT / ".cache" / "lab-installer"
FILES = Path(__file__).resolve().parent / "files"
NIC_MODULES = ("e1000", "virtio_net", "virtio_pci")
# virtio_blk: the machine's disk, which the agent reports and an installed system boots from (installed.py).
MODULES = (*NIC_MODULES, "virtio_blk")
KERNEL_CMDLINE = "console=ttyS0"
# The serial console of each architecture's lab machine: the PC UART, or the PL011 of QEMU's arm64 `virt`.
CONSOLES = {"amd64": "ttyS0", "arm64": "ttyAMA0"}
# The Nix system that each Debian architecture's installer boots, as a flake names it.
NIX_SYSTEMS = {"amd64": "x86_64-linux", "arm64": "aarch64-linux"}
BUSYBOX = Path("/bin/busybox")
# dropbearconvert turns an installed host's injected OpenSSH host key into dropbear's format.
DROPBEAR = (Path("/usr/sbin/dropbear"), Path("/usr/bin/dropbearkey"), Path("/usr/bin/dropbearconvert"))
HOOKS_DIR = "etc/nixie/hooks.d"
CPIO_ALIGNMENT = 4
NEWC_MAGIC = b"070701"
NEWC_TRAILER = "TRAILER!!!"  # the member that ends an archive
NEWC_HEADER_SIZE = 110  # the magic and 13 eight-digit hex fields
ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    "etc/shells": "/bin/sh\n",  # dropbear refuses users whose shell is not listed here
    # What the NixOS netboot installer says of itself: agents report it, Nixie's status check reads it.
    "etc/os-release": "NAME=NixOS\nID=nixos\nVARIANT_ID=installer\n",
}


@dataclasses.dataclass(frozen=True)
class Installer:
    """A built test installer: boot `kernel` with `initrd` and a command line including `cmdline`."""

    kernel: Path
    initrd: Path
    kernel_version: str
    cmdline: str = KERNEL_CMDLINE
    arch: str = "amd64"
    # The root that holds this architecture's systemd-boot (usr/lib/systemd/boot/efi/), for installed-disk images.
    userland: Path = Path("/")

    @property
    def system(self) -> str:
        """The Nix system (x86_64-linux, aarch64-linux) this installer boots."""
        return NIX_SYSTEMS[self.arch]


@dataclasses.dataclass(frozen=True)
class CpioEntry:
    """One archive member. `path` has no leading '/'; `data` is a file's content or a symlink's target."""

    path: str
    mode: int  # with the file type bits (stat.S_IFREG | 0o755, ...)
    data: bytes = b""
    device: tuple[int, int] = (0, 0)


def build_installer(modules: tuple[str, ...] = MODULES, cache_root: Path = CACHE_ROOT, arch: str = "amd64") -> Installer:
    """Build (or take from the cache) the test installer for Debian architecture `arch` (amd64, arm64).

    Its initramfs holds kernel `modules` (and their dependencies)."""
    if arch not in CONSOLES:
        raise LabError("installer architecture %r is not one of %s" % (arch, ", ".join(CONSOLES)))
    apt = Apt.host() if arch == "amd64" else Apt.foreign(arch, cache_root)
    version = kernel_version(apt, arch)
    tree = kernel_tree(version, cache_root, apt)
    userland = Path("/") if arch == "amd64" else foreign_userland(apt, arch, cache_root)
    entries = base_entries(tree, version, modules, userland)
    digest = hashlib.sha256(version.encode())
    for entry in entries:
        digest.update(repr((entry.path, entry.mode, entry.device, hashlib.sha256(entry.data).hexdigest())).encode())
    target = cache_root / ("%s-%s" % (version, digest.hexdigest()[:16]))
    if not (target / "initrd.gz").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_root) as scratch:
            built = Path(scratch) / "installer"
            built.mkdir()
            kernel = (tree / "boot" / ("vmlinuz-%s" % version)).read_bytes()
            # Debian's arm64 vmlinuz is a gzip of the EFI-stub Image; firmware and iPXE load the Image itself.
            (built / "vmlinuz").write_bytes(gzip.decompress(kernel) if kernel[:2] == b"\x1f\x8b" else kernel)
            (built / "initrd.gz").write_bytes(cpio_archive(entries))
            _publish(built, target)
    return Installer(kernel=target / "vmlinuz", initrd=target / "initrd.gz", kernel_version=version,
                     cmdline="console=%s" % CONSOLES[arch], arch=arch, userland=userland)


@dataclasses.dataclass(frozen=True)
class Apt:
    """How apt is run: the host's own, or a private state (under `state`) that lists another architecture."""

    options: tuple[str, ...] = ()
    state: Path | None = None

    @classmethod
    def host(cls) -> "Apt":
        return cls()

    @classmethod
    def foreign(cls, arch: str, cache_root: Path) -> "Apt":
        """A private apt state with the host's own sources, for Debian architecture `arch`."""
        state = cache_root / ("apt-%s" % arch)
        for directory in ("lists/partial", "archives/partial", "empty"):
            (state / directory).mkdir(parents=True, exist_ok=True)
        (state / "status").touch()
        options = ("-o", "Dir::State::Lists=%s/lists" % state, "-o", "Dir::Cache=%s" % state,
                   "-o", "Dir::State::status=%s/status" % state, "-o", "Dir::Etc::Preferences=%s/empty/none" % state,
                   "-o", "Dir::Etc::PreferencesParts=%s/empty" % state, "-o", "APT::Architecture=%s" % arch,
                   "-o", "APT::Architectures=%s" % arch)
        return cls(options, state)

    def get(self, *args: str, cwd: str | Path | None = None) -> str:
        return run_checked(["apt-get", "-q", "-o", "APT::Sandbox::User=root", *self.options, *args], cwd=cwd).stdout

    def cache(self, *args: str) -> str:
        return subprocess.run(["apt-cache", *self.options, *args], capture_output=True, text=True, check=False).stdout

    def depends(self, package: str, missing_ok: bool = False) -> list[str]:
        """The packages `package` directly depends on, as apt-cache names them (none: an error unless `missing_ok`)."""
        def resolve():
            return re.findall(r"^\s*\|?Depends: ([^\s<]+)", self.cache("depends", package), re.MULTILINE)

        found = resolve()
        if not found and not any((self.state or Path("/var/lib/apt")).joinpath("lists").glob("*Packages*")):
            self.get("update")  # no package lists yet (a fresh machine, or a fresh private state)
            found = resolve()
        if not found and not missing_ok:
            raise LabError("apt-cache knows no dependency of %s; is a Debian repository configured?" % package)
        return found

    def download(self, packages: list[str], directory: Path) -> list[Path]:
        """Download `packages` into `directory`, fetching fresh lists once if the mirror has moved on."""
        try:
            self.get("download", *packages, cwd=directory)
        except LabError:
            self.get("update")
            self.get("download", *packages, cwd=directory)
        return sorted(directory.glob("*.deb"))


def append_cpio(base_initrd: Path, files: dict[str, Path | str | bytes], out: Path) -> Path:
    """Write to `out` the gzip initrd `base_initrd` followed by a cpio segment holding `files`.

    `files` maps absolute paths in the initramfs to a source file (copied with its permission bits)
    or to bytes (mode 0644). Parent directories the base lacks are added (mode 0755); those it has
    are left out, because the kernel would reset their modes to the new entry's. Returns `out`.
    """
    base = Path(base_initrd).read_bytes()
    existing = cpio_members(base)
    entries = []
    for destination, source in files.items():
        path = destination.lstrip("/")
        if isinstance(source, bytes):
            entries.append(CpioEntry(path, stat.S_IFREG | 0o644, source))
        else:
            entries.append(_file_entry(path, Path(source)))
    entries = [entry for entry in _with_parents(entries) if not (stat.S_ISDIR(entry.mode) and entry.path in existing)]
    # The kernel skips zero bytes between archives; padding keeps every segment 4-byte aligned.
    Path(out).write_bytes(base + _padding(len(base)) + cpio_archive(entries))
    return Path(out)


def cpio_members(initrd: bytes) -> dict[str, int]:
    """Path to mode of every member of a gzip-compressed newc initrd, all its concatenated segments included."""
    archive = gzip.decompress(initrd)
    members, offset = {}, 0
    while offset + NEWC_HEADER_SIZE <= len(archive):
        if archive[offset:offset + 6] != NEWC_MAGIC:
            offset += CPIO_ALIGNMENT  # zero padding between two archives
            continue
        mode, size, name_size = (int(archive[offset + start:offset + start + 8], 16) for start in (14, 54, 94))
        name = archive[offset + NEWC_HEADER_SIZE:offset + NEWC_HEADER_SIZE + name_size - 1].decode()
        if name != NEWC_TRAILER:
            members[name] = mode
        offset = _aligned(_aligned(offset + NEWC_HEADER_SIZE + name_size) + size)
    return members


def kernel_version(apt: Apt | None = None, arch: str = "amd64") -> str:
    """The kernel release (e.g. 6.1.0-56-amd64) that Debian's linux-image-`arch` currently depends on."""
    package = "linux-image-%s" % arch
    for dependency in (apt or Apt.host()).depends(package):
        if dependency.startswith("linux-image-"):
            return dependency[len("linux-image-"):]
    raise LabError("%s depends on no linux-image package" % package)


def kernel_tree(version: str, cache_root: Path = CACHE_ROOT, apt: Apt | None = None) -> Path:
    """The extracted (not installed) linux-image package of `version`, with a depmod index."""
    tree = cache_root / ("kernel-%s" % version)
    if tree.exists():
        return tree
    cache_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root) as scratch:
        package, = (apt or Apt.host()).download(["linux-image-%s" % version], Path(scratch))
        extracted = Path(scratch) / "tree"
        run_checked(["dpkg-deb", "-x", str(package), str(extracted)])
        run_checked(["depmod", "-b", str(extracted), version])
        _publish(extracted, tree)
    return tree


def foreign_userland(apt: Apt, arch: str, cache_root: Path = CACHE_ROOT) -> Path:
    """Debian's busybox-static, dropbear-bin and its libraries, and systemd-boot-efi for `arch`, extracted into one tree."""
    tree = cache_root / ("userland-%s" % arch)
    if tree.exists():
        return tree
    # dropbear-bin and what it depends on, transitively (libtomcrypt1 brings libgmp10, libc6 libgcc-s1).
    # systemd-boot-efi: the EFI loader of the installed-disk image (installed.py).
    packages, pending = {"busybox-static", "systemd-boot-efi"}, ["dropbear-bin"]
    while pending:
        package = pending.pop()
        packages.add(package)
        pending += [dependency for dependency in apt.depends(package, missing_ok=True) if dependency not in packages]
    with tempfile.TemporaryDirectory(dir=cache_root) as scratch:
        extracted = Path(scratch) / "tree"
        for package in apt.download(sorted(packages), Path(scratch)):
            run_checked(["dpkg-deb", "-x", str(package), str(extracted)])
        _publish(extracted, tree)
    return tree


def module_load_order(tree: Path, version: str, modules: tuple[str, ...]) -> list[Path]:
    """Module files for `modules` and their dependencies, dependencies first, each once (built-ins skipped)."""
    ordered: list[Path] = []
    for module in modules:
        shown = run_checked(["modprobe", "-d", str(tree), "-S", version, "--show-depends", module]).stdout
        for line in shown.splitlines():
            words = line.split()
            if words and words[0] == "insmod" and Path(words[1]) not in ordered:
                ordered.append(Path(words[1]))
    return ordered


def base_entries(tree: Path, version: str, modules: tuple[str, ...], userland: Path = Path("/")) -> list[CpioEntry]:
    """Every member of the test installer's initramfs; busybox and dropbear come from the root `userland`."""
    entries = []
    add = entries.append
    for directory, mode in (("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("run", 0o755), ("tmp", 0o1777),
                            ("root", 0o700), ("root/.ssh", 0o700), ("etc/dropbear", 0o700), (HOOKS_DIR, 0o755)):
        add(CpioEntry(directory, stat.S_IFDIR | mode))
    # The kernel opens /dev/console for /init before anything is mounted: without the node, no console output.
    add(CpioEntry("dev/console", stat.S_IFCHR | 0o600, device=(5, 1)))
    add(_file_entry("bin/busybox", _inside(userland, BUSYBOX)))
    # The host's busybox-static lists the applets: a foreign one cannot run here, and Debian builds the same
    # configuration for every architecture.
    for applet in run_checked([str(BUSYBOX), "--list-full"]).stdout.split():
        if applet != "bin/busybox":
            add(CpioEntry(applet, stat.S_IFLNK | 0o777, b"/bin/busybox"))
    for binary in DROPBEAR:
        add(_file_entry(str(binary).lstrip("/"), _inside(userland, binary)))
        libraries = _shared_libraries(binary) if userland == Path("/") else _elf_libraries(userland, binary)
        for library, source in libraries:
            add(_file_entry(str(library).lstrip("/"), source))
    load_order = module_load_order(tree, version, modules)
    for module in load_order:
        add(_file_entry("lib/modules/%s" % module.name, module))
    add(CpioEntry("etc/nixielab/modules", stat.S_IFREG | 0o644, "".join(m.name + "\n" for m in load_order).encode()))
    # Executable whatever the checkout's file modes are.
    add(CpioEntry("etc/nixielab/udhcpc-script", stat.S_IFREG | 0o755, (FILES / "udhcpc-script").read_bytes()))
    add(CpioEntry("init", stat.S_IFREG | 0o755, (FILES / "init").read_bytes()))
    for path, text in ETC_FILES.items():
        add(CpioEntry(path, stat.S_IFREG | 0o644, text.encode()))
    return _with_parents(entries)


def cpio_archive(entries: list[CpioEntry]) -> bytes:
    """A gzip-compressed newc cpio archive of `entries`, every member owned by root, timestamps zeroed."""
    archive = bytearray()
    for inode, entry in enumerate([*entries, CpioEntry(NEWC_TRAILER, 0)], start=1):
        name = entry.path.encode() + b"\0"
        # newc header fields: ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
        # namesize, check. nlink stays 1 for files, or the kernel would try to hard-link equal inode numbers.
        fields = (inode, entry.mode, 0, 0, 2 if stat.S_ISDIR(entry.mode) else 1, 0, len(entry.data), 0, 0, *entry.device, len(name), 0)
        archive += NEWC_MAGIC + b"".join(b"%08X" % field for field in fields) + name
        archive += _padding(len(archive))
        archive += entry.data
        archive += _padding(len(archive))
    return gzip.compress(bytes(archive), compresslevel=6, mtime=0)


def _with_parents(entries: list[CpioEntry]) -> list[CpioEntry]:
    """`entries` with the directories above each added (mode 0755) before it, unless listed earlier; later entries win."""
    complete: dict[str, CpioEntry] = {}
    for entry in entries:
        for parent in reversed(Path(entry.path).parents[:-1]):  # outermost first, without "."
            complete.setdefault(str(parent), CpioEntry(str(parent), stat.S_IFDIR | 0o755))
        complete[entry.path] = entry
    return list(complete.values())


def _padding(length: int) -> bytes:
    """The zero bytes that bring `length` to the next 4-byte boundary of the newc format."""
    return b"\0" * (-length % CPIO_ALIGNMENT)


def _aligned(offset: int) -> int:
    return offset + len(_padding(offset))


def _file_entry(path: str, source: Path) -> CpioEntry:
    return CpioEntry(path, stat.S_IFREG | stat.S_IMODE(source.stat().st_mode), source.read_bytes())


def _shared_libraries(binary: Path) -> list[tuple[Path, Path]]:
    """The shared libraries `binary` loads, and the dynamic loader, as ldd lists them (path, and where to read it)."""
    libraries = []
    for line in run_checked(["ldd", str(binary)]).stdout.splitlines():
        # "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        match = re.search(r"(/\S+) \(0x", line)
        if match:
            libraries.append((Path(match.group(1)), Path(match.group(1))))
    return libraries


def _elf_libraries(root: Path, binary: Path) -> list[tuple[Path, Path]]:
    """What ldd would list for `binary` inside the foreign tree `root`, found from the ELF headers with readelf.

    Each library is (its path in the initramfs, the file in `root` to read); it goes into the initramfs
    under its loader's own search directory, so symlinks in the tree (often absolute) need not be kept."""
    def headers(path: Path) -> str:
        return run_checked(["readelf", "-d", "-l", "-W", str(path)]).stdout

    def search(name: str) -> tuple[Path, Path]:
        for directory in sorted(root.glob("lib/*-linux-gnu")) + sorted(root.glob("usr/lib/*-linux-gnu")):
            if (directory / name).exists() or (directory / name).is_symlink():
                return Path("/lib") / directory.name / name, _inside(root, directory.relative_to(root) / name)
        raise LabError("%s needs %s, which no package extracted into %s holds" % (binary, name, root))

    found: dict[Path, Path] = {}
    pending = [_inside(root, binary)]
    while pending:
        shown = headers(pending.pop())
        interpreter = re.search(r"program interpreter: (/\S+)\]", shown)
        if interpreter and Path(interpreter.group(1)) not in found:
            found[Path(interpreter.group(1))] = _inside(root, Path(interpreter.group(1)))
        for name in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", shown):
            path, source = search(name)
            if path not in found:
                found[path] = source
                pending.append(source)
    return list(found.items())


def _inside(root: Path, path: Path) -> Path:
    """`path` of the tree `root` with its symlinks resolved inside the tree, absolute targets included."""
    if root == Path("/"):
        return path
    current = root
    parts = list(Path(path).relative_to("/").parts) if Path(path).is_absolute() else list(Path(path).parts)
    for dummy in range(64):  # a symlink loop ends here
        if not parts:
            return current
        candidate = current / parts.pop(0)
        if candidate.is_symlink():
            target = Path(os.readlink(candidate))
            parts = list(target.parts[1:] if target.is_absolute() else target.parts) + parts
            current = root if target.is_absolute() else current
        else:
            current = candidate
    raise LabError("%s: too many symlinks inside %s" % (path, root))


def _publish(built: Path, target: Path) -> None:
    """Move a finished build into the cache in one step; a concurrent build of the same thing may have won."""
    try:
        os.rename(built, target)
    except OSError:
        if not target.exists():
            raise
