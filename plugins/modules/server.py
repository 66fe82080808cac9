#!/usr/bin/python
# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: server
short_description: Start, stop or query Nixie's transient network boot server
version_added: 0.1.0
author: Nixie developers (@nixie-provision)
description:
  - Runs the boot server for one provisioning run as a detached daemon on the machine the task runs on (the
    controller, usually with C(delegate_to) V(localhost)). It serves ProxyDHCP on UDP 67 and 4011 beside the
    site's own DHCP server (it never hands out addresses), TFTP on UDP 69 for the iPXE binaries only, and HTTP
    on O(http_port) for the per-machine iPXE scripts, the kernel and initrd, and the agent API.
  - It answers only the MAC addresses in O(hosts). A host marked C(installed) is told to boot from its local disk.
  - Every step of every machine (DHCP offer, TFTP, script, kernel, initrd, phone-home) is appended as a JSON line
    to C(events.jsonl) in O(run_dir), next to C(server.log), C(server.pid) and C(state.json).
  - On an IPv6 address (O(address), or O(address_family)) it serves proxy DHCPv6 instead, on UDP 547 (the
    multicast group ff02::1:2 of O(interface)) and 4011, and TFTP and HTTP on that address, with bracketed IPv6
    URLs. A server answers one address family, so on a dual-stack network every host boots over the family chosen.
  - Needs root, or the capabilities C(CAP_NET_BIND_SERVICE) and C(CAP_NET_RAW); the module fails saying so otherwise.
requirements:
  - aiohttp (HTTP)
  - tftpy (TFTP)
  - Linux, root or the capabilities C(CAP_NET_BIND_SERVICE) and C(CAP_NET_RAW) (not needed to bind when the sysctl
    C(net.ipv4.ip_unprivileged_port_start) is at most 67)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports whether the server would be started, restarted or stopped, and does neither.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: Linux only (it binds the DHCP socket to one interface).
