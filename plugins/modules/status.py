#!/usr/bin/python
# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: status
short_description: Find a machine by its MAC address and tell whether it runs its NixOS system
version_added: 0.1.0
author: Nixie developers (@nixie-provision)
description:
  - Finds the IP address of the machine with MAC address O(mac), connects to it with the C(ssh) command line
    client, and classifies it from its C(/etc/os-release) and C(/run/current-system) as V(installed), V(outdated),
    V(installer), V(other_os) or V(unreachable) (see RV(state)). A provisioning run skips the installed machines
    and checks after the install that each one came up with its system.
  - 'Addresses are looked for by the methods in O(discovery), in order, and the first address that accepts a TCP
    connection on O(ssh_port) is used. V(static): O(ip). V(neighbor), on O(interface): an ARP sweep of the
    interface''s IPv4 subnets (at most C(/22) each; a larger one is not swept, with a warning), the controller''s
    neighbour table, an ICMPv6 echo to all nodes (C(ff02::1)) followed by the IPv6 neighbour table, and last the
    link-local address the MAC gives with EUI-64. V(agent): the address the installer''s agent reported to the boot
    server (O(server_url)), asked over its API.'
  - A machine that cannot be found or asked is not a failure of the task but the state V(unreachable), with the
    reason in RV(reason). The task fails only for configuration errors, such as a flake that does not evaluate.
  - Runs on the controller (C(delegate_to) V(localhost)). The ARP sweep and the ICMPv6 echo need root or
    C(CAP_NET_RAW); without them only the neighbour table is read.
  - Decides what a provisioning run does with the machine (RV(action)) - V(netboot) it (and so install it) or
    V(skip) it - and says why (RV(action_reason)), so that playbooks need no rules of their own.
  - Every step is bounded by O(timeout). Nothing on the controller or the machine is changed, unless
    O(reboot_installer) is set and the machine runs an installer.
requirements:
  - ssh (the OpenSSH client)
  - ip (iproute2), for O(discovery=neighbor)
  - scapy, for the ARP sweep of O(discovery=neighbor)
  - nix, when O(flake) is given
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - nixie.provision.boot_server.secret
attributes:
  check_mode:
    support: full
    details: The check only reads, so check mode runs it in full; O(reboot_installer) reports the reboot it would make.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: Linux only (the neighbour table and raw sockets).
