#!/usr/bin/python
# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: wait_for_agent
short_description: Wait until a machine's installer phones home, and learn its address
version_added: 0.1.0
author: Nixie developers (@nixie-provision)
description:
  - Asks the boot server started by M(nixie.provision.server) for the inventory host's progress (found by its MAC
    address) until its nixie agent has phoned home, showing the host's current boot step as it changes. The server
    holds each answer until the host's next event, so the phone-home is seen the moment it arrives.
  - A MAC the boot server was not started for fails at once.
  - Returns the address the agent reported as the fact C(nixie_ip). Ansible drops connection variables such as
    C(ansible_host) from any module's facts, so follow this task with C(ansible.builtin.set_fact) of
    C(ansible_host) to C(nixie_ip) (as the examples and the collection's playbooks do) to reach the installer over SSH.
  - Returns the machine's hardware as the agent read it from C(/sys) and C(/proc) (CPU, memory, DMI, NICs, disks) as the
    fact C(nixie_hardware), with values it could not read as null, and one line about it as C(nixie_hardware_summary);
    with O(run_dir), also writes it to C(<run_dir>/<inventory_hostname>/hardware.json).
  - A host that does not phone home within O(timeout) fails alone, with its last boot step.
  - A host none of whose DHCP reached the boot server, and that sits behind a router (its C(nixie_ip) or its
    Wake-on-LAN C(nixie_wol_broadcast) is on none of the networks of the boot server's interface), fails with
    C(no DHCP request from <mac> reached the boot server; is the relay forwarding to <address>?), since the site's
    relay most likely forwards its DHCP to the site's DHCP server only.
  - A host that two machines answered for (two phone-homes as its MAC from different addresses) fails alone at once,
    with a message that two machines answered as its MAC, refusing both; the boot server answers neither machine again.
  - Runs on the host's controller, the task's delegated host (C(delegate_to)), where the boot server runs; in Ansible's
    own process when that is this machine, showing the host's boot steps as they change, and as a module over the
    controller's connection otherwise (the steps are then not shown); it does not connect to the host itself.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - nixie.provision.boot_server
  - nixie.provision.boot_server.secret
attributes:
  check_mode:
    support: none
    details: Skipped in check mode, where no boot server runs to wait for.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  mac:
    description: MAC address of the host's boot NIC. Defaults to the host variable C(nixie_mac).
    type: str
  name:
    description: The host's name, for its messages and its directory in O(run_dir). Defaults to C(inventory_hostname).
    type: str
  known_addresses:
    description:
      - The host's IPv4 addresses known beforehand, which tell whether it sits behind a router.
      - Defaults to the host variables C(nixie_ip) and C(nixie_wol_broadcast), those that are set.
    type: list
    elements: str
  timeout:
    description: Seconds to wait for the phone-home.
    type: int
    default: 600
"""

EXAMPLES = r"""
- name: Wait for each machine's installer and take its address
  nixie.provision.wait_for_agent:
    server_url: "{{ nixie_server.http_url }}"
    timeout: 900

- name: Connect to the installer at the learned address
  ansible.builtin.set_fact:
    ansible_host: "{{ nixie_ip }}"

- name: Reach the installer
  ansible.builtin.command: uname -a
  changed_when: false
"""

RETURN = r"""
ansible_facts:
  description: Facts about the host, from its agent's report.
  returned: success
  type: dict
  contains:
    nixie_ip:
      description: The address the agent uses, to connect to.
      type: str
      sample: 10.0.0.123
    nixie_agent:
      description: The agent's whole report (C(macs), C(ip), C(ssh_host_keys), C(disks), C(os_release), C(hardware), C(source_ip)).
      type: dict
      sample: {"ip": "10.0.0.123", "macs": ["bc:24:11:d0:28:34"], "disks": [], "ssh_host_keys": [], "os_release": {}}
    nixie_hardware:
      description:
        - The machine's hardware, from its agent's reading of C(/sys) and C(/proc); a value they do not hold is null.
        - C(cpu) has C(model) (x86's C(model name)), C(cores) (distinct cores of the online CPUs) and C(threads) (online CPUs).
        - C(memory_bytes) is the kernel's C(MemTotal), a little less than the memory installed.
        - C(dmi) has the system's C(vendor), C(product) and C(serial) (C(/sys/class/dmi/id)).
        - C(nics) lists the interfaces backed by a device, each with C(name), C(mac), C(link) (carrier), C(speed_mbps), C(driver).
        - C(disks) lists each disk's C(name), C(size_bytes), C(model), C(serial), C(wwn) (C(0x<naa>) or C(eui.<hex>)),
          C(rotational), and its C(by_id) and C(by_path) link names.
      type: dict
      sample:
        cpu: {"model": "QEMU Virtual CPU version 2.5+", "cores": 1, "threads": 1}
        memory_bytes: 1000341504
        dmi: {"vendor": "QEMU", "product": "Standard PC (Q35 + ICH9, 2009)", "serial": null}
        nics: [{"name": "eth0", "mac": "52:54:00:5e:00:01", "link": true, "speed_mbps": 1000, "driver": "e1000e"}]
        disks: [{"name": "vda", "size_bytes": 2147483648, "model": null, "serial": "nixie-data", "wwn": null, "rotational": true,
                 "by_id": ["virtio-nixie-data"], "by_path": ["pci-0000:00:03.0"]}]
    nixie_hardware_summary:
      description: One line about C(nixie_hardware), as the provision role's recap shows it; unknown values are left out.
      type: str
      sample: 1 core QEMU Virtual CPU version 2.5+, 954 MiB, QEMU Standard PC (Q35 + ICH9, 2009), 1 NIC, disk vda 2.0 GiB (hdd)
    nixie_known_hosts:
      description: The host's SSH host keys as C(known_hosts) lines for its address.
      type: list
      elements: str
      sample: ["10.0.0.123 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI..."]
hardware_file:
  description: Where the host's C(nixie_hardware) was written, with O(run_dir).
  returned: success with O(run_dir)
  type: str
  sample: /var/tmp/nixie/nixie-01/hardware.json
elapsed:
  description: Seconds waited.
  returned: always
  type: float
  sample: 23.4
last_event:
  description: The host's last recorded boot step.
  returned: always
  type: dict
  sample: {"step": "phone_home", "ts": 1764300000.1, "ip": "10.0.0.123"}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nixie.provision.plugins.module_utils import _agent_wait


def main():
    module = AnsibleModule(argument_spec=_agent_wait.ARGUMENT_SPEC, required_one_of=[("server_url", "run_dir")])
    if not module.params["mac"]:
        module.fail_json(msg="mac: required when the module runs by itself (the action plugin takes it from nixie_mac)")
    try:
        result = _agent_wait.wait_for_agent(module.params, lambda line: None, module.warn)
    except _agent_wait.AgentWaitError as exc:
        module.fail_json(msg=str(exc))
    if result.get("failed"):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