options:
  state:
    description:
      - V(started) starts the server, or keeps the running one when its configuration is the same (restarting it
        otherwise). V(stopped) stops it and leaves no process behind. V(status) only reports.
    type: str
    choices: [started, stopped, status]
    default: started
  run_dir:
    description: Directory of this provisioning run; holds the server's pid, state, log and events.
    type: path
    required: true
  interface:
    description: The network interface facing the machines. Required with O(state=started).
    type: str
  address:
    description:
      - The server's IPv4 or IPv6 address on O(interface), put into boot file URLs; its family decides whether the
        server answers DHCPv4 or DHCPv6. Defaults to the interface's address of O(address_family).
    type: str
  address_family:
    description:
      - Which family to serve when O(address) is not given. V(auto) takes the interface's IPv4 address and, where
        it has none, its first stable global IPv6 address. V(ipv4) and V(ipv6) choose for dual-stack networks.
    type: str
    choices: [auto, ipv4, ipv6]
    default: auto
  http_port:
    description: TCP port of the HTTP server (scripts, kernel, initrd, agent API), from 1 to 65535.
    type: int
    default: 8080
  hosts:
    description: The machines to answer. Required with O(state=started).
    type: list
    elements: dict
    suboptions:
      name:
        description: Host name (inventory host and flake attribute).
        type: str
        required: true
      mac:
        description: MAC address of the NIC that network-boots.
        type: str
        required: true
      installed:
        description: Whether the host is already installed; its iPXE script then boots the local disk.
        type: bool
        default: false
      system:
        description:
          - The Nix system of the host (its configuration's C(nixpkgs.hostPlatform.system)), such as V(aarch64-linux).
          - It boots the installer of that system (O(system) or one of O(installers)); a host whose system has no
            installer is refused before the server starts. Omitted, it boots the installer of O(system).
        type: str
  kernel:
    description: The installer's kernel. Required with O(state=started).
    type: path
  initrd:
    description: The installer's initrd. Required with O(state=started).
    type: path
  cmdline:
    description:
      - The installer's kernel command line (such as V(init=/nix/store/...-nixos-system/init loglevel=4)).
      - One line, without control characters (it goes into each host's iPXE script).
    type: str
    default: ''
  system:
    description: The Nix system that O(kernel), O(initrd) and O(cmdline) boot.
    type: str
    default: x86_64-linux
  installers:
    description:
      - Installers for other systems, so that one run holds, say, x86 and arm64 hosts; each host boots its own system's.
      - The installer module returns this list as RV(nixie.provision.installer#module:installers).
    type: list
    elements: dict
    default: []
    suboptions:
      system:
        description: The Nix system it boots, such as V(aarch64-linux).
        type: str
        required: true
      kernel:
        description: Its kernel.
        type: path
        required: true
      initrd:
        description: Its initrd.
        type: path
        required: true
      cmdline:
        description: Its kernel command line, one line.
        type: str
        default: ''
  ipxe_dir:
    description:
      - Directory holding the iPXE binaries C(undionly.kpxe) (BIOS), C(ipxe.efi) (UEFI x64), C(snponly.efi) and
        C(ipxe-arm64.efi); only these names are ever served. Debian's C(ipxe) package puts them in V(/usr/lib/ipxe).
    type: path
    default: /usr/lib/ipxe
  authorized_key:
    description:
      - The deployer's SSH public key, handed to each machine's agent after it phoned home with its one-time token,
        so the installer accepts SSH with this key and no password. Required with O(state=started).
      - OpenSSH public key lines, one per line, as a string (not a list).
    type: str
  startup_timeout:
    description: Seconds to wait for the server to bind its ports.
    type: int
    default: 30
"""

EXAMPLES = r"""
- name: Start the boot server for the machines in group nixie
  nixie.provision.server:
    run_dir: /var/tmp/nixie/run
    interface: eno1
    hosts:
      - name: nixie-01
        mac: bc:24:11:d0:28:34
      - name: nixie-02
        mac: bc:24:11:d0:28:35
        installed: true
    kernel: "{{ installer.kernel }}"
    initrd: "{{ installer.initrd }}"
    cmdline: "{{ installer.cmdline }}"
    authorized_key: "{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"
  delegate_to: localhost
  run_once: true

- name: Stop it, whatever happened
  nixie.provision.server:
    run_dir: /var/tmp/nixie/run
    state: stopped
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
running:
  description: Whether the server runs after the task.
  returned: always
  type: bool
  sample: true
pid:
  description: Process id of the server.
  returned: when running
  type: int
  sample: 4242
address:
  description: The address the server serves on.
  returned: when running
  type: str
  sample: fd5e:213::1
http_port:
  description: The HTTP port.
  returned: when running
  type: int
  sample: 8080
http_url:
  description: Base URL of the HTTP server, also used by M(nixie.provision.wait_for_agent).
  returned: when running
  type: str
  sample: http://[fd5e:213::1]:8080
status_url:
  description:
    - The live status page, with the run's status secret, for a browser on the controller. That secret opens the page,
      its event stream and the install logs only, never the controller's routes, so this URL may be printed in a job's
      output. The server's controller secret stays in O(run_dir)'s C(controller-secret).
  returned: when running
  type: str
  sample: http://10.0.0.2:8080/?secret=3Mq8Ww0q0B1vO5cWmCkT2F8b5uDk7k2m4dF1yzRmS8c
ipxe_binaries:
  description: The iPXE binaries found in O(ipxe_dir) and served.
  returned: when running
  type: list
  elements: str
  sample: [ipxe.efi, undionly.kpxe]
events_file:
  description: The JSON-lines file with every boot step of every machine.
  returned: when running
  type: str
  sample: /var/tmp/nixie/run/events.jsonl
log_file:
  description: The server's own log.
  returned: always
  type: str
  sample: /var/tmp/nixie/run/server.log
awaiting_phone_home:
  description:
    - The MACs holding an agent token that no phone-home has claimed yet - of the running server, or, when none runs,
      the ones a killed server of O(run_dir) handed out, which a server started again there accepts. Such a machine
      runs Nixie's installer, which refuses SSH logins until its agent phones home.
  returned: with O(state=status)
  type: list
  elements: str
  sample: ["52:54:00:aa:00:02"]
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError, require_library
from ansible_collections.nixie.provision.plugins.module_utils._netif import interface_address
from ansible_collections.nixie.provision.plugins.module_utils._bootclient import connect
from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract, daemon
from ansible_collections.nixie.provision.plugins.module_utils._bootd.runfiles import read_controller_secret, status_secret
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.tokens import read_outstanding


def _server_code():
    """The boot server's own code, loaded only to start it; raises MissingLibrary naming the first library it lacks.

    Loading aiohttp and tftpy takes about half a second here, which a status or stop call (the install role makes
    one per host) need not pay. The daemon is a fork of this process, so everything is loaded before it starts.
    """
    from ansible_collections.nixie.provision.plugins.module_utils._bootd import server  # pylint: disable=import-outside-toplevel
    from ansible_collections.nixie.provision.plugins.module_utils._bootd.io import http, tftp  # pylint: disable=import-outside-toplevel
    for name, error in (("aiohttp", http.AIOHTTP_IMPORT_ERROR), ("tftpy", tftp.TFTPY_IMPORT_ERROR)):
        require_library(name, error)
    return server


class ServerManager:
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.run_dir = os.path.abspath(self.params["run_dir"])

    def _config(self):
        params = self.params
        return {
            "run_dir": self.run_dir,
            "interface": params["interface"],
            "address": params["address"] or interface_address(params["interface"], params["address_family"]),
            "http_port": params["http_port"],
            "hosts": [{"name": h["name"], "mac": h["mac"], "installed": h["installed"], "system": h["system"]} for h in params["hosts"]],
            "kernel": os.path.abspath(params["kernel"]),
            "initrd": os.path.abspath(params["initrd"]),
            "cmdline": params["cmdline"],
            "system": params["system"],
            "installers": [dict(entry, kernel=os.path.abspath(entry["kernel"]), initrd=os.path.abspath(entry["initrd"]))
                           for entry in params["installers"]],
            "ipxe_dir": params["ipxe_dir"],
            "authorized_key": params["authorized_key"].strip(),
        }

    def _result(self, changed, state):
        result = {"changed": changed, "running": state is not None, "log_file": contract.run_file(self.run_dir, contract.LOG_FILE)}
        if state:
            result.update({key: state[key] for key in ("pid", "address", "http_port", "http_url", "ipxe_binaries", "events_file")})
            controller_secret = read_controller_secret(self.run_dir)
            if controller_secret:
                result["status_url"] = contract.status_url(state["http_url"], status_secret(controller_secret))
        return result

    def started(self):
        server = _server_code()
        config = self._config()
        server.validate_config(config)
        current = daemon.read_state(self.run_dir)
        if current and current.get("config_digest") == server.config_digest(config):
            return self._result(False, current)
        if self.module.check_mode:
            return self._result(True, current)
        if current:
            daemon.stop(self.run_dir)
        return self._result(True, server.start(config, timeout=self.params["startup_timeout"]))

    def stopped(self):
        running = daemon.running_pid(self.run_dir) is not None
        if running and not self.module.check_mode:
            daemon.stop(self.run_dir)
            return self._result(True, None)
        return self._result(running, daemon.read_state(self.run_dir) if self.module.check_mode else None)

    def status(self):
        state = daemon.read_state(self.run_dir)
        result = self._result(False, state)
        if state is not None:
            awaiting = connect(run_dir=self.run_dir).awaiting_phone_home()
        else:
            # A killed server's unclaimed tokens: their installers keep phoning home, and a server started again on
            # this run directory takes them.
            awaiting = sorted(read_outstanding(contract.run_file(self.run_dir, contract.TOKENS_FILE)))
        result["awaiting_phone_home"] = awaiting
        return result

    def run(self):
        return {"started": self.started, "stopped": self.stopped, "status": self.status}[self.params["state"]]()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["started", "stopped", "status"], default="started"),
            run_dir=dict(type="path", required=True),
            interface=dict(type="str"),
            address=dict(type="str"),
            address_family=dict(type="str", choices=["auto", "ipv4", "ipv6"], default="auto"),
            http_port=dict(type="int", default=8080),
            hosts=dict(type="list", elements="dict", options=dict(
                name=dict(type="str", required=True),
                mac=dict(type="str", required=True),
                installed=dict(type="bool", default=False),
                system=dict(type="str"),
            )),
            kernel=dict(type="path"),
            initrd=dict(type="path"),
            cmdline=dict(type="str", default=""),
            system=dict(type="str", default="x86_64-linux"),
            installers=dict(type="list", elements="dict", default=[], options=dict(
                system=dict(type="str", required=True),
                kernel=dict(type="path", required=True),
                initrd=dict(type="path", required=True),
                cmdline=dict(type="str", default=""),
            )),
            ipxe_dir=dict(type="path", default="/usr/lib/ipxe"),
            authorized_key=dict(type="str", no_log=False),
            startup_timeout=dict(type="int", default=30),
        ),
        required_if=[("state", "started", ("interface", "hosts", "kernel", "initrd", "authorized_key"))],
        supports_check_mode=True,
    )
    try:
        result = ServerManager(module).run()
    except (NixieError, ValueError) as exc:
        module.fail_json(msg=str(exc), **getattr(exc, "details", {}))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
