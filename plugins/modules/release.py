#!/usr/bin/python
# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release
short_description: Tell Nixie's boot server that the controller is done with a host
version_added: 0.2.0
author: Nixie developers (@nixie-provision)
description:
  - Releases the host with MAC address O(mac) from the run's boot server (M(nixie.provision.server)). The server
    ends by itself once every host it was started for, and that was not installed then, is released, so that a run
    whose hosts go through the flow under the C(free) strategy, or in batches, needs no single task to stop it.
  - A boot server that no longer runs (stopped, killed) has nothing to release; the task then reports so and does not
    fail.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - nixie.provision.boot_server
attributes:
  check_mode:
    support: full
    details: Reports whether a server would be told, and tells it nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  mac:
    description: The host's boot NIC MAC address.
    type: str
    required: true
seealso:
  - module: nixie.provision.server
"""

EXAMPLES = r"""
- name: Release the host from the boot server
  nixie.provision.release:
    mac: "{{ nixie_mac }}"
    server_url: "{{ nixie_server.http_url }}"
  delegate_to: localhost
"""

RETURN = r"""
released:
  description: Whether a running boot server took the release.
  returned: always
  type: bool
  sample: true
remaining:
  description: The hosts the server still serves; it ends once this is empty.
  returned: when released
  type: list
  elements: str
  sample: [nixie-02]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nixie.provision.plugins.module_utils._bootclient import HostNotServed, connect
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            mac=dict(type="str", required=True),
            server_url=dict(type="str"),
            run_dir=dict(type="path"),
        ),
        required_one_of=[("server_url", "run_dir")],
        supports_check_mode=True,
    )
    client = connect(module.params["server_url"], module.params["run_dir"])
    if client is None:
        module.exit_json(changed=False, released=False, msg="no boot server runs for %s: nothing to release" % module.params["run_dir"])
    if module.check_mode:
        module.exit_json(changed=True, released=False, msg="check mode: %s would be told" % client.base_url)
    try:
        answer = client.release(module.params["mac"])
    except HostNotServed as exc:
        module.fail_json(msg=str(exc), **exc.details)
    except NixieError as exc:
        # The server may be gone already (its last host released, or killed): releasing is then moot.
        module.exit_json(changed=False, released=False, msg=str(exc))
    except ValueError as exc:
        module.fail_json(msg="mac: %s" % exc)
    module.exit_json(changed=True, released=True, remaining=answer["remaining"])


if __name__ == "__main__":
    main()
