"""Running Nixie's Ansible content against the lab: the inventory files and ansible-playbook in the controller namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .machine import Machine
from .net import LabNetwork
from .processes import REPO_ROOT, LabError, in_netns

PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
WAKE_PLAYBOOK = PLAYBOOKS / "wake.yml"
COLLECTIONS_PATH = REPO_ROOT / ".cache" / "collections"


def write_inventory(directory: Path, machines: list[Machine], settings: dict[str, dict] | None = None) -> Path:
    """Write `hosts.json` (the user's file Nixie reads; `settings` adds fields per host name, such as `power`, or whole
    hosts that are no machine) and `nixie.yml` (its inventory plugin's config) into `directory`; returns the path of
    nixie.yml, the inventory to pass to ansible-playbook."""
    hosts = {machine.name: {"mac_address": machine.mac} for machine in machines}
    for name, fields in (settings or {}).items():
        hosts.setdefault(name, {}).update(fields)
    (Path(directory) / "hosts.json").write_text(json.dumps(hosts, indent=2) + "\n", encoding="utf-8")
    inventory = Path(directory) / "nixie.yml"
    inventory.write_text("plugin: nixie.provision.hosts\npath: hosts.json\n", encoding="utf-8")
    return inventory


def playbook_command(lab: LabNetwork, playbook: Path, inventory: Path, extra_vars: dict | None = None,
                     environment: dict | None = None, limit: str | None = None) -> tuple[list[str], dict]:
    """The argv (in the controller namespace) and environment that run `playbook` against `inventory`."""
    # The ansible-playbook next to this interpreter: the venv's, which has the collection's requirements.
    argv = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory), str(playbook)]
    if extra_vars:
        argv += ["--extra-vars", json.dumps(extra_vars)]
    if limit:
        argv += ["--limit", limit]
    environment = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTIONS_PATH)),
                       ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0", **(environment or {}))
    return in_netns(lab.ctl_ns, argv), environment


def run_playbook(lab: LabNetwork, playbook: Path, inventory: Path, extra_vars: dict | None = None,
                 timeout: float = 180.0, environment: dict | None = None, *, check: bool = True,
                 limit: str | None = None) -> subprocess.CompletedProcess:
    """Run ansible-playbook in the controller namespace; LabError with its output when it fails, unless `check` is false."""
    argv, environment = playbook_command(lab, playbook, inventory, extra_vars, environment, limit)
    result = subprocess.run(argv, env=environment, cwd=lab.run_dir, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise LabError("ansible-playbook %s failed (exit %d):\n%s%s" % (playbook.name, result.returncode, result.stdout, result.stderr))
    return result
