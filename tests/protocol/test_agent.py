# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""agent/nixie-agent under busybox sh (busybox wget/ip and no blkid, as in the lab's initramfs), dash and bash
(curl, iproute2, util-linux), reporting to the real HTTP server on 127.0.0.1.

Only the inputs are faked, through the agent's environment overrides: the kernel command line, sysfs,
/etc and /dev (regular files with real filesystem signatures), and the root of /root/.ssh.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
import time

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.events import EventLog
from ansible_collections.nixie.provision.plugins.module_utils._bootd.io.http import BootState, Installer, make_app, start_http
from ansible_collections.nixie.provision.plugins.module_utils._bootd.model import Host
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.table import HostTable

AGENT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "agent", "nixie-agent")
MAC = "52:54:00:aa:00:01"
SECOND_MAC = "52:54:00:aa:00:0b"
DEPLOYER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ7n8yY9tDm3rPsn0pO3m2b3QH7O0Y1pFq3u1cJ3B0Zx deployer@contrôleur"
BUSYBOX_APPLETS = ("sh", "wget", "ip", "awk", "sed", "tr", "cat", "grep", "head", "mktemp", "rm", "mkdir", "chmod",
                   "touch", "sleep", "dd", "od", "timeout", "readlink", "tail", "sort")
# Real contents: /proc's of this machine's (a 2-CPU AMD EPYC guest) and a lab VM's DMI (QEMU's q35 machine).
CPUINFO = "".join("processor\t: %d\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC \n"
                  "cpu cores\t: 2\nflags\t\t: fpu vme de pse\n\n" % index for index in range(2))
MEMINFO = "MemTotal:       24683584 kB\nMemFree:        20000000 kB\nMemAvailable:   22000000 kB\n"
# VPD page 0x80 as libata makes it for a SATA disk: device type, page code, length, then the serial padded with blanks.
VPD_SERIAL = b"\x00\x80\x00\x14" + b"     WD-WCC4N1234567"


class ServerThread:
    def __init__(self, state, port=0):
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(state, port, started), daemon=True)
        self.thread.start()
        assert started.wait(10)

    def _run(self, state, port, started):
        asyncio.set_event_loop(self.loop)
        self.runner = self.loop.run_until_complete(start_http(make_app(state), "127.0.0.1", port))
        self.port = self.runner.addresses[0][1]
        started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write(path, content, mode="w"):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as handle:
        handle.write(content)


