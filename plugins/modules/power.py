#!/usr/bin/python
# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: power
short_description: Power a machine on, off or through a cycle, with a one-time boot device, through its BMC
version_added: 0.1.0
author: Nixie developers (@nixie-provision)
description:
  - Reads and sets a machine's power state through its BMC, over Redfish (O(driver=redfish)) or IPMI
    (O(driver=ipmi)), or switches it on with Wake-on-LAN (O(driver=wol), the default).
  - With O(boot_once), first sets a boot override for the next boot only (the network, UEFI HTTP boot or
    the disk), so that a machine whose disk comes first in its boot order boots Nixie's installer.
  - Idempotent. A machine already in the O(state) asked for is left alone, and an override the BMC
    already holds is not sent again. O(state=cycle) always acts, and powers on a machine that is off.
  - Waits, up to O(timeout) seconds, until the BMC reports the new power state, since BMCs apply
    changes seconds after they accept them.
  - Every failure names the BMC's address, with the Redfish HTTP status or the IPMI completion code
    when the BMC answered. The password appears in no message and no return value.
  - "Redfish: finds the ComputerSystem (O(system), or the only one), sets C(Boot.BootSourceOverrideTarget)
    (V(Pxe), V(UefiHttp) or V(Hdd)) with C(BootSourceOverrideEnabled=Once) and the firmware's
    C(BootSourceOverrideMode), then calls C(ComputerSystem.Reset) with a reset type from those the BMC
    lists in C(ResetType@Redfish.AllowableValues): V(On) (or V(ForceOn)), V(ForceOff), V(ForceRestart)
    (or V(PowerCycle))."
  - "IPMI: RMCP+ (IPMI 2.0 over LAN). Sets the boot flags (the network or the disk, next boot only, with
    the EFI flag for O(boot_mode=uefi)), then sends a chassis control command."
  - "Wake-on-LAN: sends magic packets as M(nixie.provision.wake) does. It can neither read the power state
    (reported as V(unknown)) nor power off, power-cycle or set a boot override: O(state=off),
    O(state=cycle) and O(boot_once) other than V(network) fail."
requirements:
  - sushy (for O(driver=redfish))
  - pyghmi (for O(driver=ipmi))
  - wakeonlan (for O(driver=wol))
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - nixie.provision.boot_server.secret
attributes:
  check_mode:
    support: full
    details: Reads the power state and the pending boot override, and reports what it would change.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  state:
    description:
      - V(on) and V(off) power the machine on or off (a hard power-off, as a BMC's ForceOff is).
      - V(cycle) resets a machine that is on and powers on one that is off.
      - V(boot) makes the machine boot now (from O(boot_once), if given) - V(cycle) through a BMC; with
        Wake-on-LAN, which cannot reset a machine, the magic packet of V(on). The provisioning flow uses it.
      - V(status) changes nothing, but sets O(boot_once) if given.
    type: str
    choices: ["on", "off", cycle, boot, status]
    default: status
  boot_once:
    description:
      - Boot device for the next boot only, set before the power action.
      - V(network) is PXE (Redfish V(Pxe), IPMI's network device), V(http) is UEFI HTTP boot (Redfish
        V(UefiHttp) only), V(disk) is the first disk (Redfish V(Hdd), IPMI's disk device).
      - V(none) clears an override still pending (Redfish C(BootSourceOverrideEnabled=Disabled), IPMI boot flags
        without their valid bit), such as one a machine that booted otherwise left behind.
    type: str
    choices: [network, http, disk, none]
  boot_mode:
    description:
      - Firmware mode of the one-time boot.
      - Redfish sends it as C(BootSourceOverrideMode) (V(UEFI) or V(Legacy)); when it is not set, the
        override keeps the mode the BMC reports. V(http) always boots in UEFI mode.
      - IPMI sets the EFI flag for V(uefi) only; when it is not set, the flag is clear, which most UEFI
        firmware ignores but some requires.
    type: str
    choices: [uefi, bios]
  driver:
    description: How the machine is powered.
    type: str
    choices: [wol, redfish, ipmi]
    default: wol
  address:
    description:
      - The BMC. For Redfish, a URL such as V(https://10.0.0.21) (a bare host means HTTPS); for IPMI, a
        host name or address.
      - Required for O(driver=redfish) and O(driver=ipmi).
    type: str
  port:
    description:
      - For Redfish, the BMC's TCP port (default the URL's, else 443). For IPMI, its UDP port (default
        623).
    type: int
  system:
    description:
      - The Redfish ComputerSystem, as a path (V(/redfish/v1/Systems/1)) or the last part of one (V(1)).
      - Without it, the BMC must have exactly one system; otherwise the module fails and lists them.
    type: str
  username:
    description: The BMC user. Required for O(driver=redfish) and O(driver=ipmi).
    type: str
  password:
    description:
      - The BMC user's password (for O(driver=redfish) and O(driver=ipmi)); from Ansible Vault, such as the
        variable C(nixie_bmc_password). One of O(password) and O(password_env) is needed for a BMC.
      - It appears in no output, at any verbosity.
    type: str
  password_env:
    description:
      - Without O(password), the name of the controller's environment variable holding it (an AWX credential
        injects one such variable into the job).
    type: str
  validate_certs:
    description:
      - Whether the BMC's TLS certificate is verified (Redfish). V(false) is for BMCs with self-signed
        certificates and no CA bundle to trust them by, and warns.
    type: bool
    default: true
  ca_path:
    description: A CA bundle (PEM file) or directory of CA certificates to verify the BMC's certificate by.
    type: path
  http_boot_uri:
    description:
      - For O(boot_once=http), the URL the firmware boots (Redfish C(Boot.HttpBootUri)), such as Nixie's
        iPXE binary.
      - Sent only to a BMC that has C(Boot.HttpBootUri); others (Dell iDRAC among them) get the override
        without it, with a warning, and the firmware takes the URL from DHCP.
    type: str
  timeout:
    description:
      - Seconds to wait for the BMC to report the new power state, and the longest a single request to
        the BMC may take.
    type: int
    default: 60
  mac:
    description: For O(driver=wol), the MAC address of the machine, in any common notation. Required there.
    type: str
  broadcast:
    description: For O(driver=wol), where the magic packets go (see M(nixie.provision.wake)).
    type: str
    default: 255.255.255.255
  wol_port:
    description: For O(driver=wol), the UDP port of the magic packets.
    type: int
    default: 9
  interface:
    description: For O(driver=wol), the interface or local address the magic packets leave from.
    type: str
  server_url:
    description:
      - The run's boot server (M(nixie.provision.server)'s C(http_url)), told for its status page what was done to the
        power of the host with O(mac) and the power state after. Best effort, never a failure; not in check mode.
      - Without it, the boot server running on this machine for O(run_dir), if any; without either, none is told.
    type: str
  run_dir:
    description: Without O(server_url), the run directory of the boot server running on the controller.
    type: path
