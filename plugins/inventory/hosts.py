# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: hosts
short_description: Machines to provision, from a Nixie hosts.json
version_added: 0.1.0
author: Nixie developers (@nixie-provision)
description:
  - Reads a C(hosts.json) that maps each host name (its C(nixosConfigurations) attribute in the user's flake)
    to its settings, for example V(nixie-01) to an object whose C(mac_address) is V(bc:24:11:d0:28:34).
  - Each host joins the group named by O(group) and gets the host variables C(nixie_mac) (lower-case, colon
    separated), C(nixie_flake_attr), C(nixie_disks_may_be_wiped) and, when set in the file, C(nixie_ip) (also used
    as C(ansible_host)), C(nixie_interface), C(nixie_wol_broadcast) and C(nixie_wol_port), and C(nixie_power) (the
    power settings, Wake-on-LAN unless the file says otherwise). With O(flake) set, every host also gets
    C(nixie_flake).
  - Per host, C(hosts.json) accepts C(mac_address) (required), C(ip) (static IPv4 or IPv6 address), C(interface)
    (the controller NIC facing the host), C(wol) (an object with C(broadcast) and C(port)), C(flake_attr) (when it
    differs from the host name), C(disks_may_be_wiped) (boolean, default V(false)) and C(power).
  - 'C(power) says how the machine is powered: V({"driver": "wol"}) (the default), or its BMC, as
    V({"driver": "redfish", "address": "https://10.0.0.21", "username": "admin"}) with optional C(system) (the
    Redfish system path, needed when the BMC has several), C(port), C(validate_certs), C(ca_path) and C(boot_mode)
    (V(uefi) or V(bios)), or V({"driver": "ipmi", "address": "10.0.0.22", "port": 623, "username": "admin"}) with
    optional C(boot_mode). The password is never in the file: it comes from the variable C(nixie_bmc_password)
    (with Ansible Vault) or from the controller''s environment variable named by C(password_env).'
  - The whole file is checked before any host is added; every error names the file, the host and the field.
  - Any other inventory that sets the same variables works the same for the rest of the collection.
  - C(nixie_controller), the inventory host that runs a host's boot server, power actions and status checks (default
    V(localhost)), is not in the file; set it per segment with group variables or another inventory source beside
    this one, with O(compose), or with O(keyed_groups) and C(group_vars) (see the provision role).
  - The configuration file name must end in C(nixie.yml) or C(nixie.yaml).
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin; it must always be set to V(nixie.provision.hosts).
    required: true
    type: str
    choices: [nixie.provision.hosts]
  path:
    description:
      - The C(hosts.json) file. A relative path is taken from the directory of the configuration file.
    type: str
    default: hosts.json
  flake:
    description:
      - The flake holding the hosts' C(nixosConfigurations), such as V(./examples) or V(github:me/infra).
      - A relative path is taken from the directory of the configuration file, so the inventory can be run from anywhere.
      - Becomes the host variable C(nixie_flake).
    type: str
  group:
    description: The group every host from the file joins.
    type: str
    default: nixie
"""

EXAMPLES = r"""
# nixie.yml
plugin: nixie.provision.hosts
path: hosts.json
flake: ./examples

---
# Another file: group hosts whose disks may be wiped, and give every host a MAC-derived alias.
plugin: nixie.provision.hosts
path: /srv/fleet/hosts.json
flake: github:example/fleet
groups:
  wipeable: nixie_disks_may_be_wiped
compose:
  nixie_alias: "'node-' + nixie_mac | replace(':', '')"
"""

import os
from typing import TYPE_CHECKING

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable

from ansible_collections.nixie.provision.plugins.module_utils._errors import HostsFileError
from ansible_collections.nixie.provision.plugins.module_utils._hosts import load_hosts

if TYPE_CHECKING:
    from ansible.inventory.data import InventoryData
    from ansible.parsing.dataloader import DataLoader


class InventoryModule(BaseInventoryPlugin, Constructable):
    NAME = "nixie.provision.hosts"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and path.endswith(("nixie.yml", "nixie.yaml"))

    def parse(self, inventory: InventoryData, loader: DataLoader, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        config_dir = os.path.dirname(os.path.abspath(path))
        hosts_path = os.path.join(config_dir, os.path.expanduser(self.get_option("path")))
        try:
            hosts = load_hosts(hosts_path)
        except HostsFileError as exc:
            raise AnsibleParserError(str(exc)) from exc
        self._populate(hosts, self._flake_reference(config_dir))

    def _flake_reference(self, config_dir):
        flake = self.get_option("flake")
        # A relative path only means something next to the config file; a flake URI (github:, path:, ...) stays as is.
        if flake and (flake.startswith("./") or flake.startswith("../") or flake in (".", "..")):
            return os.path.normpath(os.path.join(config_dir, flake))
        return flake

    def _populate(self, hosts, flake):
        group = self.inventory.add_group(self.get_option("group"))
        strict = self.get_option("strict")
        for name, hostvars in hosts.items():
            self.inventory.add_host(name, group=group)
            if flake:
                hostvars = dict(hostvars, nixie_flake=flake)
            if "nixie_ip" in hostvars:
                hostvars = dict(hostvars, ansible_host=hostvars["nixie_ip"])
            for variable, value in hostvars.items():
                self.inventory.set_variable(name, variable, value)
            self._set_composite_vars(self.get_option("compose"), hostvars, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hostvars, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, name, strict=strict)
