#!/usr/bin/python
# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: report
short_description: Write the run's report (the status page frozen) into the run directory
version_added: 0.2.0
author: Nixie developers (@nixie-provision)
description:
  - Writes C(report.json) and C(report.html) into O(run_dir) from the boot server's C(events.jsonl), with each host's
    final state, the time it spent in each state, its timeline, address, power, last error and install log, and the
    run's totals. The states are the status page's, from the same state machine.
  - Needs no running boot server, so it runs at the end of a run and from C(always:) after a failure. The HTML file is
    whole in itself and opens from disk.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Builds the report and returns it; writes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  run_dir:
    description: The run directory the boot server recorded its events in.
    type: path
    required: true
  hosts:
    description:
      - The run's hosts, each with its C(name), C(mac), and whether it was C(installed) before the run (then it is
        reported as skipped).
    type: list
    elements: dict
    required: true
  since:
    description:
      - Only events at or after this time (seconds since the epoch) count; the run directory keeps earlier runs' events.
      - Without it, every event in the file.
    type: float
seealso:
  - module: nixie.provision.server
"""

EXAMPLES = r"""
- name: Write the run's report
  nixie.provision.report:
    run_dir: "{{ nixie_run_dir }}"
    hosts:
      - name: nixie-01
        mac: "52:54:00:5e:00:01"
    since: "{{ nixie_started }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
json:
  description: The path of C(report.json).
  returned: always
  type: str
  sample: /var/lib/nixie/run/report.json
html:
  description: The path of C(report.html).
  returned: always
  type: str
  sample: /var/lib/nixie/run/report.html
states:
  description: Each host's final state, by name.
  returned: always
  type: dict
  sample: {"nixie-01": installed, "nixie-02": failed}
totals:
  description: Hosts per state, initrd bytes sent, and the seconds from the first event to the last.
  returned: always
  type: dict
  sample: {"hosts": 2, "states": {"installed": 2}, "initrd_bytes": 1048576, "seconds": 95.2}
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._report import build_report, report_hosts, write_report


def main():
    module = AnsibleModule(
        argument_spec=dict(
            run_dir=dict(type="path", required=True),
            hosts=dict(type="list", elements="dict", required=True),
            since=dict(type="float"),
        ),
        supports_check_mode=True,
    )
    run_dir = module.params["run_dir"]
    try:
        report = build_report(run_dir, report_hosts(module.params["hosts"]), time.time(), module.params["since"])
        if module.check_mode:
            paths = contract.run_file(run_dir, contract.REPORT_JSON), contract.run_file(run_dir, contract.REPORT_HTML)
        else:
            paths = write_report(run_dir, report)
    except NixieError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=not module.check_mode, json=paths[0], html=paths[1], totals=report["totals"],
                     states={row["host"]: row["state"] for row in report["hosts"]})


if __name__ == "__main__":
    main()
