#!/usr/bin/python
# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: installer
short_description: Build the NixOS netboot installer from the user's flake
version_added: 0.1.0
author: Nixie developers (@nixie-provision)
description:
  - Builds C(config.system.build.kernel), C(config.system.build.netbootRamdisk) and C(config.system.build.toplevel)
    of a NixOS configuration in one C(nix build), and returns the files a network boot server serves.
  - The configuration must be a netboot installer, that is, import
    C((modulesPath + "/installer/netboot/netboot-minimal.nix")) and C(nixie.nixosModules.installer) from the Nixie flake
    (see C(examples/installer.nix) in the Nixie repository).
  - Evaluates the flake first, so a missing configuration or attribute is reported by name before anything is built.
  - Reports C(changed) only when the installer's store paths differ from those of the last run recorded in O(run_dir).
  - Every call enables the C(nix-command) and C(flakes) experimental features itself; no C(nix.conf) change is needed.
  - A long build is visible while it runs with C(tail -F <run_dir>/installer-build.log), which gets the builders'
    output and Nixie's progress lines; Ansible shows the result only when the module returns.
  - Runs where the task runs, normally the controller (V(localhost)), which also runs the boot server.
notes:
  - A local flake inside a git work tree is read from git, as Nix does for any flake, so new files must be C(git add)ed.
  - The store paths are not registered as garbage collector roots; do not collect garbage while provisioning.
requirements:
  - nix (2.8 or later), for example Debian's C(nix-bin) package
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - nixie.provision.nix
attributes:
  check_mode:
    support: full
    details:
      - Evaluates the flake and reports whether the store paths would change; builds nothing.
      - Returns the boot files too when an earlier run already built these exact store paths.
  diff_mode:
    support: full
    details: The store paths of the last run and of this one.
  platform:
    platforms: posix