@pytest.fixture
def machine(tmp_path):
    """A fake installer: two NICs plus lo and an InfiniBand port, two disks plus loop/sr, SSH and dropbear keys."""
    sysfs, etc, dev = tmp_path / "sys", tmp_path / "etc", tmp_path / "dev"
    for nic, address in (("lo", "00:00:00:00:00:00"), ("eth0", MAC), ("eth1", SECOND_MAC.upper()),
                         ("ib0", "80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:0b:0c")):
        write(sysfs / "class" / "net" / nic / "address", address + "\n")
    # eth0 as this machine's virtio NIC shows it (speed -1: unknown), eth1 an e1000e at 1 Gb/s without carrier; lo and ib0
    # have no device here: no NIC of the hardware report.
    write(sysfs / "devices" / "pci0000:00" / "0000:00:03.0" / "virtio2" / "uevent", "DRIVER=virtio_net\n")
    write(sysfs / "bus" / "virtio" / "drivers" / "virtio_net" / "uevent", "")
    (sysfs / "devices" / "pci0000:00" / "0000:00:03.0" / "virtio2" / "driver").symlink_to("../../../../bus/virtio/drivers/virtio_net")
    (sysfs / "class" / "net" / "eth0" / "device").symlink_to("../../../devices/pci0000:00/0000:00:03.0/virtio2")
    write(sysfs / "class" / "net" / "eth0" / "carrier", "1\n")
    write(sysfs / "class" / "net" / "eth0" / "speed", "-1\n")
    write(sysfs / "devices" / "pci0000:00" / "0000:00:19.0" / "uevent", "DRIVER=e1000e\n")
    write(sysfs / "bus" / "pci" / "drivers" / "e1000e" / "uevent", "")
    (sysfs / "devices" / "pci0000:00" / "0000:00:19.0" / "driver").symlink_to("../../../bus/pci/drivers/e1000e")
    (sysfs / "class" / "net" / "eth1" / "device").symlink_to("../../../devices/pci0000:00/0000:00:19.0")
    write(sysfs / "class" / "net" / "eth1" / "carrier", "0\n")
    write(sysfs / "class" / "net" / "eth1" / "speed", "1000\n")
    for cpu in range(2):
        write(sysfs / "devices" / "system" / "cpu" / ("cpu%d" % cpu) / "topology" / "physical_package_id", "0\n")
        write(sysfs / "devices" / "system" / "cpu" / ("cpu%d" % cpu) / "topology" / "core_id", "%d\n" % cpu)
    write(sysfs / "devices" / "system" / "cpu" / "online", "0-1\n")
    write(sysfs / "class" / "dmi" / "id" / "sys_vendor", "QEMU\n")
    write(sysfs / "class" / "dmi" / "id" / "product_name", "Standard PC (Q35 + ICH9, 2009)\n")
    write(sysfs / "class" / "dmi" / "id" / "product_serial", "\n")
    write(tmp_path / "proc" / "cpuinfo", CPUINFO)
    write(tmp_path / "proc" / "meminfo", MEMINFO)
    write(sysfs / "block" / "vda" / "size", "16777216\n")
    write(sysfs / "block" / "vda" / "queue" / "rotational", "1\n")
    # As in sysfs: the disk's device is a link into the PCI device tree, which its by-path name comes from.
    write(sysfs / "devices" / "pci0000:00" / "0000:00:04.0" / "virtio1" / "model", "QEMU HARDDISK   \n")
    (sysfs / "block" / "vda" / "device").symlink_to("../../devices/pci0000:00/0000:00:04.0/virtio1")
    write(sysfs / "block" / "vda" / "serial", "nixie system \n")
    write(sysfs / "block" / "vda" / "vda1" / "partition", "1\n")
    write(sysfs / "block" / "vda" / "vda1" / "size", "2048\n")
    write(sysfs / "block" / "vdb" / "size", "2097152\n")
    write(sysfs / "block" / "vdb" / "queue" / "rotational", "0\n")
    write(sysfs / "block" / "vdb" / "device" / "vpd_pg80", VPD_SERIAL, "wb")
    write(sysfs / "block" / "vdb" / "device" / "wwid", "naa.50014ee2b5a1c3d4\n")
    write(sysfs / "block" / "loop0" / "size", "100\n")
    write(sysfs / "block" / "sr0" / "size", "100\n")
    dev.mkdir()
    # vda1 carries a real ext4 signature; vda and vdb are blank.
    write(dev / "vda1", b"\0" * (2 * 1024 * 1024), "wb")
    subprocess.run(["mkfs.ext4", "-q", "-F", str(dev / "vda1")], check=True, capture_output=True)
    write(dev / "vda", b"\0" * 65536, "wb")
    write(dev / "vdb", b"\0" * 65536, "wb")
    (etc / "ssh").mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@installer",
                    "-f", str(etc / "ssh" / "ssh_host_ed25519_key")], check=True)
    (etc / "dropbear").mkdir()
    subprocess.run(["dropbearkey", "-t", "ed25519", "-f", str(etc / "dropbear" / "dropbear_ed25519_host_key")],
                   check=True, capture_output=True)
    dropbear = subprocess.run(["dropbearkey", "-y", "-f", str(etc / "dropbear" / "dropbear_ed25519_host_key")],
                              check=True, capture_output=True, text=True).stdout
    write(etc / "os-release", 'NAME=NixOS\nID=nixos\nVARIANT_ID=installer\n# a comment\n'
                              'PRETTY_NAME="NixOS 24.11 (Vicuña) \\"x\\" \\\\"\nBAD-KEY=1\nVERSION_ID=\'24.11\'\n')
    return {
        "sysfs": sysfs, "etc": etc, "dev": dev, "proc": tmp_path / "proc", "root": tmp_path / "root", "cmdline": tmp_path / "cmdline",
        "ssh_key": (etc / "ssh" / "ssh_host_ed25519_key.pub").read_text().strip(),
        "dropbear_key": next(line for line in dropbear.splitlines() if line.startswith("ssh-ed25519")),
        "tmp": tmp_path,
    }


@pytest.fixture
def state(tmp_path):
    table = HostTable([Host("nixie-01", MAC)])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    events = EventLog(str(run_dir), table)
    kernel = tmp_path / "kernel"
    kernel.write_bytes(b"k")
    boot_state = BootState(table=table, installer=Installer(str(kernel), str(kernel), "init=/x/init"), ipxe_dir=str(tmp_path),
                           authorized_key=DEPLOYER_KEY, events=events, base_urls=["http://127.0.0.1:0"],
                           controller_secret="not-used-by-the-agent")
    yield boot_state
    events.close()


