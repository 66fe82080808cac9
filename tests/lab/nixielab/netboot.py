"""Everything the collection's netboot playbook needs in the lab: the test installer with the real nixie agent
inside, built by the real `nix` from the nixpkgs-free fixture flake, a deployer key, and the inventory."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import selectors
import subprocess
import time
from pathlib import Path

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.events import read_events

from .bmcd import PASSWORD_ENV
from .installed import build_installed_image
from .installer import Installer, append_cpio
from .machine import Machine
from .net import LabNetwork
from .playbook import playbook_command, run_playbook, write_inventory
from .processes import REPO_ROOT

AGENT = REPO_ROOT / "agent" / "nixie-agent"
NETBOOT_PLAYBOOK = REPO_ROOT / "playbooks" / "netboot.yml"
PROVISION_PLAYBOOK = REPO_ROOT / "playbooks" / "provision.yml"
STAND_IN = REPO_ROOT / "tests" / "lab" / "nixielab" / "files" / "nixos-anywhere"
FIXTURE_FLAKE_HELPER = REPO_ROOT / "tests" / "fixtures" / "flake-installer" / "prepare.py"
# iPXE 2024-03 or later (bootstrap.sh fetches one): it runs autoexec.ipxe from beside the URL UEFI HTTP boot loaded it
# from, and boots a local UEFI disk itself. The lab's default, Debian 12's /usr/lib/ipxe, is from 2019 and does neither.
CURRENT_IPXE = REPO_ROOT / ".cache" / "ipxe-current" / "usr" / "lib" / "ipxe"


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

    def update_host(self, name: str, **fields) -> None:
        """Change host `name`'s fields in hosts.json, as a user editing the file between runs does."""
        path = self.inventory.with_name("hosts.json")
        hosts = json.loads(path.read_text(encoding="utf-8"))
        hosts[name].update(fields)
        path.write_text(json.dumps(hosts, indent=2) + "\n", encoding="utf-8")

    @property
    def stand_in_log(self) -> Path:
        return self.directory / "nixos-anywhere.jsonl"

    def stand_in_records(self) -> list[dict]:
        """What the stand-in nixos-anywhere recorded: one {"argv", "start", "pid", "ssh", "netns"} per call."""
        if not self.stand_in_log.exists():
            return []
        return [json.loads(line) for line in self.stand_in_log.read_text().splitlines()]

    @property
    def flake(self) -> str:
        return next(line.split(": ", 1)[1] for line in self.inventory.read_text().splitlines() if line.startswith("flake: "))

    def toplevel(self, attribute: str, build: str = "toplevel") -> str:
        """The store path of nixosConfigurations.<attribute>'s toplevel (or other config.system.build attribute, such as
        diskoScript) in the run's flake, as the real nix evaluates it."""
        return subprocess.run(["nix", "--extra-experimental-features", "nix-command flakes", "eval", "--raw",
                               "%s#nixosConfigurations.%s.config.system.build.%s.outPath" % (self.flake, attribute, build)],
                              env=dict(self.environment, PATH="/usr/bin:/bin"), capture_output=True, text=True, check=True).stdout

    def stand_in_hosts(self) -> list[str]:
        """The host of each stand-in call, from its --target-host root@<host alias>, in call order."""
        return [record["argv"][record["argv"].index("--target-host") + 1].split("@", 1)[1] for record in self.stand_in_records()]

    def pinning_ssh(self, host: str) -> str:
        """The ssh that nixos-anywhere must find first on its PATH for `host`: the one that pins the installer's host keys."""
        return str(self.run_dir / host / contract.HOST_INSTALLER_SSH / "ssh")

    def stand_in_command(self, host: str, address: str, attribute: str | None = None) -> list[str]:
        """The arguments Nixie must hand nixos-anywhere for `host` at `address`: the run's build, the host alias."""
        attribute = attribute or host
        return ["--store-paths", self.toplevel(attribute, "diskoScript"), self.toplevel(attribute), "--target-host", "root@%s" % host,
                "--ssh-option", "HostName=%s" % address, "-i", str(self.key), "--phases", "disko,install,reboot",
                "--extra-files", str(self.run_dir / host / "extra-files"), "--no-substitute-on-destination"]

    def events(self) -> list[dict]:
        """The boot server's events so far: none before it wrote any, and no line it is still writing."""
        return read_events(str(self.run_dir))


PRINTED_STATUS_URL = re.compile(r"status page: (http://\S+/\?secret=[\w-]+)")