options:
  flake:
    description:
      - The flake and the name of the installer in its C(nixosConfigurations), written C(<flake>#<name>) as for
        nixos-anywhere's and nixos-rebuild's C(--flake), such as V(./examples#installer) or V(github:me/fleet#installer).
      - Without C(#<name>), the configuration is C(nixosConfigurations.installer).
    type: str
    required: true
  run_dir:
    description:
      - Directory for this module's state (the last run's store paths, in C(installer.json)) and the build log
        (C(installer-build.log)); created when missing.
    type: path
    required: true
  ipxe_dir:
    description:
      - A directory holding the iPXE binaries the boot server hands to firmware (C(undionly.kpxe), C(ipxe.efi),
        C(snponly.efi)), such as V(/usr/lib/ipxe) from Debian's C(ipxe) package. Returned as RV(ipxe_dir).
    type: path
  system:
    description: The Nix system of the O(flake) installer (its C(nixpkgs.hostPlatform.system)).
    type: str
    default: x86_64-linux
  systems:
    description:
      - The Nix systems of the run's hosts (the systems module's RV(nixie.provision.systems#module:systems[].system)).
      - For each one other than O(system), the installer of O(installers) is built too and returned in RV(installers).
    type: list
    elements: str
    default: []
  installers:
    description:
      - "Installer flakes for other systems, by system, such as V({aarch64-linux: ./fleet#installer-aarch64})."
      - A system of O(systems) other than O(system) without an entry here is an error naming that system.
    type: dict
    default: {}
  ipxe_installable:
    description:
      - A flake installable whose output directory holds the iPXE binaries, such as V(./examples#ipxe) (nixpkgs'
        C(ipxe) from the same flake, so it is pinned by the same lock file). Built in the same C(nix build) as the
        installer; its output becomes RV(ipxe_dir).
    type: str
"""

EXAMPLES = r"""
- name: Build the installer from the example flake
  nixie.provision.installer:
    flake: "{{ playbook_dir }}/../examples#installer"
    run_dir: "{{ playbook_dir }}/.nixie"
    ipxe_dir: /usr/lib/ipxe
  register: nixie_installer

- name: Build the installer and nixpkgs' iPXE from a fleet's flake, with a remote builder
  nixie.provision.installer:
    flake: github:example/fleet#installer
    ipxe_installable: github:example/fleet#ipxe
    run_dir: /var/lib/nixie
    extra_args: [--builders, "ssh://builder x86_64-linux"]
    timeout: 14400
  register: nixie_installer

- name: Show the kernel command line the boot server will use
  ansible.builtin.debug:
    msg: "{{ nixie_installer.kernel }} {{ nixie_installer.cmdline }}"
"""

RETURN = r"""
kernel:
  description: The kernel image (the file C(<toplevel>/kernel) links to, C(bzImage) on x86).
  returned: success, and in check mode when the store paths are already built
  type: str
  sample: /nix/store/4gmrnzvhmz9l9k0jhb2gxzn6hbprnqf9-linux-6.6.52/bzImage
initrd:
  description: The netboot initrd, which carries the installer's Nix store.
  returned: success, and in check mode when the store paths are already built
  type: str
  sample: /nix/store/6dzx0dqqzd2q4x8dkz0l8w1xv7r4cq1p-initrd/initrd
init:
  description: The installer's stage 2 init, C(<toplevel>/init).
  returned: success, and in check mode when the store paths are already built
  type: str
  sample: /nix/store/p1gkk62lff0sw3bsy1ay4i3kl5l5bq61-nixos-system-installer-24.11/init
cmdline:
  description:
    - The kernel command line, C(init=<toplevel>/init) followed by the contents of C(<toplevel>/kernel-params).
    - The boot server adds what depends on how it serves the files (such as C(initrd=<name>) for iPXE on UEFI) and its
      own parameters (the agent's API URL and token).
  returned: success, and in check mode when the store paths are already built
  type: str
  sample: init=/nix/store/p1gkk62lff0sw3bsy1ay4i3kl5l5bq61-nixos-system-installer-24.11/init loglevel=4
ipxe_dir:
  description: The directory with the iPXE binaries, from O(ipxe_dir) or the output of O(ipxe_installable); null without either.
  returned: success, and in check mode when the store paths are already built
  type: str
  sample: /usr/lib/ipxe
store_paths:
  description:
    - The store paths of the installer's C(kernel), C(netbootRamdisk) and C(toplevel), and C(ipxe) with O(ipxe_installable).
    - In check mode, the paths a build would produce.
  returned: always
  type: dict
  sample:
    kernel: /nix/store/4gmrnzvhmz9l9k0jhb2gxzn6hbprnqf9-linux-6.6.52
    netbootRamdisk: /nix/store/6dzx0dqqzd2q4x8dkz0l8w1xv7r4cq1p-initrd
    toplevel: /nix/store/p1gkk62lff0sw3bsy1ay4i3kl5l5bq61-nixos-system-installer-24.11
system:
  description: The Nix system of RV(kernel), RV(initrd) and RV(cmdline), O(system).
  returned: always
  type: str
  sample: x86_64-linux
installers:
  description:
    - One entry per other system that O(systems) needs, built like the installer of O(flake), with its own build log
      (C(installer-<system>-build.log) in O(run_dir)); without RV(kernel), RV(initrd) and RV(cmdline) in check mode before a build.
    - Pass it to the server module's O(nixie.provision.server#module:installers).
  returned: always
  type: list
  elements: dict
  sample:
    - system: aarch64-linux
      kernel: /nix/store/0w4d7c2lxl3lq0cg9r2i8d1nmz9yc8q3-linux-6.6.52/Image
      initrd: /nix/store/1x7sd4ajv3y0dkl6n1x9q8l2b7c0mz5r-initrd/initrd
      cmdline: init=/nix/store/9z3jz3p4xq1r2h7yb0a6m8n5c1d2e3f4-nixos-system-installer-24.11/init loglevel=4
log:
  description: The build log (not written in check mode).
  returned: always
  type: str
  sample: /var/lib/nixie/installer-build.log
log_tail:
  description: The last lines of the build log, when the build failed.
  returned: failure
  type: list
  elements: str
  sample: ["error: builder for '/nix/store/...-nixos-system-installer.drv' failed with exit code 1"]
missing:
  description: The attributes the flake lacks, when that is why the task failed.
  returned: failure
  type: list
  elements: str
  sample: [nixosConfigurations.installer.config.system.build.netbootRamdisk]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nixie.provision.plugins.module_utils import _nix


def main():
    module = AnsibleModule(
        argument_spec=dict(
            flake=dict(type="str", required=True),
            run_dir=dict(type="path", required=True),
            ipxe_dir=dict(type="path"),
            ipxe_installable=dict(type="str"),
            nix=dict(type="str", default="nix"),
            extra_args=dict(type="list", elements="str", default=[]),
            timeout=dict(type="int", default=7200),
            system=dict(type="str", default="x86_64-linux"),
            systems=dict(type="list", elements="str", default=[]),
            installers=dict(type="dict", default={}),
        ),
        mutually_exclusive=[("ipxe_dir", "ipxe_installable")],
        supports_check_mode=True,
    )
    params = module.params
    if params["timeout"] < 1:
        module.fail_json(msg="timeout must be at least 1 second, got %d" % params["timeout"])
    try:
        nix = _nix.Nix(params["nix"], params["extra_args"], timeout=params["timeout"])
        build = _nix.InstallerBuild(
            nix, params["flake"], params["run_dir"], ipxe_dir=params["ipxe_dir"], ipxe_installable=params["ipxe_installable"],
            check_mode=module.check_mode,
        )
        others = _nix.other_installers(params["installers"], params["systems"], params["system"])
        result = build.run()
        result["system"] = params["system"]
        result["installers"] = []
        for system, flake in others.items():
            other = _nix.InstallerBuild(nix, flake, params["run_dir"], check_mode=module.check_mode, system=system).run()
            result["changed"] = result["changed"] or other["changed"]
            result["installers"].append(dict(((key, other[key]) for key in ("kernel", "initrd", "cmdline") if key in other), system=system))
    except _nix.NixError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
