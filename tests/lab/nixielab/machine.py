"""A lab machine: a QEMU/TCG virtual machine with real firmware, booting from the network first.

A Machine is a description plus files in its own directory (disk, UEFI variables, serial log,
pidfile, monitor socket), so any process can ask whether it runs, read its console or stop it,
whoever started it. Tests power machines on as Nixie does, through the power daemon (Wake-on-LAN) or a
BMC (nixielab.bmcd); only tests that are not about power or network boot (the test installer's) start QEMU directly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .processes import LabError, ProcessTracker, in_netns, run_checked, start_time, stop_pid, text_so_far, wait_gone

FIRMWARES = ("bios", "uefi", "uefi-arm64")
BOOT_ORDERS = ("network-first", "disk-first")
# e1000 and virtio carry QEMU's iPXE option ROM (ipxe-qemu); "virtio-native" drops the ROM so that
# OVMF's own EDK2 PXE client runs instead, the lab's stand-in for a vendor PXE ROM.
NICS = {"e1000": "e1000", "virtio": "virtio-net-pci", "virtio-native": "virtio-net-pci,romfile="}
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# uefi-arm64: QEMU's arm64 `virt` machine with AAVMF, EDK2 for arm64 (qemu-efi-aarch64).
AAVMF_CODE = Path("/usr/share/AAVMF/AAVMF_CODE.fd")
AAVMF_VARS = Path("/usr/share/AAVMF/AAVMF_VARS.fd")
UEFI_VARS = {"uefi": OVMF_VARS, "uefi-arm64": AAVMF_VARS}
# Each firmware's QEMU, machine type and CPU; cortex-a72 because TCG emulates `max`'s pointer authentication slowly.
PLATFORMS = {"bios": ("qemu-system-x86_64", "q35", None), "uefi": ("qemu-system-x86_64", "q35", None),
             "uefi-arm64": ("qemu-system-aarch64", "virt", "cortex-a72")}
MAC_PATTERN = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
PREFILL_LABEL = "nixielab-data"
PREFILL_SIZE_MIB = 64
DATA_DISK_SIZE = "128M"
DATA_DISK_SERIAL = "nixie-data"
# The kernel refuses unix socket paths longer than this (sun_path incl. the terminating NUL).
UNIX_PATH_MAX = 107


@dataclasses.dataclass
class Machine:  # pylint: disable=too-many-instance-attributes  # one field per QEMU knob, on purpose
    """One lab machine. `directory` holds its files; `tracker_dir` is where its QEMU process is recorded."""

    name: str
    mac: str
    tap: str
    netns: str
    directory: Path
    tracker_dir: Path
    firmware: str = "bios"
    nic: str = "e1000"
    memory_mib: int = 1024
    disk_size: str = "2G"
    prefill: bool = False
    # A second disk, filled like a prefilled one, with the serial DATA_DISK_SERIAL (so its by-id name is
    # virtio-<serial>): a data disk the disk layout does not name.
    data_disk: bool = False
    no_reboot: bool = False
    boot_order: str = "network-first"
    kernel: Path | None = None
    initrd: Path | None = None
    append: str | None = None
    # QEMU fw_cfg strings by name, e.g. {"opt/org.tianocore/IPv4PXESupport": "no"}: OVMF then drops its PXEv4
    # boot entry, so EDK2's PXEv6 comes first instead of ~77 s into the boot-order fallback.
    fw_cfg: dict[str, str] | None = None

    def __post_init__(self):
        self.mac = self.mac.lower()
        self.directory = Path(self.directory)
        self.tracker_dir = Path(self.tracker_dir)
        self.kernel = Path(self.kernel) if self.kernel else None
        self.initrd = Path(self.initrd) if self.initrd else None
        if not NAME_PATTERN.match(self.name):
            raise LabError("machine name %r: use lower-case letters, digits and '-', at most 31 characters" % self.name)
        if not MAC_PATTERN.match(self.mac):
            raise LabError("machine %s: MAC %r is not six colon-separated hex bytes" % (self.name, self.mac))
        if self.firmware not in FIRMWARES:
            raise LabError("machine %s: firmware %r is not one of %s" % (self.name, self.firmware, ", ".join(FIRMWARES)))
        if self.boot_order not in BOOT_ORDERS:
            raise LabError("machine %s: boot_order %r is not one of %s" % (self.name, self.boot_order, ", ".join(BOOT_ORDERS)))
        if self.nic not in NICS:
            raise LabError("machine %s: nic %r is not one of %s" % (self.name, self.nic, ", ".join(NICS)))
        if self.firmware == "uefi-arm64" and self.nic != "virtio-native":
            # QEMU's NIC option ROMs hold x86 iPXE drivers, which AAVMF cannot run.
            raise LabError("machine %s: an arm64 machine network-boots with nic virtio-native (AAVMF's own client)" % self.name)
        if self.firmware == "bios" and self.nic == "virtio-native" and self.kernel is None:
            raise LabError("machine %s: SeaBIOS cannot network-boot without an option ROM; use nic e1000 or virtio" % self.name)
        if len(str(self.monitor_path)) > UNIX_PATH_MAX:
            raise LabError("machine %s: monitor socket path %s is too long for a unix socket" % (self.name, self.monitor_path))
        self._process: subprocess.Popen | None = None

    # Files
    @property
    def disk_path(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def data_disk_path(self) -> Path:
        return self.directory / "data.qcow2"

    @property
    def vars_path(self) -> Path:
        """The machine's own UEFI variable store (its NVRAM): OVMF writes boot entries into it."""
        return self.directory / "OVMF_VARS.fd"

    @property
    def serial_path(self) -> Path:
        return self.directory / "serial.log"

    @property
    def qemu_log_path(self) -> Path:
        return self.directory / "qemu.log"

    @property
    def pid_path(self) -> Path:
        return self.directory / "qemu.pid"

    @property
    def monitor_path(self) -> Path:
        return self.directory / "monitor.sock"

    # Configuration round trip, for the power daemon's config file
    def to_config(self) -> dict:
        return {key: str(value) if isinstance(value, Path) else value for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_config(cls, config: dict) -> "Machine":
        return cls(**config)

    # Lifecycle
    def prepare(self) -> None:
        """Create the disk and the UEFI variable store unless they exist (they persist across power cycles)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.disk_path.exists():
            if self.prefill:
                self._create_prefilled_disk(self.disk_path, self.disk_size)
            else:
                run_checked(["qemu-img", "create", "-q", "-f", "qcow2", str(self.disk_path), self.disk_size])
        if self.data_disk and not self.data_disk_path.exists():
            self._create_prefilled_disk(self.data_disk_path, DATA_DISK_SIZE)
        if self.firmware in UEFI_VARS and not self.vars_path.exists():
            shutil.copyfile(UEFI_VARS[self.firmware], self.vars_path)

    def qemu_argv(self, boot_order: str | None = None) -> list[str]:
        """QEMU's command line; `boot_order` replaces the machine's own for this power-on (a BMC's one-time boot)."""
        nic_index, disk_index = (1, 2) if (boot_order or self.boot_order) == "network-first" else (2, 1)
        nic = "%s,netdev=net0,mac=%s,bootindex=%d" % (NICS[self.nic], self.mac, nic_index)
        qemu, machine_type, cpu = PLATFORMS[self.firmware]
        argv = [
            qemu, "-name", "%s,process=nxl-%s" % (self.name, self.name),
            "-accel", "tcg",  # /dev/kvm is absent or unusable where the lab runs
            "-machine", machine_type, *(["-cpu", cpu] if cpu else []), "-m", str(self.memory_mib), "-smp", "1",
            "-nodefaults", "-display", "none",  # no stray default NIC, CD-ROM or floppy to boot from
            "-chardev", "file,id=serial0,path=%s" % self.serial_path, "-serial", "chardev:serial0",
            "-monitor", "unix:%s,server=on,wait=off" % self.monitor_path,
            "-pidfile", str(self.pid_path),  # for people and tools outside the lab; the lab uses its records
            "-netdev", "tap,id=net0,ifname=%s,script=no,downscript=no" % self.tap, "-device", nic,
            # bootindex orders the firmware's boot list. network-first is a machine set up for network
            # provisioning; disk-first is a UEFI machine whose installed OS registered its boot entry first, as
            # NixOS's systemd-boot install does (a blank disk fails at once and the network comes next).
            "-drive", "if=none,id=disk0,format=qcow2,file=%s" % self.disk_path,
            "-device", "virtio-blk-pci,drive=disk0,bootindex=%d" % disk_index,
        ]
        if self.data_disk:
            argv += ["-drive", "if=none,id=disk1,format=qcow2,file=%s" % self.data_disk_path,
                     "-device", "virtio-blk-pci,drive=disk1,serial=%s" % DATA_DISK_SERIAL]
        if self.firmware in UEFI_VARS:
            code = OVMF_CODE if self.firmware == "uefi" else AAVMF_CODE
            argv += ["-drive", "if=pflash,format=raw,unit=0,readonly=on,file=%s" % code,
                     "-drive", "if=pflash,format=raw,unit=1,file=%s" % self.vars_path]
        for name, value in (self.fw_cfg or {}).items():
            argv += ["-fw_cfg", "name=%s,string=%s" % (name, value)]
        if self.no_reboot:
            argv.append("-no-reboot")
        if self.kernel is not None:
            argv += ["-kernel", str(self.kernel), "-initrd", str(self.initrd), "-append", self.append or ""]
        return argv

    def start(self, boot_order: str | None = None) -> None:
        """Power the machine on (start QEMU in the lab namespace), with `boot_order` for this power-on when given;
        an error if it already runs."""
        if self.running:
            raise LabError("machine %s is already running" % self.name)
        self.prepare()
        for stale in (self.pid_path, self.monitor_path):
            stale.unlink(missing_ok=True)
        with open(self.qemu_log_path, "ab") as qemu_log:
            self._process = ProcessTracker(self.tracker_dir).spawn(
                self._process_label, in_netns(self.netns, self.qemu_argv(boot_order)),
                stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int | None:
        """PID of the running QEMU process, None when the machine is off."""
        if self._process is not None:
            return self._process.pid if self._process.poll() is None else None
        # Started by another process (the power daemon): its record exists from the moment QEMU is
        # spawned, unlike QEMU's pidfile, which appears only once QEMU has initialised.
        for record in ProcessTracker(self.tracker_dir).records():
            if record["label"] == self._process_label:
                return record["pid"]
        return None

    @property
    def _process_label(self) -> str:
        return "qemu-%s" % self.name

    @property
    def running(self) -> bool:
        return self.pid is not None

    def reap(self) -> int | None:
        """For the process that started QEMU: its exit status once it has exited, else None."""
        if self._process is None or self._process.poll() is None:
            return None
        ProcessTracker(self.tracker_dir).forget(self._process.pid)
        status, self._process = self._process.returncode, None
        return status

    def monitor(self, command: str, timeout: float = 5.0) -> str:
        """Run a QEMU monitor (HMP) command and return its output.

        A QEMU that was just started (by the power daemon, or a BMC's glue) may not have made its socket yet, more so
        on a loaded host: the socket is waited for within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while not self.monitor_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            connection.connect(str(self.monitor_path))
            _read_until_prompt(connection)
            connection.sendall(command.encode() + b"\n")
            return _command_output(_read_until_prompt(connection))

    def powerdown(self) -> None:
        """Press the power button (ACPI): the guest decides how to shut down."""
        self.monitor("system_powerdown")

    def stop(self, timeout: float = 5.0) -> None:
        """Pull the plug: quit QEMU through its monitor, or kill it if the monitor does not answer."""
        pid = self.pid
        if pid is None:
            self.reap()
            return
        started = start_time(pid)
        try:
            self.monitor("quit", timeout)
        except OSError:
            pass  # monitor not up yet or gone: the signals below do the job
        if started is not None and not wait_gone(pid, started, timeout):
            stop_pid(pid, started)
        if self._process is not None:
            self._process.wait(timeout)
            self.reap()

    # Console
    def serial_text(self) -> str:
        return text_so_far(self.serial_path)

    def wait_for_serial(self, pattern: str, timeout: float) -> re.Match:
        """Wait until the serial console (of this power-on) matches the regular expression `pattern`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while (match := regex.search(self.serial_text())) is None:
            if time.monotonic() > deadline:
                tail = self.serial_text()[-1500:]
                raise LabError("machine %s: no %r on the serial console within %.0f s (running: %s); last output:\n%s"
                               % (self.name, pattern, timeout, self.running, tail))
            time.sleep(0.2)
        return match

    # Disk
    def disk_sha256(self, disk: Path | None = None) -> str:
        """SHA-256 of the disk (or of `disk`, such as data_disk_path) as the guest sees it (raw bytes), for data-safety
        checks; the machine must be off."""
        if self.running:
            raise LabError("machine %s: stop it before reading its disk" % self.name)
        digest = hashlib.sha256()
        with tempfile.TemporaryDirectory(dir=self.directory) as scratch:
            raw = Path(scratch) / "disk.raw"
            run_checked(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(disk or self.disk_path), str(raw)])
            with open(raw, "rb") as image:
                while chunk := image.read(1 << 20):
                    digest.update(chunk)
        return digest.hexdigest()

    def _create_prefilled_disk(self, path: Path, size: str) -> None:
        """A disk that looks used: a GPT with one ext4 partition holding a file of random data."""
        with tempfile.TemporaryDirectory(dir=self.directory) as scratch:
            raw = Path(scratch) / "disk.raw"
            content = Path(scratch) / "content"
            content.mkdir()
            (content / "NIXIELAB-DATA").write_bytes(("machine %s\n" % self.name).encode() + os.urandom(1 << 20))
            run_checked(["qemu-img", "create", "-q", "-f", "raw", str(raw), size])
            run_checked(["sfdisk", "--quiet", str(raw)],
                        input="label: gpt\nstart=2048, size=%dMiB, type=linux, name=%s\n" % (PREFILL_SIZE_MIB, PREFILL_LABEL))
            # The partition starts at sector 2048 (1 MiB); mke2fs writes straight into the image there.
            run_checked(["mke2fs", "-q", "-F", "-t", "ext4", "-L", PREFILL_LABEL, "-d", str(content),
                         "-E", "offset=%d" % (2048 * 512), str(raw), "%dM" % PREFILL_SIZE_MIB])
            run_checked(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)])


def _read_until_prompt(connection: socket.socket) -> str:
    """Read HMP output up to its next "(qemu) " prompt, or until QEMU closes the connection (after quit)."""
    received = b""
    while not received.endswith(b"(qemu) "):
        chunk = connection.recv(4096)
        if not chunk:
            break
        received += chunk
    return received.decode(errors="replace")


def _command_output(reply: str) -> str:
    """What an HMP command printed: its reply minus the terminal echo of the command line and the next prompt."""
    output = reply.partition("\r\n")[2]
    return output.removesuffix("(qemu) ").replace("\r\n", "\n")
