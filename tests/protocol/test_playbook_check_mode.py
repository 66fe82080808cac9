"""ansible-playbook nixie.provision.provision (and .netboot) --check in the lab's controller namespace, against hosts that do not
answer (no VM runs): it must exit 0 and say, host by host, what it would do, without starting anything.

The installer is the nixpkgs-free fixture flake evaluated by an offline Nix, so the check is as a user's would be
before any earlier run built the installer."""

import importlib.util
import json
import os
import subprocess
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


@pytest.mark.parametrize("playbook", ["nixie.provision.provision", "nixie.provision.netboot"])
def test_check_mode_reports_each_host_and_exits_0(tmp_path, playbook):
    prepare = _prepare()
    flake = prepare.materialise(tmp_path / "flake", b"kernel", b"initrd")
    (tmp_path / "hosts.json").write_text(json.dumps({name: {"mac_address": mac} for name, mac in HOSTS.items()}))
    inventory = tmp_path / "nixie.yml"
    inventory.write_text("plugin: nixie.provision.hosts\npath: hosts.json\nflake: %s\n" % flake)
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    run_dir = tmp_path / "run"
    with LabNetwork(site_dhcp=False) as lab:
        argv, env = playbook_command(lab, playbook, inventory, environment=prepare.offline_nix_env(tmp_path / "nix-conf"),
                                     extra_vars={"nixie_interface": lab.ctl_if, "nixie_run_dir": str(run_dir),
                                                 "nixie_ssh_private_key": str(key), "nixie_status_timeout": 5})
        done = subprocess.run(argv + ["--check"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "would build the installer /nix/store/" in output and "start the boot server on %s for nixie-01, nixie-02" % lab.ctl_if in output
    for name, mac in HOSTS.items():
        assert "check mode: %s (%s) would be powered on (wol)" % (name, mac) in output, output
        if playbook == "nixie.provision.provision":
            assert "check mode: would install %s#%s on %s" % (flake, name, name) in output
            assert '"action": "netboot (check mode: nothing done)"' in output
    assert "failed=0" in output and "unreachable=0" in output
    assert not (run_dir / "server.pid").exists() and not (run_dir / "events.jsonl").exists()
