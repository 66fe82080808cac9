#!/usr/bin/python
# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: wake
short_description: Power on a machine with Wake-on-LAN
version_added: 0.1.0
author: Nixie developers (@nixie-provision)
description:
  - Sends Wake-on-LAN magic packets (six bytes V(0xFF), then the MAC address sixteen times) as UDP datagrams.
  - Sends O(count) packets, O(interval) seconds apart, because a NIC settling into its low-power state can miss one.
  - Fails, naming the address, when a packet cannot be sent, rather than reporting a wake-up that never left the machine.
  - Runs where the task runs; for machines on the controller's network, delegate it to V(localhost).
requirements:
  - wakeonlan
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports the packet it would send, and sends nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  mac:
    description: MAC address of the machine to wake, in any common notation (colons, hyphens, dots or bare hex).
    type: str
    required: true
  broadcast:
    description:
      - Address the packets are sent to. The default limited broadcast reaches the network of the source address.
      - Use the subnet's broadcast address (such as V(192.168.1.255)) to reach another routed subnet, or an IPv6
        address such as V(ff02::1) together with O(interface) on an IPv6-only network.
    type: str
    default: 255.255.255.255
  port:
    description: UDP port; NICs listen for the magic packet on any port, 9 (discard) and 7 (echo) are customary.
    type: int
    default: 9
  interface:
    description:
      - The network interface (such as V(eno1)) or local address to send from, which picks the network the packets
        leave on. Without it, the routing table decides.
    type: str
  count:
    description: How many packets to send.
    type: int
    default: 3
  interval:
    description: Seconds between two packets.
    type: float
    default: 0.1
"""

EXAMPLES = r"""
- name: Power on the machines to provision
  nixie.provision.wake:
    mac: "{{ nixie_mac }}"
    interface: eno1
  delegate_to: localhost

- name: Wake a machine on another subnet through its directed broadcast
  nixie.provision.wake:
    mac: bc:24:11:d0:28:34
    broadcast: 10.20.30.255
    port: 7

- name: Wake a machine on an IPv6-only network
  nixie.provision.wake:
    mac: bc:24:11:d0:28:34
    broadcast: ff02::1
    interface: eno1
"""

RETURN = r"""
mac:
  description: The MAC address woken, normalised.
  returned: always
  type: str
  sample: bc:24:11:d0:28:34
destination:
  description: Where the packets went (an IPv6 link-local or multicast address carries its interface scope).
  returned: always
  type: str
  sample: 255.255.255.255
port:
  description: The UDP port the packets went to.
  returned: always
  type: int
  sample: 9
source_address:
  description: The local address the packets were sent from, when O(interface) chose one.
  returned: always
  type: str
  sample: 10.0.0.1
count:
  description: How many packets were to be sent.
  returned: always
  type: int
  sample: 3
packets_sent:
  description: How many packets were sent; 0 in check mode.
  returned: always
  type: int
  sample: 3
magic_packet:
  description: The UDP payload, as hex.
  returned: always
  type: str
  sample: >-
    ffffffffffffbc2411d02834bc2411d02834bc2411d02834bc2411d02834bc2411d02834bc2411d02834bc2411d02834bc2411d02834
    bc2411d02834bc2411d02834bc2411d02834bc2411d02834bc2411d02834bc2411d02834bc2411d02834bc2411d02834
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.nixie.provision.plugins.module_utils import _wol


def main():
    module = AnsibleModule(
        argument_spec=dict(
            mac=dict(type="str", required=True),
            broadcast=dict(type="str", default="255.255.255.255"),
            port=dict(type="int", default=9),
            interface=dict(type="str"),
            count=dict(type="int", default=3),
            interval=dict(type="float", default=0.1),
        ),
        supports_check_mode=True,
    )
    if _wol.WAKEONLAN_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("wakeonlan"), exception=_wol.WAKEONLAN_IMPORT_ERROR)
    params = module.params
    if not 0 < params["port"] < 65536:
        module.fail_json(msg="port: must be from 1 to 65535, got %d" % params["port"])
    if params["count"] < 1 or params["interval"] < 0:
        module.fail_json(msg="count must be at least 1 and interval not negative")
    try:
        result = _wol.send_wake(
            params["mac"], params["broadcast"], params["port"], params["interface"],
            params["count"], params["interval"], check_mode=module.check_mode,
        )
    except _wol.WakeError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