seealso:
  - module: nixie.provision.wake
"""

EXAMPLES = r"""
- name: Boot a disk-first machine from the network once, through its Redfish BMC
  nixie.provision.power:
    driver: redfish
    address: https://10.0.0.21
    username: admin
    password: "{{ nixie_bmc_password }}"
    ca_path: /etc/nixie/bmc-ca.pem
    boot_once: network
    state: cycle
  delegate_to: localhost

- name: Boot Nixie's iPXE over UEFI HTTP on a machine with a self-signed BMC certificate
  nixie.provision.power:
    driver: redfish
    address: 10.0.0.21
    system: /redfish/v1/Systems/System.Embedded.1
    username: admin
    password: "{{ nixie_bmc_password }}"
    validate_certs: false
    boot_once: http
    http_boot_uri: http://10.0.0.1:8080/ipxe.efi
    state: "on"

- name: Power on a BIOS machine from the network through IPMI
  nixie.provision.power:
    driver: ipmi
    address: 10.0.0.22
    username: admin
    password: "{{ nixie_bmc_password }}"
    boot_once: network
    boot_mode: bios
    state: "on"

- name: Read the power state and the pending boot override
  nixie.provision.power:
    driver: ipmi
    address: 10.0.0.22
    username: admin
    password: "{{ nixie_bmc_password }}"
  register: power

- name: Power on by Wake-on-LAN
  nixie.provision.power:
    mac: bc:24:11:d0:28:34
    interface: eno1
    state: "on"
"""

RETURN = r"""
driver:
  description: The driver used.
  returned: always
  type: str
  sample: redfish
address:
  description: The BMC, as the messages name it (for Wake-on-LAN, where the packets went).
  returned: always
  type: str
  sample: https://10.0.0.21
system:
  description: The Redfish ComputerSystem used.
  returned: when O(driver=redfish)
  type: str
  sample: /redfish/v1/Systems/1
power_state_before:
  description:
    - The power state the BMC reported before the module acted; V(unknown) for Wake-on-LAN.
    - A transitional state (V(powering on)) is awaited first, so this is V(on) or V(off) for a BMC.
  returned: always
  type: str
  sample: "off"
power_state_after:
  description: The power state the BMC reported at the end; in check mode, the one it would reach.
  returned: always
  type: str
  sample: "on"
boot_server_told:
  description: Whether a boot server took the report of what was done (for its status page).
  returned: always
  type: bool
  sample: true