options:
  mac:
    description: MAC address of the machine, in any common notation (colons, hyphens, dots or bare hex).
    type: str
    required: true
  ip:
    description: The machine's address (or host name), when it has a static one. Used by O(discovery=static).
    type: str
  interface:
    description:
      - The controller's network interface facing the machine (such as V(eno1)). Used by O(discovery=neighbor),
        and the scope of IPv6 link-local addresses.
    type: str
  server_url:
    description:
      - The run's boot server (M(nixie.provision.server)'s C(http_url)), asked by O(discovery=agent) for the address
        the machine's agent reported. It may run on another host.
    type: str
  run_dir:
    description: Without O(server_url), the run directory of a boot server running on the controller, asked instead.
    type: path
  awaiting_phone_home_macs:
    description:
      - The MACs for which the run's boot server holds an agent token that no phone-home has claimed yet
        (M(nixie.provision.server) with O(nixie.provision.server#module:state=status) returns them as C(awaiting_phone_home)); such a machine was
        netbooting Nixie's installer when that server stopped. Its installer refuses SSH logins until its agent phones
        home, so it is netbooted (RV(action)) although it refuses the key.
    type: list
    elements: str
    default: []
  reinstall:
    description:
      - Whether a machine that is V(outdated) or runs another OS (V(other_os)) is to be netbooted and reinstalled; with a
        BMC (O(power)), an V(installed) one too, since its BMC can power-cycle it into the network boot.
    type: bool
    default: false
  power:
    description:
      - 'How the machine is powered (the host variable C(nixie_power), which the hosts inventory plugin sets from
        the C(power) of hosts.json): V({"driver": "wol"}), or its BMC, such as V({"driver": "redfish", "address":
        "https://10.0.0.21", "username": "admin"}) (see M(nixie.provision.power)).'
      - With a BMC, the check asks it for the power state and the pending boot override (RV(power_state),
        RV(boot_override)); a BMC that cannot be asked fails the task, naming it.
    type: dict
  power_password:
    description: The BMC password (C(nixie_bmc_password), from Ansible Vault); without it, C(password_env) of O(power).
    type: str
  reboot_installer:
    description:
      - Reboot a machine found running an installer (V(installer)), so that it netboots afresh from the boot server
        now running. The reboot goes over SSH pinned to the host key the check itself just saw.
    type: bool
    default: false
  discovery:
    description: The ways to find the machine's address, tried in this order.
    type: list
    elements: str
    choices: [static, neighbor, agent]
    default: [static, neighbor, agent]
  expected_system:
    description:
      - Store path of the NixOS system the machine should run (its C(config.system.build.toplevel)).
      - Without it and without O(flake), a NixOS machine with a C(/run/current-system) counts as V(installed), and
        RV(reason) says the system was not compared.
    type: str
  flake:
    description:
      - The flake (such as V(github:example/infra) or V(/srv/infra)) to evaluate O(expected_system) from, as
        C(nixosConfigurations.<flake_attr>.config.system.build.toplevel.outPath).
      - It is evaluated (nothing is built) only when the machine runs a NixOS that is not an installer.
        To check many machines, evaluating once for all of them and passing O(expected_system) is faster.
    type: str
  flake_attr:
    description: The machine's name under C(nixosConfigurations) in O(flake).
    type: str
  eval_timeout:
    description: Seconds the evaluation of O(flake) may take, apart from O(timeout).
    type: int
    default: 300
  ssh_user:
    description: User to log in as; it needs to read C(/etc/os-release) and C(/run/current-system) only.
    type: str
    default: root
  ssh_port:
    description: TCP port of the machine's SSH server.
    type: int
    default: 22
  ssh_private_key:
    description: Private key file to log in with. Without it, C(ssh) uses its defaults (the agent, C(~/.ssh/id_*)).
    type: path
  known_hosts:
    description:
      - A C(known_hosts) file with the machine's host key. With it the key is pinned
        (C(StrictHostKeyChecking=yes)), and a machine presenting another key is V(unreachable), the reason naming
        the host key.
      - Without it any host key is accepted (C(StrictHostKeyChecking=accept-new) into a file private to this task
        and deleted after it), so the machine is not authenticated.
    type: path
  known_hosts_pin:
    description:
      - V(always) pins the key of O(known_hosts), which must exist. V(if_listed) pins it only where O(known_hosts)
        lists O(host_key_alias) (or the address found), such as a host an earlier run installed, and accepts any key
        otherwise, so that a machine never installed is still told apart from one that is off.
    type: str
    choices: [always, if_listed]
    default: always
  host_key_alias:
    description: The name the machine's host key is known under (C(HostKeyAlias)), such as its inventory name.
    type: str
  ssh_options:
    description:
      - More C(ssh) options, each as C(Name=value) (such as V(ProxyJump=bastion)), passed with C(-o).
      - They come before the module's own options, and OpenSSH uses the first value of an option, so they win.
    type: list
    elements: str
    default: []
  timeout:
    description:
      - Seconds for the whole check (finding the address, connecting, asking), apart from the flake evaluation.
      - Each address tried gets up to 3 seconds to accept a TCP connection; the ARP sweep waits 1 second for answers.
    type: int
    default: 30
notes:
  - The machine is asked with one C(sh) command that prints C(/etc/os-release) (or C(/usr/lib/os-release)), the
    target of C(/run/current-system), and whether C(nixie.api=) is on its kernel command line, which marks a machine
    booted into the installer by Nixie's boot server. The command line itself, which holds the agent's token, is
    never read back.
seealso:
  - module: nixie.provision.server
  - module: nixie.provision.wait_for_agent
"""

EXAMPLES = r"""
- name: Check whether each host runs its configuration
  nixie.provision.status:
    mac: "{{ nixie_mac }}"
    ip: "{{ nixie_ip | default(omit) }}"
    interface: "{{ nixie_interface }}"
    flake: /srv/infra
    flake_attr: "{{ nixie_flake_attr | default(inventory_hostname) }}"
    ssh_private_key: ~/.ssh/id_ed25519
  delegate_to: localhost
  register: nixie_status

- name: Netboot only the hosts the check says to
  ansible.builtin.set_fact:
    nixie_netboot: "{{ nixie_status.action == 'netboot' }}"

- name: After the install, verify with the pinned host key and the address the agent reported
  nixie.provision.status:
    mac: "{{ nixie_mac }}"
    interface: eno1
    server_url: "{{ nixie_server.http_url }}"
    discovery: [neighbor, agent]
    expected_system: "{{ nixie_toplevels[inventory_hostname] }}"
    known_hosts: /var/tmp/nixie/known_hosts
    timeout: 60
  delegate_to: localhost
  register: nixie_verify
  failed_when: nixie_verify.state != 'installed'
"""

RETURN = r"""
state:
  description:
    - V(installed) - NixOS, not an installer, running the expected system (or, with no expected system given, having
      a C(/run/current-system)).
    - V(outdated) - NixOS, not an installer, running another system or none.
    - V(installer) - an installer, by C(VARIANT_ID=installer) in C(/etc/os-release) or by C(nixie.api=) on the kernel
      command line (Nixie's boot server booted it).
    - V(other_os) - anything else that answered over SSH, including a machine without C(/etc/os-release).
    - V(unreachable) - no address found, no address accepting TCP on O(ssh_port), or SSH failed.
  returned: always
  type: str
  sample: installed
ip:
  description:
    - The address used; when nothing answered, the first address found (null when none was).
    - IPv6 link-local addresses carry their scope, such as V(fe80::5054:ff:fe12:3456%eno1).
  returned: always
  type: str
  sample: 10.0.0.123
ip_source:
  description:
    - How RV(ip) was found. V(static) - O(ip). V(arp_sweep) - it answered the ARP sweep. V(neighbor) - the
      controller's neighbour table. V(link_local) - derived from the MAC (EUI-64). V(agent) - reported by the
      installer's agent.
  returned: always
  type: str
  sample: arp_sweep
current_system:
  description: Where C(/run/current-system) points on the machine; null when it has none or was not reached.
  returned: always
  type: str
  sample: /nix/store/8x0k7sbhhkhbnzxlvmh83dhxg5dpvw8n-nixos-system-nixie-01-24.11.20241201.af51545
expected_system:
  description: The system the machine should run (O(expected_system), or evaluated from O(flake)); null when neither.
  returned: always
  type: str
  sample: /nix/store/8x0k7sbhhkhbnzxlvmh83dhxg5dpvw8n-nixos-system-nixie-01-24.11.20241201.af51545
os_release:
  description: The machine's C(/etc/os-release) fields, unquoted; empty when it has none or was not reached.
  returned: always
  type: dict
  sample: {"ID": "nixos", "NAME": "NixOS", "PRETTY_NAME": "NixOS 24.11 (Vicuna)", "VERSION_ID": "24.11"}
unreachable_cause:
  description:
    - Why the machine is V(unreachable); null for the other states. V(no_address) - no method found an address.
      V(no_answer) - no address accepted TCP on O(ssh_port). V(timeout) - O(timeout) ran out before SSH finished.
      V(host_key) - its SSH host key is not the pinned one (or not in O(known_hosts)); it may be a running system.
      V(login_refused) - SSH refused the key. V(ssh_failed) - any other SSH failure.
    - Only V(no_address) and V(no_answer) suggest the machine is off or elsewhere.
  returned: always
  type: str
  sample: no_answer
awaiting_phone_home:
  description: Whether O(mac) is among O(awaiting_phone_home_macs).
  returned: always
  type: bool
  sample: false
action:
  description:
    - What a provisioning run does with the machine. V(netboot) - a machine that does not answer at all (taken for a
      blank one that is off), one running an installer, one whose installer awaits its phone-home
      (O(awaiting_phone_home_macs)), and with O(reinstall) an V(outdated) or V(other_os) one. V(skip) - every other
      machine, such as one answering SSH with another host key or refusing the key, which runs something Nixie did
      not install.
  returned: always
  type: str
  choices: [netboot, skip]
  sample: netboot
action_reason:
  description: Why RV(action).
  returned: always
  type: str
  sample: "nothing answers: taken for a blank machine that is off"
power_state:
  description: The power state the machine's BMC reports (V(on), V(off)); null without a BMC.
  returned: always
  type: str
  sample: "off"
boot_override:
  description: The boot override the BMC holds (as M(nixie.provision.power) reports it); null without one.
  returned: always
  type: dict
  sample: null
rebooted:
  description: Whether the machine was rebooted (O(reboot_installer)).
  returned: always
  type: bool
  sample: false
reason:
  description: Why the machine has RV(state), such as which addresses were tried and what SSH said.
  returned: always
  type: str
  sample: "no address answered: 10.0.0.123 (arp_sweep): TCP port 22 refused the connection"
elapsed:
  description: Seconds the check took.
  returned: always
  type: float
  sample: 1.8
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nixie.provision.plugins.module_utils._bootclient import connect
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._mac import normalize_mac
from ansible_collections.nixie.provision.plugins.module_utils._power import settings as power_settings
from ansible_collections.nixie.provision.plugins.module_utils._status import StatusCheck


def _check_params(module):
    params = module.params
    for name in ("mac", "awaiting_phone_home_macs"):
        try:
            params[name] = normalize_mac(params[name]) if name == "mac" else [normalize_mac(mac) for mac in params[name]]
        except ValueError as exc:
            module.fail_json(msg="%s: %s" % (name, exc))
    try:
        params["power"] = power_settings.validate(params["power"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    if params["timeout"] < 1 or params["eval_timeout"] < 1:
        module.fail_json(msg="timeout and eval_timeout must be at least 1 second")
    if not 0 < params["ssh_port"] < 65536:
        module.fail_json(msg="ssh_port: must be from 1 to 65535, got %d" % params["ssh_port"])
    for name in ("ssh_private_key", "known_hosts"):
        # Pinned only if listed, a known_hosts file need not exist yet: no host has been installed.
        if params[name] and not os.path.isfile(params[name]) and not (name == "known_hosts" and params["known_hosts_pin"] == "if_listed"):
            module.fail_json(msg="%s: %s is not a file" % (name, params[name]))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            mac=dict(type="str", required=True),
            ip=dict(type="str"),
            interface=dict(type="str"),
            server_url=dict(type="str"),
            run_dir=dict(type="path"),
            server_secret=dict(type="str", no_log=True),
            awaiting_phone_home_macs=dict(type="list", elements="str", default=[]),
            reinstall=dict(type="bool", default=False),
            reboot_installer=dict(type="bool", default=False),
            power=dict(type="dict"),
            power_password=dict(type="str", no_log=True),
            discovery=dict(type="list", elements="str", choices=["static", "neighbor", "agent"], default=["static", "neighbor", "agent"]),
            expected_system=dict(type="str"),
            flake=dict(type="str"),
            flake_attr=dict(type="str"),
            eval_timeout=dict(type="int", default=300),
            ssh_user=dict(type="str", default="root"),
            ssh_port=dict(type="int", default=22),
            ssh_private_key=dict(type="path", no_log=False),
            known_hosts=dict(type="path"),
            known_hosts_pin=dict(type="str", choices=["always", "if_listed"], default="always"),
            host_key_alias=dict(type="str", no_log=False),
            ssh_options=dict(type="list", elements="str", default=[]),
            timeout=dict(type="int", default=30),
        ),
        required_together=[("flake", "flake_attr")],
        mutually_exclusive=[("expected_system", "flake")],
        supports_check_mode=True,
    )
    _check_params(module)
    params = module.params
    try:
        check = StatusCheck(server=connect(params["server_url"], params["run_dir"], params["server_secret"]), check_mode=module.check_mode,
                            awaiting_phone_home=params["mac"] in params["awaiting_phone_home_macs"], **dict(
            (name, params[name]) for name in (
                "mac", "ip", "interface", "discovery", "expected_system", "flake", "flake_attr", "eval_timeout", "ssh_user",
                "ssh_port", "ssh_private_key", "known_hosts", "known_hosts_pin", "host_key_alias", "ssh_options", "timeout",
                "reinstall", "reboot_installer", "power", "power_password")))
        result = check.run()
        for warning in check.warnings:
            module.warn(warning)
        module.exit_json(**result)
    except NixieError as exc:
        module.fail_json(msg=str(exc), **exc.details)


if __name__ == "__main__":
    main()
