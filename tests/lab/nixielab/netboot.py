"""Everything the collection's netboot playbook needs in the lab: the test installer with the real nixie agent
inside, built by the real `nix` from the nixpkgs-free fixture flake, a deployer key, and the inventory."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
from pathlib import Path

from .installer import Installer, append_cpio
from .machine import Machine
from .net import LabNetwork
from .playbook import run_playbook, write_inventory
from .processes import REPO_ROOT

AGENT = REPO_ROOT / "agent" / "nixie-agent"
NETBOOT_PLAYBOOK = REPO_ROOT / "playbooks" / "netboot.yml"
FIXTURE_FLAKE_HELPER = REPO_ROOT / "tests" / "fixtures" / "flake-installer" / "prepare.py"


def fixture_flake_helper():
    # Loaded by path: its folder name (flake-installer) is not a Python package name.
    spec = importlib.util.spec_from_file_location("flake_installer_prepare", FIXTURE_FLAKE_HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclasses.dataclass
class NetbootRun:
    """One run of the netboot playbook: where its files are and how it was called."""

    directory: Path
    inventory: Path
    key: Path
    environment: dict
    extra_vars: dict

    @property
    def run_dir(self) -> Path:
        return Path(self.extra_vars["nixie_run_dir"])

    @property
    def facts_dir(self) -> Path:
        return self.directory / "facts"

    def facts(self, host: str) -> dict:
        """The facts Ansible's jsonfile cache kept for `host` (ansible-core 2.19 names it s1_<host> and wraps the JSON)."""
        (path,) = list(self.facts_dir.glob("*_%s" % host)) or [self.facts_dir / host]
        data = json.loads(path.read_text())
        return json.loads(data["__payload__"]) if "__payload__" in data else data

    def events(self) -> list[dict]:
        return [json.loads(line) for line in (self.run_dir / "events.jsonl").read_text().splitlines()]


def prepare(lab: LabNetwork, installer: Installer, machines: list[Machine], directory: Path, keep_server: bool = False) -> NetbootRun:
    """Write the installer flake, key and inventory for `machines` into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    initrd = append_cpio(installer.initrd, {"/etc/nixie/hooks.d/50-nixie-agent": AGENT}, directory / "initrd.gz")
    flake_helper = fixture_flake_helper()
    flake = flake_helper.materialise(directory / "flake", installer.kernel, initrd, installer.cmdline)
    key = directory / "deployer"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deployer@nixie-lab", "-f", str(key)], check=True)
    inventory = write_inventory(directory, machines)
    with inventory.open("a", encoding="utf-8") as handle:
        handle.write("flake: %s\n" % flake)
    environment = dict(flake_helper.offline_nix_env(directory / "nix-conf"),
                       ANSIBLE_CACHE_PLUGIN="jsonfile", ANSIBLE_CACHE_PLUGIN_CONNECTION=str(directory / "facts"))
    extra_vars = {"nixie_interface": lab.ctl_if, "nixie_run_dir": str(directory / "run"), "nixie_authorized_key_file": str(key) + ".pub",
                  "nixie_agent_timeout": 300, "nixie_keep_server": keep_server}
    return NetbootRun(directory, inventory, key, environment, extra_vars)


def run(lab: LabNetwork, netboot: NetbootRun, timeout: float = 420) -> str:
    """Run the netboot playbook in the controller namespace; return its output."""
    return run_playbook(lab, NETBOOT_PLAYBOOK, netboot.inventory, extra_vars=netboot.extra_vars, timeout=timeout,
                        environment=netboot.environment).stdout


def ssh(lab: LabNetwork, netboot: NetbootRun, known_hosts: Path, address: str, command: str) -> subprocess.CompletedProcess:
    """Run `command` as root on `address` from the controller, trusting only the host keys in `known_hosts`."""
    return lab.run_ctl(["ssh", "-i", str(netboot.key), "-o", "UserKnownHostsFile=%s" % known_hosts, "-o", "StrictHostKeyChecking=yes",
                        "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "root@%s" % address, command],
                       capture_output=True, text=True, timeout=60)
