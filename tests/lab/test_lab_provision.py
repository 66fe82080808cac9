"""The whole mission in the lab: three powered-off machines, the collection's provision playbook, Nixie's boot server,
the real agent, a recording stand-in for nixos-anywhere first on PATH, and real disk boots afterwards.

nixie-01 (SeaBIOS, network first in its boot order) and nixie-02 (OVMF with EDK2's own PXE client, disk first as a UEFI
machine is once its OS registered a boot entry) end `installed` with their new, pinned host keys; nixie-01's network
boot after the install is told to boot locally. nixie-03's disk holds data: it is refused and its disk stays
byte-identical. A rerun changes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from nixielab import netboot
from nixielab.installed import build_installed_image
from nixielab.playbook import run_playbook
from nixielab.processes import REPO_ROOT

pytestmark = pytest.mark.lab

PROVISION_PLAYBOOK = REPO_ROOT / "playbooks" / "provision.yml"
STAND_IN = REPO_ROOT / "tests" / "lab" / "nixielab" / "files" / "nixos-anywhere"


def _nix_eval_toplevel(run: netboot.NetbootRun, flake: str, host: str) -> str:
    return subprocess.run(["nix", "--extra-experimental-features", "nix-command flakes", "eval", "--raw",
                           "%s#nixosConfigurations.%s.config.system.build.toplevel.outPath" % (flake, host)],
                          env=dict(run.environment, PATH="/usr/bin:/bin"), capture_output=True, text=True, check=True).stdout


def test_provision_three_machines_end_to_end(lab, installer, tmp_path):
    bios = lab.add_machine("nixie-01", "52:54:00:5e:00:01", firmware="bios", nic="e1000")
    uefi = lab.add_machine("nixie-02", "52:54:00:5e:00:02", firmware="uefi", nic="virtio-native", boot_order="disk-first")
    full = lab.add_machine("nixie-03", "52:54:00:5e:00:03", firmware="bios", nic="e1000", prefill=True)
    lab.start_power_daemon()
    full.prepare()
    full_disk_before = full.disk_sha256()

    run = netboot.prepare(lab, installer, [bios, uefi, full], tmp_path)
    flake = next(line.split(": ", 1)[1] for line in run.inventory.read_text().splitlines() if line.startswith("flake: "))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nixos-anywhere").symlink_to(STAND_IN)
    stand_in_log = tmp_path / "nixos-anywhere.jsonl"
    environment = dict(run.environment, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), NIXIE_STANDIN_LOG=str(stand_in_log),
                       NIXIE_STANDIN_IMAGE=str(build_installed_image(installer).path))
    extra_vars = dict(run.extra_vars, nixie_ssh_private_key=str(run.key), nixie_batch_size=2, nixie_boot_timeout=420)

    first = run_playbook(lab, PROVISION_PLAYBOOK, run.inventory, extra_vars=extra_vars, environment=environment,
                         timeout=1500, check=False)
    output = first.stdout
    print(output[-6000:])
    assert first.returncode != 0, "nixie-03 must fail: its disk holds data"
    assert "refusing to install nixie-03: vda (2.0 GiB" in output and "holds partitions" in output
    recap = {line.split()[0]: line for line in output.splitlines() if line.startswith("nixie-0") and "failed=" in line}
    assert "failed=0" in recap["nixie-01"] and "failed=0" in recap["nixie-02"] and "failed=1" in recap["nixie-03"], recap

    leases = lab.site_dhcp.leases()
    records = [json.loads(line) for line in stand_in_log.read_text().splitlines()]
    assert sorted(record["argv"][2] for record in records) == ["%s#nixie-01" % flake, "%s#nixie-02" % flake], records
    for record in records:
        host = record["argv"][2].rsplit("#", 1)[1]
        machine = {"nixie-01": bios, "nixie-02": uefi}[host]
        assert record["argv"][1:] == [
            "--flake", "%s#%s" % (flake, host), "--target-host", "root@%s" % leases[machine.mac], "-i", str(run.key),
            "--phases", "disko,install,reboot", "--extra-files", str(run.run_dir / host / "extra-files"), "--no-substitute-on-destination",
        ]

    known_hosts = tmp_path / "known_hosts"
    for machine in (bios, uefi):
        expected = _nix_eval_toplevel(run, flake, machine.name)
        machine.wait_for_serial(r"NIXIELAB: installed " + expected, timeout=5)
        answer = lab.run_ctl(["ssh", "-i", str(run.key), "-o", "UserKnownHostsFile=%s" % known_hosts, "-o", "StrictHostKeyChecking=yes",
                              "-o", "HostKeyAlias=%s" % machine.name, "-o", "BatchMode=yes", "root@%s" % leases[machine.mac],
                              "cat /etc/os-release; readlink /run/current-system"], capture_output=True, text=True, timeout=60)
        assert answer.returncode == 0, answer.stderr
        assert "ID=nixos" in answer.stdout and "VARIANT_ID" not in answer.stdout
        assert answer.stdout.strip().splitlines()[-1] == expected
        injected = (run.run_dir / machine.name / "extra-files" / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[1]
        assert injected in known_hosts.read_text()

    steps = {}
    for event in run.events():
        steps.setdefault(event["host"], []).append(event["step"])
    # nixie-01 keeps the network first: after its install, Nixie's answer sent it to its disk.
    after_install = steps["nixie-01"][steps["nixie-01"].index("marked_installed"):]
    assert "boot_local" in after_install, steps["nixie-01"]

    full.stop()
    assert full.disk_sha256() == full_disk_before

    rerun = run_playbook(lab, PROVISION_PLAYBOOK, run.inventory, extra_vars=extra_vars, environment=environment,
                         timeout=600, limit="nixie-01,nixie-02")
    for host in ("nixie-01", "nixie-02"):
        line = next(line for line in rerun.stdout.splitlines() if line.startswith(host) and "changed=" in line)
        assert "changed=0" in line and "failed=0" in line, line
        assert "%s is installed" % host in rerun.stdout
    assert len(stand_in_log.read_text().splitlines()) == len(records), "the rerun must not install again"
