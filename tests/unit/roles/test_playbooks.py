# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's playbooks and roles run by ansible-playbook up to the point where they would touch a machine:
an empty or broken inventory fails loudly, arguments are validated before anything runs, and role defaults that
depend on the inventory hold for a host list too. Nothing here reaches a network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
MAC = "52:54:00:12:00:01"


def _inventory(directory: Path, hosts, config: str = "plugin: nixie.provision.hosts\npath: hosts.json\n") -> Path:
    (directory / "hosts.json").write_text(hosts if isinstance(hosts, str) else json.dumps(hosts), encoding="utf-8")
    inventory = directory / "nixie.yml"
    inventory.write_text(config, encoding="utf-8")
    return inventory


def _play(directory: Path, tasks: list) -> Path:
    playbook = directory / "play.yml"
    playbook.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": tasks}]), encoding="utf-8")
    return playbook


def _run(playbook, inventory, *extra: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_LOCALHOST_WARNING="0")
    return subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(inventory), str(playbook), *extra], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("playbook, hosts, error", [
    ("nixie.provision.provision", {"localhost": {"mac_address": MAC}}, "hosts.json: host name 'localhost' is reserved by Ansible"),
    ("nixie.provision.provision", '{"nixie-01": ', "hosts.json: invalid JSON at line 1"),
    ("nixie.provision.provision", {}, "no Nixie inventory source (*nixie.yml) gave one"),
    ("nixie.provision.netboot", {"nixie-01": {"mac_address": "ff:ff:ff:ff:ff:ff"}},
     "hosts.json: host 'nixie-01': field 'mac_address': 'ff:ff:ff:ff:ff:ff' is the broadcast"),
])
def test_an_empty_or_broken_inventory_fails_the_playbook_with_its_error(tmp_path, playbook, hosts, error):
    done = _run(playbook, _inventory(tmp_path, hosts), cwd=tmp_path)
    assert done.returncode != 0, done.stdout
    assert "the group nixie has no host" in done.stdout and error in done.stdout, done.stdout + done.stderr


def test_the_provision_playbook_validates_its_arguments_before_any_task(tmp_path):
    done = _run("nixie.provision.provision", _inventory(tmp_path, {"nixie-01": {"mac_address": MAC}}), cwd=tmp_path)
    assert done.returncode != 0
    assert "Validating arguments against arg spec 'check'" in done.stdout, done.stdout
    assert "missing required arguments: nixie_flake, nixie_interface" in done.stdout, done.stdout
    assert "Check each host's state" not in done.stdout


@pytest.mark.parametrize("role, variables, missing", [
    # A default templated from nixie_flake would fail as "'nixie_flake' is undefined" instead.
    ("nixie.provision.netboot", {"nixie_mac": MAC, "nixie_interface": "eth0"}, "missing required arguments: nixie_flake"),
    ("nixie.provision.install", {"nixie_mac": MAC, "nixie_interface": "eth0", "nixie_flake": "/srv/fleet"},
     "missing required arguments: nixie_agent, nixie_ip"),
])
def test_roles_name_the_missing_arguments(tmp_path, role, variables, missing):
    playbook = _play(tmp_path, [{"ansible.builtin.include_role": {"name": role}, "vars": variables}])
    done = _run(playbook, "nixie-01,", cwd=tmp_path)
    assert done.returncode != 0
    assert missing in done.stdout, done.stdout


@pytest.mark.parametrize("host_list", [True, False])
def test_the_known_hosts_default_is_next_to_the_inventory_or_in_the_run_directory(tmp_path, host_list):
    (tmp_path / "inventory").mkdir()
    inventory = "nixie-01," if host_list else _inventory(tmp_path / "inventory", {"nixie-01": {"mac_address": MAC}})
    playbook = _play(tmp_path, [
        {"ansible.builtin.include_role": {"name": "nixie.provision.common", "public": True}},
        {"ansible.builtin.debug": {"msg": "known_hosts={{ nixie_known_hosts_file }}"}},
    ])
    done = _run(playbook, inventory, "-e", "nixie_run_dir=%s" % (tmp_path / "run"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout
    expected = tmp_path / "run" if host_list else tmp_path / "inventory"
    assert '"msg": "known_hosts=%s/known_hosts"' % expected in done.stdout, done.stdout