def printed_status_url(playbook: subprocess.Popen, timeout: float = 600) -> tuple[str | None, str]:
    """The status page's URL as the running playbook `playbook` prints it (its stdout a pipe), and its output so far;
    None for the URL if the playbook ended, or `timeout` passed, first. The rest of the output is still the pipe's."""
    head = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(playbook.stdout.fileno(), selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(min(1.0, deadline - time.monotonic())):
                continue
            # Below the pipe's text buffer, which then holds nothing of what was read here.
            chunk = os.read(playbook.stdout.fileno(), 65536)
            if not chunk:
                break
            head += chunk
            found = PRINTED_STATUS_URL.search(head.decode("utf-8", "replace"))
            if found:
                return found.group(1), head.decode("utf-8", "replace")
    return None, head.decode("utf-8", "replace")


def prepare(lab: LabNetwork, installer: Installer, machines: list[Machine], directory: Path, keep_server: bool = False,
            hosts: dict[str, dict] | None = None) -> NetbootRun:
    """Write the installer flake, key and inventory for `machines` into `directory`.

    A machine with a BMC gets its `power` object in hosts.json, and ansible-playbook the BMC password in the
    environment variable that object names, as an operator would keep it out of the file. `hosts` adds hosts.json
    fields per machine name, or whole hosts that are no lab machine (a client namespace's MAC, say).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    initrd = append_cpio(installer.initrd, {"/etc/nixie/hooks.d/50-nixie-agent": AGENT}, directory / "initrd.gz")
    flake_helper = fixture_flake_helper()
    flake = flake_helper.materialise(directory / "flake", installer.kernel, initrd, installer.cmdline)
    key = directory / "deployer"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deployer@nixie-lab", "-f", str(key)], check=True)
    bmcs = [machine for machine in machines if machine.name in lab.bmc_drivers]
    settings = {machine.name: {"power": lab.bmcs.power(machine)} for machine in bmcs}
    for name, fields in (hosts or {}).items():
        settings.setdefault(name, {}).update(fields)
    inventory = write_inventory(directory, machines, settings)
    with inventory.open("a", encoding="utf-8") as handle:
        handle.write("flake: %s\n" % flake)
    environment = dict(flake_helper.offline_nix_env(directory / "nix-conf"),
                       ANSIBLE_CACHE_PLUGIN="jsonfile", ANSIBLE_CACHE_PLUGIN_CONNECTION=str(directory / "facts"))
    if bmcs:
        environment[PASSWORD_ENV] = lab.bmcs.password
    extra_vars = {"nixie_interface": lab.ctl_if, "nixie_run_dir": str(directory / "run"), "nixie_authorized_key_file": str(key) + ".pub",
                  "nixie_agent_timeout": 300, "nixie_keep_server": keep_server}
    return NetbootRun(directory, inventory, key, environment, extra_vars)


def with_stand_in(netboot: NetbootRun, installer: Installer) -> NetbootRun:
    """Put the recording stand-in nixos-anywhere first on PATH for the playbook, as the only difference from a real run."""
    bin_dir = netboot.directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "nixos-anywhere").exists():
        (bin_dir / "nixos-anywhere").symlink_to(STAND_IN)
    netboot.environment.update(PATH="%s:%s" % (bin_dir, os.environ["PATH"]), NIXIE_STANDIN_LOG=str(netboot.stand_in_log),
                               NIXIE_STANDIN_IMAGE=str(build_installed_image(installer).path))
    netboot.extra_vars.update(nixie_ssh_private_key=str(netboot.key), nixie_boot_timeout=420)
    return netboot


def provision(lab: LabNetwork, netboot: NetbootRun, *, limit: str | None = None, timeout: float = 1500,
              extra_vars: dict | None = None) -> subprocess.CompletedProcess:
    """Run the provision playbook in the controller namespace; its result, failed or not."""
    return run_playbook(lab, PROVISION_PLAYBOOK, netboot.inventory, extra_vars=dict(netboot.extra_vars, **(extra_vars or {})),
                        timeout=timeout, environment=netboot.environment, check=False, limit=limit)


def provision_command(lab: LabNetwork, netboot: NetbootRun) -> tuple[list[str], dict]:
    """The argv and environment of `provision`, for a test that acts while the playbook runs."""
    return playbook_command(lab, PROVISION_PLAYBOOK, netboot.inventory, netboot.extra_vars, netboot.environment)


def recap(output: str) -> dict[str, str]:
    """The PLAY RECAP line of each host."""
    return {line.split()[0]: line for line in output.splitlines() if " : ok=" in line and "failed=" in line}


def host_recap(output: str, host: str) -> dict:
    """The provision role's recap message of `host` (state, address, seconds per phase, ...), from the playbook's output."""
    opening = "ok: [%s] => {\n" % host
    for task in output.split("TASK [nixie.provision.provision : Recap]")[1:]:
        if opening in task:
            block = task.split(opening, 1)[1].split("\n}\n", 1)[0]
            return json.loads("{" + block + "}")["msg"]
    raise AssertionError("no recap of %s in the output" % host)


def run(lab: LabNetwork, netboot: NetbootRun, timeout: float = 420) -> str:
    """Run the netboot playbook in the controller namespace; return its output."""
    return run_playbook(lab, NETBOOT_PLAYBOOK, netboot.inventory, extra_vars=netboot.extra_vars, timeout=timeout,
                        environment=netboot.environment).stdout


def ssh(lab: LabNetwork, netboot: NetbootRun, known_hosts: Path, address: str, command: str) -> subprocess.CompletedProcess:
    """Run `command` as root on `address` from the controller, trusting only the host keys in `known_hosts`."""
    return lab.run_ctl(["ssh", "-i", str(netboot.key), "-o", "UserKnownHostsFile=%s" % known_hosts, "-o", "StrictHostKeyChecking=yes",
                        "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "root@%s" % address, command],
                       capture_output=True, text=True, timeout=60)