def shell_command(shell, machine):
    """The command line and PATH for running the agent under ``shell``."""
    if shell == "busybox":
        # Only busybox applets (and dropbearkey, as in the lab's installer): no curl, no iproute2.
        bin_dir = machine["tmp"] / "busybox-bin"
        bin_dir.mkdir(exist_ok=True)
        for applet in BUSYBOX_APPLETS:
            if not (bin_dir / applet).exists():
                (bin_dir / applet).symlink_to(shutil.which("busybox"))
        if not (bin_dir / "dropbearkey").exists():
            (bin_dir / "dropbearkey").symlink_to(shutil.which("dropbearkey"))
        return [shutil.which("busybox"), "sh", AGENT], str(bin_dir)
    path = os.pathsep.join([os.path.dirname(shutil.which("curl")), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
    return [shutil.which(shell), AGENT], path


def start_agent(shell, machine, api, token):
    write(machine["cmdline"], "BOOT_IMAGE=/bzImage init=/x/init nixie.api=%s nixie.token=%s quiet\n" % (api, token))
    command, path = shell_command(shell, machine)
    env = {"PATH": path, "NIXIE_CMDLINE": str(machine["cmdline"]), "NIXIE_ROOT": str(machine["root"]),
           "NIXIE_SYSFS": str(machine["sysfs"]), "NIXIE_ETC": str(machine["etc"]), "NIXIE_DEV": str(machine["dev"]),
           "NIXIE_PROC": str(machine["proc"])}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def check_report(state, machine, links=None):
    entry = state.table.entry(MAC)
    assert entry["last_event"]["step"] == "phone_home"
    report = entry["report"]
    assert report["macs"] == [MAC, SECOND_MAC]
    assert report["ip"] == "127.0.0.1" and report["source_ip"] == "127.0.0.1"
    assert sorted(report["ssh_host_keys"]) == sorted([machine["ssh_key"], machine["dropbear_key"]])
    assert report["disks"] == [
        {"name": "vda", "size_bytes": 16777216 * 512, "model": "QEMU HARDDISK", "has_partitions": True, "has_filesystem": True,
         "by_id": ["virtio-nixie_system"], "by_path": ["pci-0000:00:04.0"], "serial": "nixie system", "wwn": None, "rotational": True},
        {"name": "vdb", "size_bytes": 2097152 * 512, "model": "", "has_partitions": False, "has_filesystem": False, "by_id": [], "by_path": [],
         "serial": "WD-WCC4N1234567", "wwn": "0x50014ee2b5a1c3d4", "rotational": False},
    ] if links is None else links
    assert report["hardware"] == {
        "cpu": {"model": "AMD EPYC", "cores": 2, "threads": 2},
        "memory_bytes": 24683584 * 1024,
        "dmi": {"vendor": "QEMU", "product": "Standard PC (Q35 + ICH9, 2009)", "serial": None},
        "nics": [{"name": "eth0", "mac": MAC, "link": True, "speed_mbps": None, "driver": "virtio_net"},
                 {"name": "eth1", "mac": SECOND_MAC, "link": False, "speed_mbps": 1000, "driver": "e1000e"}],
    }
    assert report["os_release"] == {"NAME": "NixOS", "ID": "nixos", "VARIANT_ID": "installer", "VERSION_ID": "24.11",
                                    "PRETTY_NAME": 'NixOS 24.11 (Vicuña) \\"x\\" \\\\'}
    keys = machine["root"] / "root" / ".ssh" / "authorized_keys"
    assert keys.read_text(encoding="utf-8") == DEPLOYER_KEY + "\n"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize("shell", ["busybox", "dash", "bash"])
def test_agent_reports_and_installs_key(shell, machine, state):
    server = ServerThread(state)
    try:
        state.base_urls = ["http://127.0.0.1:%d" % server.port]
        token = state.table.tokens.mint(MAC, "127.0.0.1")
        agent = start_agent(shell, machine, "http://127.0.0.1:%d/api/v1" % server.port, token)
        try:
            out, err = agent.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
            out, err = agent.communicate()
        assert agent.returncode == 0, err
        check_report(state, machine)
        # A second run (systemd restarting it) re-reports from the same address and does not duplicate the key.
        agent = start_agent(shell, machine, "http://127.0.0.1:%d/api/v1" % server.port, token)
        assert agent.wait(timeout=60) == 0
        check_report(state, machine)
    finally:
        server.stop()


@pytest.mark.parametrize("shell", ["busybox", "bash"])
def test_agent_retries_until_the_server_comes_up(shell, machine, state):
    port = free_port()
    token = state.table.tokens.mint(MAC, "127.0.0.1")
    started = time.monotonic()
    agent = start_agent(shell, machine, "http://127.0.0.1:%d/api/v1" % port, token)
    time.sleep(2.5)
    assert agent.poll() is None, "the agent must keep trying while the server is down"
    server = ServerThread(state, port=port)
    try:
        out, err = agent.communicate(timeout=30)
        assert agent.returncode == 0, err
        assert time.monotonic() - started >= 2.5
        check_report(state, machine)
    finally:
        server.stop()


@pytest.mark.parametrize("shell", ["busybox", "dash"])
def test_agent_reports_udev_disk_links_where_udev_made_them(shell, machine, state):
    """An installer with udev (NixOS's) has /dev/disk/by-id and by-path: those are reported as they are, not guessed from sysfs."""
    for directory, link, disk in (("by-id", "ata-QEMU_HARDDISK_QM00002", "vdb"), ("by-id", "wwn-0x5000c500a1b2c3d4", "vdb"),
                                  ("by-path", "pci-0000:00:1f.2-ata-2.0", "vdb"), ("by-id", "virtio-nixie_system-part1", "vda1")):
        (machine["dev"] / "disk" / directory).mkdir(parents=True, exist_ok=True)
        (machine["dev"] / "disk" / directory / link).symlink_to("../../%s" % disk)
    server = ServerThread(state)
    try:
        token = state.table.tokens.mint(MAC, "127.0.0.1")
        agent = start_agent(shell, machine, "http://127.0.0.1:%d/api/v1" % server.port, token)
        assert agent.wait(timeout=30) == 0, agent.communicate()[1]
        disks = state.table.entry(MAC)["report"]["disks"]
        assert [(disk["name"], disk["by_id"], disk["by_path"]) for disk in disks] == [
            ("vda", [], []), ("vdb", ["ata-QEMU_HARDDISK_QM00002", "wwn-0x5000c500a1b2c3d4"], ["pci-0000:00:1f.2-ata-2.0"])]
    finally:
        server.stop()


def test_agent_without_nixie_parameters_exits_2(machine):
    write(machine["cmdline"], "BOOT_IMAGE=/bzImage quiet\n")
    command, path = shell_command("busybox", machine)
    done = subprocess.run(command, env={"PATH": path, "NIXIE_CMDLINE": str(machine["cmdline"])},
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "not booted by Nixie" in done.stderr


def test_agent_script_is_posix_sh_and_executable():
    with open(AGENT, encoding="utf-8") as handle:
        assert handle.readline() == "#!/bin/sh\n"
    assert os.access(AGENT, os.X_OK)
    if shutil.which("shellcheck"):
        done = subprocess.run(["shellcheck", "-s", "sh", AGENT], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout


def test_the_agent_script_speaks_the_contract():
    """The agent is shell, so it cannot import the contract: its spelling of each name is read against it."""
    with open(AGENT, encoding="utf-8") as handle:
        script = handle.read()
    assert "api=$(cmdline_value %s)" % contract.KERNEL_PARAM_API in script
    assert "token=$(cmdline_value %s)" % contract.KERNEL_PARAM_TOKEN in script
    assert contract.PHONE_HOME_ROUTE.startswith(contract.API_ROOT + "/")
    assert 'url="$api%s"' % contract.PHONE_HOME_ROUTE[len(contract.API_ROOT):] in script
    assert "Authorization: Bearer $token" in script
    report = re.search(r"printf '(\{\"macs\".*)\\n'", script).group(1)
    assert re.findall(r'"([a-z_]+)":', report) == list(contract.REPORT_FIELDS)
    disk = re.search(r"printf '%s(\{\"name\".*?\})'", script).group(1)
    assert re.findall(r'"([a-z_]+)":', disk) == list(contract.DISK_FIELDS)
    for function, fields in (("gather_hardware", contract.HARDWARE_FIELDS), ("gather_cpu", contract.CPU_FIELDS),
                             ("gather_dmi", contract.DMI_FIELDS), ("gather_nics", contract.NIC_FIELDS)):
        body = re.search(r"\n%s\(\) \{\n(.*?)\n\}\n" % function, script, re.S).group(1)
        assert re.findall(r'"([a-z_]+)":', re.search(r"printf '(?:%s)?(\{.*?\})'", body).group(1)) == list(fields), function
    assert 'index(answer, "\\"%s\\"")' % contract.ANSWER_FIELD in script
