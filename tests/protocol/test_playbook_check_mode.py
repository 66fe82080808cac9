"""ansible-playbook nixie.provision.provision (and .netboot) --check in the lab's controller namespace, against hosts that do not
answer (no VM runs): it must exit 0 and say, host by host, what it would do, without starting anything.

The installer is the nixpkgs-free fixture flake evaluated by an offline Nix, so the check is as a user's would be
before any earlier run built the installer."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from nixielab.net import LabNetwork
from nixielab.playbook import playbook_command

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

HOSTS = {"nixie-01": "52:54:00:c4:00:01", "nixie-02": "52:54:00:c4:00:02"}
FLAKE_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "flake-installer" / "prepare.py"


def _prepare():
    spec = importlib.util.spec_from_file_location("flake_installer_prepare", FLAKE_FIXTURE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_check(tmp_path, playbook, hosts, inventory_files=None):
    """ansible-playbook `playbook` --check on `hosts` ({name: mac}) in a fresh lab network; (lab, flake, exit code, output)."""
    prepare = _prepare()
    flake = prepare.materialise(tmp_path / "flake", b"kernel", b"initrd")
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    # Beside the inventory directory, whose every file Ansible reads as an inventory.
    (tmp_path / "hosts.json").write_text(json.dumps({name: {"mac_address": mac} for name, mac in hosts.items()}))
    (inventory / "nixie.yml").write_text("plugin: nixie.provision.hosts\npath: ../hosts.json\nflake: %s\n" % flake)
    for name, text in (inventory_files or {}).items():
        (inventory / name).write_text(text)
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with LabNetwork(site_dhcp=False) as lab:
        argv, env = playbook_command(lab, playbook, inventory, environment=prepare.offline_nix_env(tmp_path / "nix-conf"),
                                     extra_vars={"nixie_interface": lab.ctl_if, "nixie_run_dir": str(tmp_path / "run"),
                                                 "nixie_ssh_private_key": str(key), "nixie_status_timeout": 5})
        done = subprocess.run(argv + ["--check"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    return lab, flake, done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("playbook", ["nixie.provision.provision", "nixie.provision.netboot"])
def test_check_mode_reports_each_host_and_exits_0(tmp_path, playbook):
    lab, flake, returncode, output = _run_check(tmp_path, playbook, HOSTS)
    assert returncode == 0, output
    assert "would build the installer /nix/store/" in output and "start the boot server on %s for nixie-01, nixie-02\"" % lab.ctl_if in output
    for name, mac in HOSTS.items():
        assert "check mode: %s (%s) would be powered on (wol)" % (name, mac) in output, output
        if playbook == "nixie.provision.provision":
            assert "check mode: would install %s#%s on %s" % (flake, name, name) in output
            assert '"action": "netboot (check mode: nothing done)"' in output
    assert "failed=0" in output and "unreachable=0" in output
    assert not (tmp_path / "run" / "server.pid").exists() and not (tmp_path / "run" / "events.jsonl").exists()


def test_each_controller_serves_its_own_hosts_and_an_unreachable_one_fails_its_hosts_alone(tmp_path):
    # ctl-b is reached (a local connection: another inventory host, as an SSH one would be); ctl-c listens nowhere. The
    # flake has no nixie-04: its controller fails it before its evaluation would. nixie-arm64's system (aarch64-linux)
    # has no installer in the run: it fails alone, and its controller's server is for the others.
    hosts = dict(HOSTS, **{"nixie-03": "52:54:00:c4:00:03", "nixie-04": "52:54:00:c4:00:04", "nixie-arm64": "52:54:00:c4:00:05"})
    controllers = """all:
  hosts:
    ctl-b: {ansible_connection: local, ansible_python_interpreter: %s}
    ctl-c: {ansible_host: 127.0.0.1, ansible_port: 9, ansible_user: nobody}
nixie:
  hosts:
    nixie-02: {nixie_controller: ctl-b}
    nixie-03: {nixie_controller: ctl-b}
    nixie-04: {nixie_controller: ctl-c}
""" % sys.executable
    lab, flake, returncode, output = _run_check(tmp_path, "nixie.provision.provision", hosts, {"controllers.yml": controllers})
    assert returncode != 0, output
    assert "controller ctl-c of nixie-04 cannot be reached: " in output, output
    assert ("no installer for the system of nixie-arm64 (aarch64-linux): the run has installers for x86_64-linux only; give one in "
            "nixie_installers, such as") in output and "%s#installer-aarch64" % flake in output, output
    assert "start the boot server on %s for nixie-01\"" % lab.ctl_if in output, output
    assert "start the boot server on %s for nixie-02, nixie-03 on ctl-b\"" % lab.ctl_if in output, output
    for name in ("nixie-01", "nixie-02", "nixie-03"):
        assert "check mode: would install %s#%s on %s" % (flake, name, name) in output
    assert "check mode: would install %s#nixie-04" % flake not in output
    recap, dummy = json.JSONDecoder().raw_decode(output, output.index('"controllers": ') + len('"controllers": '))
    assert recap == {
        "localhost": {"nixie-01": "unreachable", "nixie-arm64": "failed"}, "ctl-b": {"nixie-02": "unreachable", "nixie-03": "unreachable"},
        "ctl-c": {"nixie-04": "failed"}}, output
    for name in ("nixie-04", "nixie-arm64"):
        assert re.search(name + r" +: ok=\d+ +changed=0 +unreachable=0 +failed=1", output), output
    for name in ("nixie-01", "nixie-02", "nixie-03"):
        assert re.search(name + r" +: ok=\d+ +changed=\d+ +unreachable=0 +failed=0", output), output