boot_override:
  description:
    - The pending boot override as the BMC reports it at the end (in check mode, the one that would be
      set), or null when there is none.
    - Some BMCs report an override as C(once=false) although it was set for one boot (the sushy-tools
      emulator always reads C(Continuous)).
  returned: always
  type: dict
  contains:
    device:
      description: V(network), V(http), V(disk), or V(other) for a device this module does not set.
      type: str
    once:
      description: Whether the override is for the next boot only.
      type: bool
    mode:
      description: V(uefi) or V(bios), or null when the BMC reports none.
      type: str
    target:
      description: The BMC's own name for the device (Redfish C(BootSourceOverrideTarget), IPMI's selector).
      type: str
    http_boot_uri:
      description: The Redfish C(HttpBootUri), if any.
      type: str
  sample: {"device": "network", "once": true, "mode": "uefi", "target": "Pxe", "http_boot_uri": null}
actions:
  description: What was done (in check mode, what would be), in order; empty when nothing changed.
  returned: always
  type: list
  elements: str
  sample: ["boot once from network (Pxe)", "power cycle (ForceRestart)"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nixie.provision.plugins.module_utils import _wol
from ansible_collections.nixie.provision.plugins.module_utils._bootclient import connect as connect_boot_server
from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError, require_library
from ansible_collections.nixie.provision.plugins.module_utils._power import base, connect, control, ipmi, redfish, settings

LIBRARIES = {
    "wol": ("wakeonlan", _wol.WAKEONLAN_IMPORT_ERROR),
    "redfish": ("sushy", redfish.SUSHY_IMPORT_ERROR),
    "ipmi": ("pyghmi", ipmi.PYGHMI_IMPORT_ERROR),
}
BMC_FIELDS = ("address", "username")
SETTINGS = ("driver", "address", "port", "system", "username", "password_env", "validate_certs", "ca_path")


def open_driver(params: dict) -> base.PowerDriver:
    """The driver ``params`` name, connected (and for a BMC logged in)."""
    chosen = {name: params[name] for name in SETTINGS if params[name] is not None}
    password = settings.password(chosen, params["password"])
    return connect.open_driver(chosen, password, params["timeout"], params["mac"],
                               params["broadcast"], params["wol_port"], params["interface"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=list(base.POWER_STATES), default="status"),
            boot_once=dict(type="str", choices=list(base.BOOT_DEVICES) + [base.NO_OVERRIDE]),
            boot_mode=dict(type="str", choices=list(base.BOOT_MODES)),
            driver=dict(type="str", choices=sorted(LIBRARIES), default="wol"),
            address=dict(type="str"),
            port=dict(type="int"),
            system=dict(type="str"),
            username=dict(type="str"),
            password=dict(type="str", no_log=True),
            password_env=dict(type="str", no_log=False),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            http_boot_uri=dict(type="str"),
            timeout=dict(type="int", default=60),
            mac=dict(type="str"),
            broadcast=dict(type="str", default="255.255.255.255"),
            wol_port=dict(type="int", default=9),
            interface=dict(type="str"),
            server_url=dict(type="str"),
            run_dir=dict(type="path"),
            server_secret=dict(type="str", no_log=True),
        ),
        required_if=[
            ("driver", "redfish", BMC_FIELDS),
            ("driver", "ipmi", BMC_FIELDS),
            ("driver", "wol", ("mac",)),
        ],
        supports_check_mode=True,
    )
    params = module.params
    for name in ("port", "wol_port"):
        if params[name] is not None and not 0 < params[name] < 65536:
            module.fail_json(msg="%s: must be from 1 to 65535, got %d" % (name, params[name]))
    if params["timeout"] < 1:
        module.fail_json(msg="timeout: must be at least 1 second, got %d" % params["timeout"])
    driver = None
    try:
        require_library(*LIBRARIES[params["driver"]])
        driver = open_driver(params)
        result = control.run(driver, params["state"], params["boot_once"], params["boot_mode"],
                             params["http_boot_uri"], params["timeout"], check_mode=module.check_mode)
    except NixieError as exc:
        module.fail_json(msg=str(exc), driver=params["driver"], **exc.details)
    finally:
        if driver is not None:
            driver.close()
    for warning in driver.warnings:
        module.warn(warning)
    if params["driver"] == "redfish":
        result["system"] = driver.system
    result["boot_server_told"] = not module.check_mode and tell_boot_server(params, result["power_state_after"])
    module.exit_json(**result)


def tell_boot_server(params, power_state):
    """Tell the run's boot server, if any, what was done to the host's power, for its status page; best effort."""
    if not params["mac"] or not (params["server_url"] or params["run_dir"]):
        return False
    try:
        client = connect_boot_server(params["server_url"], params["run_dir"], params["server_secret"])
        if client is None:
            return False
        client.progress(params["mac"], contract.STEP_POWER, action=params["state"], power_state=power_state, driver=params["driver"])
    except (NixieError, ValueError):
        return False
    return True


if __name__ == "__main__":
    main()
