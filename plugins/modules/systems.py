#!/usr/bin/python
# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: systems
short_description: Evaluate every host's NixOS system in one nix eval, and build them in one nix build
version_added: 0.2.0
author: Nixie developers (@nixie-provision)
description:
  - Evaluates, in one C(nix eval) for all O(hosts), each host's C(config.system.build.toplevel),
    C(config.system.build.diskoScript) and disk layout (C(config.disko.devices.disk.<name>.device)).
  - Builds the toplevels and disko scripts of the hosts in O(build) in one C(nix build --keep-going), with Nix's own
    parallelism, so that nixos-anywhere installs them with C(--store-paths) and evaluates nothing itself.
  - A host whose configuration does not evaluate, lacks an attribute, or does not build, is listed in RV(errors) with
    Nix's error; the others are unaffected, and the task does not fail for it. After a failed evaluation of all hosts,
    each is evaluated on its own, to tell which failed.
  - Run it once for the run (V(run_once)), on the controller.
  - A long build is visible while it runs with C(tail -F <run_dir>/systems-build.log).
requirements:
  - nix (2.8 or later)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - nixie.provision.nix
attributes:
  check_mode:
    support: full
    details: Evaluates; builds nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  flake:
    description:
      - The flake holding the hosts' C(nixosConfigurations), such as V(./examples) or V(github:me/fleet).
      - Required with O(hosts).
    type: str
  hosts:
    description:
      - C({host name -> attribute}) of the hosts to evaluate, the attribute being the host's name in C(nixosConfigurations).
      - Required without O(systems).
    type: dict
  systems:
    description:
      - RV(systems) of an earlier call; given, nothing is evaluated again and O(build) builds from its derivations.
    type: dict
  build:
    description: The hosts whose systems to build now (hosts in RV(errors) are left out).
    type: list
    elements: str
    default: []
  run_dir:
    description: Directory of the provisioning run; the build log goes to C(<run_dir>/systems-build.log).
    type: path
    required: true
"""

EXAMPLES = r"""
- name: Evaluate every host of the play at once
  nixie.provision.systems:
    flake: ./fleet
    hosts: "{{ dict(ansible_play_hosts | zip(ansible_play_hosts | map('extract', hostvars, 'nixie_flake_attr'))) }}"
    run_dir: /var/tmp/nixie
  delegate_to: localhost
  run_once: true
  register: nixie_systems

- name: Build the systems of the hosts to install, in one nix build
  nixie.provision.systems:
    flake: ./fleet
    systems: "{{ nixie_systems.systems }}"
    build: [nixie-01, nixie-02]
    run_dir: /var/tmp/nixie
  delegate_to: localhost
  run_once: true
  register: nixie_built
"""

RETURN = r"""
systems:
  description:
    - Per host, C(attribute), the store paths C(toplevel) and C(disko_script) (null when missing), C(drvs) (their
      derivations), C(disk_devices) (C({disk name -> device}) of its disko layout, or null), C(system) (its
      C(nixpkgs.hostPlatform.system), such as V(aarch64-linux), which names the installer it netboots; null where unset) and C(error)
      (null, or why it cannot be installed).
  returned: always
  type: dict
  sample:
    nixie-01:
      attribute: nixie-01
      toplevel: /nix/store/q1n2...-nixos-system-nixie-01
      disko_script: /nix/store/mnb4...-disko-format
      drvs: [/nix/store/1m8w...-nixos-system-nixie-01.drv, /nix/store/2g94...-disko-format.drv]
      disk_devices: {main: /dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S64ANS0T}
      system: x86_64-linux
      error: null
errors:
  description:
    - C({host -> error}) for every host that did not evaluate or build. Such hosts fail alone (the role fails each with
      its error); the task itself succeeds, so the others go on.
  returned: always
  type: dict
  sample: {nixie-02: "nixie-02: evaluating ./fleet#nixosConfigurations.nixie-02 failed: error: ..."}
built:
  description: The hosts whose systems were built by this call.
  returned: always
  type: list
  elements: str
  sample: [nixie-01]
log:
  description: The build log (written only when something was built).
  returned: always
  type: str
  sample: /var/tmp/nixie/systems-build.log
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nixie.provision.plugins.module_utils import _nix, _systems
from ansible_collections.nixie.provision.plugins.module_utils._bootd.contract import SYSTEMS_LOG_FILE, run_file


def main():
    module = AnsibleModule(
        argument_spec=dict(
            flake=dict(type="str"),
            hosts=dict(type="dict"),
            systems=dict(type="dict"),
            build=dict(type="list", elements="str", default=[]),
            run_dir=dict(type="path", required=True),
            nix=dict(type="str", default="nix"),
            extra_args=dict(type="list", elements="str", default=[]),
            timeout=dict(type="int", default=7200),
        ),
        required_one_of=[("hosts", "systems")],
        mutually_exclusive=[("hosts", "systems")],
        required_by={"hosts": "flake"},
        supports_check_mode=True,
    )
    params = module.params
    if params["timeout"] < 1:
        module.fail_json(msg="timeout must be at least 1 second, got %d" % params["timeout"])
    log = run_file(params["run_dir"], SYSTEMS_LOG_FILE)
    try:
        nix = _nix.Nix(params["nix"], params["extra_args"], timeout=params["timeout"])
        if params["systems"] is None:
            attributes = dict((str(host), str(attribute)) for host, attribute in params["hosts"].items())
            systems = _systems.evaluate(nix, params["flake"], attributes)
        else:
            systems = params["systems"]
        unknown = sorted(set(params["build"]) - set(systems))
        if unknown:
            module.fail_json(msg="build: %s not among the evaluated hosts (%s)" % (", ".join(unknown), ", ".join(sorted(systems))))
        built = {} if module.check_mode else _systems.build(nix, systems, params["build"], log)
    except _nix.NixError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    for host, error in built.items():
        if error:
            systems[host] = dict(systems[host], error=error)
    # Not "failed": Ansible reads that key of any result as the whole task's failure, every host's at once.
    errors = dict((host, system["error"]) for host, system in systems.items() if system["error"])
    module.exit_json(changed=bool(built), systems=systems, errors=errors, built=sorted(host for host, error in built.items() if not error),
                     log=log)


if __name__ == "__main__":
    main()
