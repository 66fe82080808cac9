# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of nixie.provision.install (documented in plugins/modules/install.py).

An action plugin rather than a module: the install always runs on the controller, and a module's round trip (its
payload built, written, and run in a fresh Python) costs about 0.4 s here between the phone-home and the exec of
nixos-anywhere. The work is the module's was, done once, in the worker that runs the task.
"""

from __future__ import annotations

import os

from ansible.plugins.action import ActionBase

from ansible_collections.nixie.provision.plugins.module_utils import _install
from ansible_collections.nixie.provision.plugins.module_utils._bootclient import connect
from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._disks import check_disks
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._hosts import host_name
from ansible_collections.nixie.provision.plugins.module_utils._mac import normalize_mac
from ansible_collections.nixie.provision.plugins.module_utils._rundir import make_run_dir

ARGUMENT_SPEC = dict(
    name=dict(type="str", required=True),
    mac=dict(type="str"),
    server_url=dict(type="str"),
    server_secret=dict(type="str", no_log=True),
    flake=dict(type="str"),
    flake_attr=dict(type="str"),
    toplevel=dict(type="str"),
    disko_script=dict(type="str"),
    disk_devices=dict(type="dict"),
    target=dict(type="str", required=True),
    ssh_private_key=dict(type="path", required=True, no_log=False),
    agent_report=dict(type="dict", required=True),
    disks_may_be_wiped=dict(type="bool", default=False),
    run_dir=dict(type="path", required=True),
    substitute_on_destination=dict(type="bool", default=False),
    extra_args=dict(type="list", elements="str", default=[]),
    generate_hardware_config=dict(type="str"),
    hardware_config_path=dict(type="path"),
    nixos_anywhere=dict(type="str", default="nixos-anywhere"),
    timeout=dict(type="int", default=3600),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        dummy, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC, required_together=[("toplevel", "disko_script")],
                                                    required_one_of=[("flake", "toplevel")])
        try:
            host_name(params["name"])
        except ValueError as exc:
            return dict(result, failed=True, msg="name: %s" % exc)
        if params["timeout"] < 1:
            return dict(result, failed=True, msg="timeout: must be at least 1 second, got %d" % params["timeout"])
        try:
            mac = normalize_mac(params["mac"]) if params["mac"] else None
        except ValueError as exc:
            return dict(result, failed=True, msg="mac: %s" % exc)
        log = contract.host_file(params["run_dir"], params["name"], contract.HOST_INSTALL_LOG)
        try:
            result.update(self._install(params, mac, log))
        except NixieError as exc:
            result.update(exc.details, failed=True, msg=str(exc), log=log)
        return result

    def _install(self, params, mac, log):
        """Check the disks, then (unless in check mode) pin the host keys, tell the boot server and run nixos-anywhere."""
        extra_files = contract.host_file(params["run_dir"], params["name"], contract.HOST_EXTRA_FILES)
        report = params["agent_report"]
        check_disks(params["name"], report.get("disks"), params["disks_may_be_wiped"], params["disk_devices"])
        store_paths = (params["disko_script"], params["toplevel"]) if params["toplevel"] else None
        # Built store paths win over the flake, except for a host whose hardware report nixos-anywhere writes first.
        flake = params["flake"] and "%s#%s" % (params["flake"], params["flake_attr"] or params["name"])
        generate = _install.hardware_config(params["name"], params["generate_hardware_config"],
                                            params["hardware_config_path"] or contract.host_file(params["run_dir"], params["name"], contract.HOST_FACTER))
        command = _install.nixos_anywhere_command(
            params["nixos_anywhere"], params["name"], params["target"], params["ssh_private_key"], extra_files,
            params["substitute_on_destination"], params["extra_args"], store_paths=store_paths, flake=flake, generate_hardware_config=generate,
        )
        if self._task.check_mode:
            return dict(changed=True, command=command, log=log)
        make_run_dir(os.path.dirname(log))
        host_key = _install.ensure_host_key(extra_files, params["name"])
        known_hosts = _install.pin_host_key(contract.host_file(params["run_dir"], params["name"], contract.HOST_KNOWN_HOSTS),
                                            params["name"], host_key)
        _install.verify_host_key(params["target"], report.get("ssh_host_keys") or [])
        installer_known_hosts = _install.pin_host_keys(
            contract.host_file(params["run_dir"], params["name"], contract.HOST_INSTALLER_KNOWN_HOSTS), params["name"], report["ssh_host_keys"])
        ssh_directory = _install.pinning_ssh(contract.host_file(params["run_dir"], params["name"], contract.HOST_INSTALLER_SSH), params["name"],
                                             installer_known_hosts)
        client = connect(params["server_url"], params["run_dir"], params["server_secret"]) if mac else None
        phases = _install.PhaseReporter(client, mac)
        with _install.known_installed(client, mac) as told, phases.reporting():
            seconds = _install.run_logged(command, log, params["timeout"], on_phase=phases, env=_install.pinned_environment(ssh_directory))
        return dict(changed=True, command=command, log=log, host_key=host_key, known_hosts=known_hosts, boot_server_told=told,
                    seconds=round(seconds, 1))
