"""The test installer boots (straight from QEMU: network boot needs Nixie's boot server), gets a site DHCP lease,
runs its hooks and serves SSH with a host key of its own, without touching the machine's disk."""

from __future__ import annotations

import subprocess

import pytest

from nixielab import append_cpio
from nixielab.installer import cpio_members

pytestmark = pytest.mark.lab

BOOT_TIMEOUT = 90  # ~15 s measured from QEMU start to "ready" under TCG
HOOK = b"#!/bin/sh\necho \"NIXIELAB-HOOK ran for $NIXIELAB_MAC at $NIXIELAB_IP\"\n"


def test_installer_boots_runs_hooks_and_accepts_ssh(lab, installer):
    key = lab.run_dir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lab", "-f", str(key)], check=True)
    hook = lab.run_dir / "10-hello"
    hook.write_bytes(HOOK)
    hook.chmod(0o755)
    initrd = append_cpio(installer.initrd, {"/root/.ssh/authorized_keys": key.with_suffix(".pub").read_bytes(),
                                            "/etc/nixie/hooks.d/10-hello": hook}, lab.run_dir / "initrd.gz")
    members = cpio_members(initrd.read_bytes())
    assert members["etc/nixie/hooks.d/10-hello"] & 0o777 == 0o755 and members["root"] & 0o777 == 0o700

    machine = lab.add_machine("inst", "52:54:00:51:00:01", kernel=installer.kernel, initrd=initrd, append=installer.cmdline,
                              prefill=True, disk_size="256M")
    machine.prepare()
    disk_before = machine.disk_sha256()
    machine.start()
    machine.wait_for_serial(r"NIXIELAB: ready", BOOT_TIMEOUT)

    address = machine.wait_for_serial(r"NIXIELAB: dhcp ok (\S+)", 0).group(1)
    assert str(lab.site_dhcp.leases()[machine.mac]) == address
    assert "NIXIELAB-HOOK ran for %s at %s" % (machine.mac, address) in machine.serial_text()
    host_key = machine.wait_for_serial(r"NIXIELAB: hostkey (ssh-ed25519 \S+)", 0).group(1)
    known_hosts = lab.run_dir / "known_hosts"
    known_hosts.write_text("%s %s\n" % (address, host_key))
    ssh = lab.run_ctl(["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                       "-o", "UserKnownHostsFile=%s" % known_hosts, "-o", "ConnectTimeout=10",
                       "root@%s" % address, "uname -r; id -u"], capture_output=True, text=True, timeout=60)
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout.split() == [installer.kernel_version, "0"]

    machine.stop()
    assert machine.disk_sha256() == disk_before
