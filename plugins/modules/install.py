#!/usr/bin/python
# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: install
short_description: Install NixOS on a netbooted machine with nixos-anywhere, safely
version_added: 0.1.0
author: Nixie developers (@nixie-provision)
description:
  - Runs C(nixos-anywhere) on the controller against a machine that runs Nixie's installer, with the phases
    C(disko,install,reboot); no kexec, since the installer already runs NixOS.
  - Installs the host's already built system (O(toplevel) and O(disko_script), see M(nixie.provision.systems)) with
    C(--store-paths), so that nixos-anywhere evaluates nothing; without them it is handed O(flake) and evaluates and
    builds the host itself.
  - Refuses, before anything is written, a machine that lacks a disk O(disk_devices) names, and one where a disk that
    gets written (those O(disk_devices) names, or without it every disk the agent reported) holds partitions or
    filesystems, unless O(disks_may_be_wiped) is true. Disks the layout does not name may hold anything.
  - Hands nixos-anywhere the host's O(name) as its target, with C(--ssh-option HostName=<target>), so that no tool it
    runs has to parse an IPv6 or scoped link-local address.
  - Checks right before starting that the SSH host key at O(target) is one the machine's agent reported, and fails on
    a mismatch.
  - nixos-anywhere turns host key checking off ahead of any C(--ssh-option), and ssh keeps the first value of an
    option; so it runs with an C(ssh) first on its C(PATH) (C(<run_dir>/<name>/installer-ssh/ssh)) that puts
    C(StrictHostKeyChecking=yes), C(HostKeyAlias=<name>) and C(UserKnownHostsFile=<run_dir>/<name>/installer_known_hosts)
    (the agent's reported keys) first. Each of its connections then refuses a machine that took the address over.
  - Generates the installed system's SSH host key (kept in O(run_dir)) and passes it with C(--extra-files), so the
    new system's key is known before it boots; returns it, and a C(known_hosts) file that pins it under O(name).
  - With O(mac), tells the run's boot server (O(server_url), or the one running on this machine for O(run_dir))
    the host is installed right before nixos-anywhere starts, so that the host's network boot then boots its disk,
    and tells it the opposite if nixos-anywhere fails, so that the next try netboots the installer again.
  - Tells that boot server, for its status page, when nixos-anywhere starts, each phase its output enters (disko,
    install, reboot) and how it ended (done, or failed with the error); a server that does not answer these reports
    does not fail the install.
  - Runs under a deadline (nixos-anywhere waits in unbounded loops) and stops nixos-anywhere's whole process group
    when it expires. Its output goes to C(<run_dir>/<name>/install.log); a failure reports the log's path and last lines.
  - Runs on the host's controller, the task's delegated host (C(delegate_to)); in Ansible's own process when that is
    this machine, as a module over the controller's connection otherwise; it does not connect to the host itself.
    O(ssh_private_key), O(run_dir), O(toplevel) and O(disko_script) are then paths on the controller.
requirements:
  - nixos-anywhere
  - ssh-keygen and ssh-keyscan (OpenSSH)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - nixie.provision.boot_server.secret
attributes:
  check_mode:
    support: full
    details: Checks the disks and returns the command it would run; installs nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  name:
    description:
      - The host's name, used for its directory under O(run_dir) and its key's comment.
      - Letters, digits, V(_), V(.) and V(-), not starting with V(.) or V(-) (so never a path such as V(../x)).
    type: str
    required: true
  mac:
    description:
      - The host's MAC address, by which the boot server knows it. Without it no boot server is told anything.
    type: str
  server_url:
    description:
      - The boot server's URL (M(nixie.provision.server)'s C(http_url)); it may run on another host.
      - Without it, the boot server running on this machine for O(run_dir), if any.
    type: str
  flake:
    description:
      - The flake holding the host's NixOS configuration, for nixos-anywhere to evaluate and build when O(toplevel)
        and O(disko_script) are not given.
      - Required without them.
    type: str
  flake_attr:
    description: The host's attribute in the flake's C(nixosConfigurations). Defaults to O(name).
    type: str
  toplevel:
    description:
      - The store path of the host's built C(config.system.build.toplevel), on this machine.
      - With O(disko_script), nixos-anywhere gets C(--store-paths <disko_script> <toplevel>) instead of O(flake).
    type: str
  disko_script:
    description: The store path of the host's built C(config.system.build.diskoScript); required with O(toplevel).
    type: str
  disk_devices:
    description:
      - The host's disk layout, C({disk name -> device}) from C(config.disko.devices.disk.<name>.device).
      - Each device is resolved against the agent report's disks as C(/dev/<name>), C(/dev/disk/by-id/<link>) or
        C(/dev/disk/by-path/<link>); one the machine lacks refuses the install.
      - Without it, every disk the agent reported counts as one that gets written.
    type: dict
  target:
    description: Address of the machine's installer (what its agent reported).
    type: str
    required: true
  ssh_private_key:
    description: Private key that the installer accepts for root (the deployer key the boot server handed to the agent).
    type: path
    required: true
  agent_report:
    description:
      - The machine's agent report (the C(nixie_agent) fact from M(nixie.provision.wait_for_agent)); its C(disks)
        and C(ssh_host_keys) are checked.
      - A disk counts as blank only when its C(has_partitions) and C(has_filesystem) are both V(false); a disk
        missing either is refused as one holding data.
      - Its disks' C(by_id) and C(by_path) lists are the names O(disk_devices) may use.
    type: dict
    required: true
  disks_may_be_wiped:
    description: Allow installing over disks that hold partitions or filesystems.
    type: bool
    default: false
  run_dir:
    description: Directory of the provisioning run; the host's log and generated host key go to C(<run_dir>/<name>/).
    type: path
    required: true
  substitute_on_destination:
    description: Let the target fetch store paths from binary caches itself (nixos-anywhere's default); off by default
      so a machine needs no internet access.
    type: bool
    default: false
  generate_hardware_config:
    description:
      - V(nixos-facter) has nixos-anywhere run nixos-facter on the machine and write its report to O(hardware_config_path)
        (C(--generate-hardware-config nixos-facter <path>)) before it evaluates the configuration.
      - The configuration reads that report, so it cannot be built beforehand; such a host is installed from O(flake),
        which is then required, and nixos-anywhere evaluates and builds it itself, O(toplevel) and O(disko_script) aside.
      - Any other value fails, naming the host.
    type: str
  hardware_config_path:
    description:
      - Where nixos-anywhere writes the report of O(generate_hardware_config); the configuration must read it from there
        (a file inside the flake, such as C(hosts/<name>/facter.json), for a pure evaluation).
      - Defaults to C(<run_dir>/<name>/facter.json).
    type: path
  extra_args:
    description: More arguments for nixos-anywhere, such as V([--build-on, remote]).
    type: list
    elements: str
    default: []
  nixos_anywhere:
    description: The nixos-anywhere command.
    type: str
    default: nixos-anywhere
  timeout:
    description: Seconds nixos-anywhere may run before it is stopped and the task fails; at least 1.
    type: int
    default: 3600
"""

EXAMPLES = r"""
- name: Install NixOS on the machine its agent reported
  nixie.provision.install:
    name: "{{ inventory_hostname }}"
    toplevel: "{{ nixie_systems.systems[inventory_hostname].toplevel }}"
    disko_script: "{{ nixie_systems.systems[inventory_hostname].disko_script }}"
    disk_devices: "{{ nixie_systems.systems[inventory_hostname].disk_devices }}"
    target: "{{ nixie_ip }}"
    ssh_private_key: ~/.ssh/id_ed25519
    agent_report: "{{ nixie_agent }}"
    disks_may_be_wiped: "{{ nixie_disks_may_be_wiped }}"
    run_dir: /var/tmp/nixie
    mac: "{{ nixie_mac }}"
  delegate_to: localhost
  register: nixie_install
"""

RETURN = r"""
command:
  description: The nixos-anywhere command line.
  returned: always
  type: list
  elements: str
  sample: [nixos-anywhere, --store-paths, /nix/store/mnb4...-disko-format, /nix/store/q1n2...-nixos-system-nixie-01,
           --target-host, root@nixie-01, --ssh-option, HostName=10.0.0.5, -i, /root/.ssh/id_ed25519,
           --phases, "disko,install,reboot", --extra-files, /var/tmp/nixie/nixie-01/extra-files, --no-substitute-on-destination]
log:
  description: The install log.
  returned: always
  type: str
  sample: /var/tmp/nixie/nixie-01/install.log
host_key:
  description: The installed system's SSH host public key, generated by this module (once per host and run directory).
  returned: unless in check mode
  type: str
  sample: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOq3Ae8ciXvwSBoPHmIZVbHJU8KeUiJp6oNX8nn7UBsD root@nixie-01
known_hosts:
  description: A known_hosts file pinning RV(host_key) under O(name), for C(HostKeyAlias=<name>).
  returned: unless in check mode
  type: str
  sample: /var/tmp/nixie/nixie-01/known_hosts
boot_server_told:
  description: Whether a boot server was told the host is installed (false without O(mac), or when none runs).
  returned: unless in check mode
  type: bool
  sample: true
seconds:
  description: How long nixos-anywhere ran.
  returned: success
  type: float
  sample: 74.2
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nixie.provision.plugins.module_utils import _install


def main():
    module = AnsibleModule(argument_spec=_install.ARGUMENT_SPEC, required_together=_install.REQUIRED_TOGETHER,
                           required_one_of=_install.REQUIRED_ONE_OF, supports_check_mode=True)
    result = _install.install_host(module.params, module.check_mode)
    if result.get("failed"):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
